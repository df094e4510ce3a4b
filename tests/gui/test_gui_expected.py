"""Issue 12, "what users of such tools expect": the full FITS header of every HDU,
legends and units, a display-only smoothing control, and the training wizard's ETA,
source-dependent fields and a really quick tiny preset; through real widgets."""

from __future__ import annotations

import threading

import pytest

from PySide6.QtCore import Qt

from spemr_engine.progress import TrainingProgress


def test_fits_header_tab_lists_every_hdu_with_all_cards(qtbot, window, open_file, mrs_files, monkeypatch):
    from astropy.io import fits

    from spemr_gui import engine_calls

    gui_thread = threading.get_ident()
    threads = []
    real = engine_calls.read_headers

    def spy(path):
        threads.append(threading.get_ident())
        return real(path)

    monkeypatch.setattr(engine_calls, "read_headers", spy)
    view = window.fits_header_view
    with qtbot.waitSignal(view.headers_loaded, timeout=20000):
        opened = open_file(mrs_files[0])
    assert threads and gui_thread not in threads  # read in a worker
    with fits.open(opened.path) as hdul:
        expected = [(hdu.header.get("EXTNAME", ""), len(hdu.header)) for hdu in hdul]
        assert view.hdu_list.count() == len(hdul)
        view.hdu_list.setCurrentRow(1)
        text = view.text.toPlainText()
        lines = text.splitlines()
        assert lines[-1] == "END" and len(lines) == expected[1][1] + 1
        assert lines[0].startswith("XTENSION= 'BINTABLE'")
        assert expected[1][0] in view.hdu_list.item(1).text()
        # every card of the chosen HDU, not a selection of metadata
        for card in hdul[1].header.cards:
            assert str(card) in text
    assert view.text.isReadOnly()
    assert view.text.textInteractionFlags() & Qt.TextSelectableByMouse
    view.find_edit.setText("TTYPE1")
    assert view.find_next(from_start=True)
    assert view.text.textCursor().selectedText() == "TTYPE1"
    view.find_edit.setText("NO-SUCH-KEYWORD-HERE")
    assert not view.find_next(from_start=True)


def test_spectrum_legend_and_flux_units(qtbot, window, open_file, mrs_files, tmp_path):
    """A legend under the plots names the masked bands and the line markers (saying when
    the RV placing them is unreliable); the flux axis says the file's unit, or that
    LAMOST MRS flux is relative when the file states none."""
    from astropy.io import fits

    view = window.spectrum_view
    texts = view.legend_texts()
    assert "masked / no data" in texts and "1σ error" in texts
    assert any(text.startswith("spectral line") for text in texts)
    opened = open_file(mrs_files[0])
    assert opened.flux_unit is None
    for arm_plot in view.arm_plots:
        assert "relative" in arm_plot.plot.getAxis("left").labelText
    view.set_normalised(True)
    assert view.arm_plots[0].plot.getAxis("left").labelText == "normalised flux (continuum = 1)"
    assert "spectral line (rest frame)" in view.legend_texts()
    view.set_normalised(False)
    # a file that states its unit: the axis says it
    stated = tmp_path / "med-58000-UNIT_sp01-001.fits"
    with fits.open(opened.path) as hdul:
        for hdu in hdul[1:]:
            names = [str(hdu.header.get(f"TTYPE{i}", "")).strip() for i in range(1, hdu.header["TFIELDS"] + 1)]
            hdu.header[f"TUNIT{names.index('FLUX') + 1}"] = "1e-17 erg/s/cm2/Angstrom"
        hdul.writeto(stated)
    opened = open_file(stated)
    assert opened.flux_unit == "1e-17 erg/s/cm2/Angstrom"
    assert view.arm_plots[0].plot.getAxis("left").labelText == "flux (1e-17 erg/s/cm2/Angstrom)"


def test_marker_legend_says_when_the_rv_is_unreliable():
    from spemr_gui.views.arm_plot import marker_legend

    assert marker_legend(True, False)[0] == "spectral line (RV unreliable)"
    assert marker_legend(False, False)[0] == "spectral line (at the measured RV)"


def test_batch_kiel_error_bars_and_isochrone_legend(window):
    import numpy as np

    from spemr_engine.batch.isochrones import read_isochrones
    from spemr_engine.batch.report import default_isochrones
    from spemr_gui.views.batch import _catalog_name

    view = window.batch_view
    teff, logg = _catalog_name("Teff"), _catalog_name("Logg")
    columns = ["obsid", teff, f"{teff}_err", logg, f"{logg}_err"]
    rows = [
        {"obsid": 1, teff: 5000.0, f"{teff}_err": 80.0, logg: 3.0, f"{logg}_err": 0.1},
        {"obsid": 2, teff: 5800.0, f"{teff}_err": 120.0, logg: 4.4, f"{logg}_err": 0.2},
        {"obsid": 3, teff: None, f"{teff}_err": None, logg: None, f"{logg}_err": None},
    ]
    view.model.replace(columns, rows)
    view._plot_rows()
    opts = view.error_bars.opts
    assert np.allclose(opts["x"], [5000, 5800]) and np.allclose(opts["y"], [3.0, 4.4])
    assert np.allclose(opts["width"], [160, 240]) and np.allclose(opts["height"], [0.2, 0.4])
    legend = [label.text for _sample, label in view.kiel_legend.items]
    assert "±1σ (Teff, log g)" in legend and "spectra (colour: [Fe/H])" in legend
    if not default_isochrones().is_file():
        pytest.skip("no shared isochrones")
    isochrones = read_isochrones(default_isochrones())
    view.set_isochrones(isochrones)
    view.set_isochrones(isochrones)  # replaced, not added twice
    legend = [label.text for _sample, label in view.kiel_legend.items]
    assert sum(text.startswith("isochrone ") for text in legend) == len(isochrones)
    assert f"isochrone {isochrones[0].name}" in legend


def test_smoothing_is_for_display_only(qtbot, window, open_file, mrs_files, tmp_path):
    import numpy as np

    from spemr_gui.plotdata import raw_curves, smooth_curve

    opened = open_file(mrs_files[0])
    view = window.spectrum_view
    pair = opened.pairs[0]
    blue_flux = pair.blue.flux.copy()
    before = window.export_data(tmp_path / "before.csv").read_text()
    _x, raw_y = view.arm_plots[0].curve_item.getData()
    assert not view.smooth_width.isEnabled()
    assert "display only" in view.smooth_kind.toolTip() and "model" in view.smooth_kind.toolTip()
    view.zoom(0.5)
    zoomed = view.x_ranges()
    view.set_smoothing("box", 5)
    assert view.smooth_width.isEnabled()
    _x, box_y = view.arm_plots[0].curve_item.getData()
    expected = smooth_curve(raw_curves(pair)[0], "box", 5).flux
    assert np.array_equal(box_y, expected, equal_nan=True)
    good = np.isfinite(raw_y) & np.isfinite(box_y)
    # smoother: the pixel-to-pixel scatter drops
    assert np.std(np.diff(box_y[good], 2)) < 0.7 * np.std(np.diff(raw_y[good], 2))
    assert view.x_ranges() == zoomed  # the zoom is kept
    view.set_smoothing("Gaussian", 3)
    _x, gauss_y = view.arm_plots[0].curve_item.getData()
    assert np.array_equal(gauss_y, smooth_curve(raw_curves(pair)[0], "Gaussian", 3).flux, equal_nan=True)
    assert "smoothed: Gaussian 3 px" in view.readout(view.arm_plots[0], float(pair.blue.wave[100]))
    # never the model input, nor the data: the file's arrays and the export are unchanged
    assert np.array_equal(pair.blue.flux, blue_flux)
    assert window.export_data(tmp_path / "after.csv").read_text() == before
    view.set_smoothing("none")
    _x, y = view.arm_plots[0].curve_item.getData()
    assert np.array_equal(y, raw_y, equal_nan=True)


def test_smoothing_skips_masked_pixels_and_propagates_errors():
    import numpy as np

    from spemr_gui.plotdata import ArmCurve, smooth_curve

    rng = np.random.default_rng(1)
    flux = 1 + 0.1 * rng.standard_normal(400)
    mask = np.zeros(400, bool)
    mask[200:210] = True
    flux[200:210] = 1e6  # masked garbage must not leak into neighbours
    curve = ArmCurve("blue", np.arange(400.0), flux, np.full(400, 0.1), mask, "observed")
    box = smooth_curve(curve, "box", 9)
    assert np.isnan(box.flux[200:210]).all()
    assert np.nanmax(np.abs(box.flux - 1)) < 0.2
    assert np.allclose(box.error[20:180], 0.1 / 3)


def test_wizard_source_page_disables_fields_that_do_not_apply(qtbot, window):
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    page = wizard.source_page

    def enabled():
        return {key for key, widget in page.fields.items() if widget.isEnabled()}

    assert enabled() == {"n_stars", "seed", "output", "existing"}  # synthetic
    assert not page.form.labelForField(page.fields["catalog"]).isEnabled()
    page.buttons["crossmatch"].setChecked(True)
    assert enabled() == {"source_dir", "catalog", "output", "existing"}
    assert not page.n_stars.isEnabled() and page.catalog.isEnabled()
    page.buttons["published"].setChecked(True)
    assert enabled() == {"source_dir", "output", "existing"}
    page.buttons["open"].setChecked(True)
    assert enabled() == {"existing"} and not page.prepare_button.isEnabled()
    page.buttons["synthetic"].setChecked(True)
    assert page.prepare_button.isEnabled()


def test_tiny_preset_is_a_quick_trial_and_the_others_keep_the_recipe(qtbot, window):
    from spemr_engine.config import training_recipe
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    config, recipe = wizard.config_page, training_recipe()
    config.preset.setCurrentText("tiny")
    assert (config.epochs.value(), config.finetune_epochs.value()) == (3, 1)
    for name in ("paper", "small"):
        config.preset.setCurrentText(name)
        assert (config.epochs.value(), config.finetune_epochs.value()) == (recipe.epochs, recipe.finetune_epochs)
    assert (recipe.epochs, recipe.finetune_epochs) == (30, 10)


def test_training_page_shows_an_eta(qtbot, window):
    from spemr_gui.eta import TrainingEta
    from spemr_gui.views.wizard import eta_for, open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    page = wizard.training_page
    now = [100.0]
    # tiny: 2 members x 2 networks; 4 regions; 3 pre-training epochs, 1 fine-tuning epoch
    plan = eta_for({"architecture": "tiny", "members": None, "epochs": 3, "finetune_epochs": 1})
    assert plan.total == {"pretrain": 12, "finetune": 16}
    page.training_state.eta = TrainingEta(2, 2, 4, 3, 1, clock=lambda: now[0])

    def event(stage, epoch, step=None):
        return TrainingProgress(
            stage=stage,
            member=0,
            network="SP",
            region="S1" if stage == "finetune" else None,
            epoch=epoch,
            n_epochs=3 if stage == "pretrain" else 1,
            step=4 if step is None else step,
            n_steps=4,
            train_loss=1.0,
            val_loss=1.0 if step is None else None,
        )

    page.on_progress(event("pretrain", 1, step=0))
    assert "estimating" in page.eta_label.text()
    now[0] += 5
    page.on_progress(event("pretrain", 1, step=2))  # half an epoch in 5 s: 10 s per epoch
    assert "about 4:35 left" in page.eta_label.text()  # 11.5 + 16 epochs x 10 s
    now[0] += 5
    page.on_progress(event("pretrain", 1))  # epoch finished after 10 s
    assert "elapsed 0:10" in page.eta_label.text() and "about 4:30 left" in page.eta_label.text()
    now[0] += 10
    page.on_progress(event("pretrain", 2))
    now[0] += 10
    page.on_progress(event("pretrain", 3))
    now[0] += 2
    page.on_progress(event("finetune", 1))  # fine-tuning epochs are cheaper: 2 s
    # 9 pre-training epochs x 10 s + 15 fine-tuning epochs x 2 s = 2:00
    assert "about 2:00 left" in page.eta_label.text()


def test_model_spectrum_over_the_data_in_the_normalised_view(qtbot, window, open_file, mrs_files):
    """After inference, the normalised view draws the model spectrum at the fused labels
    (what fit chi2 compares with) over the data, with a legend entry; not over raw flux."""
    import numpy as np

    from spemr_engine import api
    from spemr_gui.views.spectrum import MODEL_LEGEND

    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        window.load_model(str(api.default_model_path()))
    open_file(mrs_files[0])
    view = window.spectrum_view
    view.set_normalised(True)
    with qtbot.waitSignal(window.inference_finished, timeout=60000):
        window.run_inference()
    result = window.state.current_result()
    assert result.fit is not None and result.fit.model_flux is not None
    x, y = view.arm_plots[0].overlay_item.getData()
    blue = slice(0, len(x))
    assert np.allclose(y, np.asarray(result.fit.model_flux[0], dtype=float)[blue])
    assert np.allclose(x, np.asarray(result.spectra.wave, dtype=float)[blue])
    assert MODEL_LEGEND in view.legend_texts()
    view.set_normalised(False)
    x, _y = view.arm_plots[0].overlay_item.getData()
    assert x is None or len(x) == 0
    assert MODEL_LEGEND not in view.legend_texts()


def test_the_error_band_covers_flux_plus_minus_one_sigma(qtbot, window, open_file, mrs_files):
    """The 1-sigma band is one closed outline (BandItem) between flux - sigma and flux + sigma
    of the shown arm; an arm without errors shows no band."""
    import numpy as np
    from PySide6.QtCore import QPointF

    from spemr_gui.plotdata import raw_curves

    opened = open_file(mrs_files[0])
    arm_plot = window.spectrum_view.arm_plots[0]
    curve = raw_curves(opened.pairs[0])[0]
    good = np.flatnonzero(np.isfinite(curve.error) & (curve.error > 0) & ~curve.mask & np.isfinite(curve.flux))
    path = arm_plot.band_item.path()
    assert path.boundingRect().left() == pytest.approx(curve.wave[0])
    assert path.boundingRect().right() == pytest.approx(curve.wave[-1])
    for i in good[:: max(len(good) // 7, 1)][1:-1]:
        x, y, e = float(curve.wave[i]), float(curve.flux[i]), float(curve.error[i])
        assert path.contains(QPointF(x, y))
        assert not path.contains(QPointF(x, y + 3 * e)) and not path.contains(QPointF(x, y - 3 * e))
    arm_plot.set_curve(type(curve)(**{**vars(curve), "error": np.full_like(curve.flux, np.nan)}))
    assert arm_plot.band_item.path().isEmpty()


def test_garbage_is_collected_on_the_gui_thread_only(qtbot):
    """The app turns automatic collection off (a worker thread collecting Qt wrappers can
    deadlock) and collects on a timer in the GUI thread instead: cycles still go away."""
    import gc
    import weakref

    from spemr_gui.app import collect_garbage_on_the_gui_thread

    collector = collect_garbage_on_the_gui_thread()
    try:
        assert not gc.isenabled() and collector.timer.isActive()

        class Node:
            pass

        for _ in range(3):  # enough garbage to cross the generation-0 threshold
            cycles = [Node() for _ in range(gc.get_threshold()[0] + 10)]
            for node in cycles:
                node.me = node
            watched = weakref.ref(cycles[0])
            del cycles, node
        qtbot.waitUntil(lambda: watched() is None, timeout=5000)
    finally:
        collector.timer.stop()
        gc.enable()
