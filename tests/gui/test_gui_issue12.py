"""Defects a new user met (issue 12), each driven through the real widgets. Every test
here fails on the code before its fix. Shipped sample files only (no model needed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextDocument

from spemr_engine.config import assets_dir
from spemr_engine.progress import LABELLING, CatalogProgress, TrainingProgress, from_synthesis

SAMPLES = sorted((assets_dir() / "samples").glob("*.fits*"))


@pytest.fixture
def sample():
    return next(p for p in SAMPLES if "GIANT" in p.name)


def _prepared(qtbot, window, open_file, path):
    open_file(path)
    qtbot.waitUntil(lambda: window.state.current_prepared() is not None, timeout=60000)
    return window.spectrum_view


# ----------------------------------------------------------------- item 15
def test_files_are_listed_in_the_order_asked_for(qtbot, window, monkeypatch):
    """Reads that end in reverse order still land in command-line order."""
    from spemr_gui import engine_calls

    paths = [str(p) for p in SAMPLES]
    real_read = engine_calls.read_file

    def slow_first(path):  # the first file asked for is read last
        time.sleep(0.15 * (len(paths) - paths.index(str(path))))
        return real_read(path)

    monkeypatch.setattr(engine_calls, "read_file", slow_first)
    window.runner.pool.setMaxThreadCount(len(paths))
    window.open_files(paths)
    qtbot.waitUntil(lambda: len(window.state.files) == len(paths), timeout=60000)
    assert [f.name for f in window.state.files] == [Path(p).name for p in paths]
    listed = [window.file_list.topLevelItem(i).text(0) for i in range(window.file_list.topLevelItemCount())]
    assert listed == [Path(p).name for p in paths]


# ------------------------------------------------------------------ item 7
def test_failed_opens_stay_in_the_log(qtbot, window, open_file, tmp_path, sample):
    bad = tmp_path / "med-00000-BROKEN_sp01-001.fits"
    bad.write_bytes(b"not a FITS file at all")
    with qtbot.waitSignal(window.open_failed, timeout=30000):
        window.open_files([str(bad)])
    open_file(sample)  # a later success overwrites the status bar...
    window.status("something else")
    log = window.log_view
    assert log.rowCount() == 1  # ...but the failure is still listed
    assert log.item(0, 1).text() == bad.name
    assert log.item(0, 2).text()
    assert "Log (1)" in window.side_tabs.tabText(window.log_index)


# ------------------------------------------------------------------ item 8
def test_command_line_model_is_not_saved(qtbot, settings, tmp_path, sample):
    from spemr_gui.app import build_parser, create_window

    settings.infer_on_open = False
    args = build_parser().parse_args([str(sample), "--model", str(tmp_path / "no-such-model")])
    window = create_window(args, settings)
    qtbot.addWidget(window)
    try:
        with qtbot.waitSignal(window.model_failed, timeout=60000):
            window.show()
        assert settings.model_path == ""  # the next launch still uses the default model
    finally:
        window.shutdown()


def test_wizard_does_not_make_its_model_active_by_default(qtbot, window):
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    assert not wizard.evaluation_page.make_active.isChecked()
    wizard.reject()


# ------------------------------------------------------------------ item 2
def test_wizard_summary_keeps_region_descriptions_with_angle_brackets(qtbot, window, monkeypatch):
    from spemr_engine.training import refset as refset_module
    from spemr_engine.config import LABELS, default_regions
    from spemr_gui.views.wizard import open_wizard

    class FakeRefset:
        labels = np.column_stack(
            [
                np.linspace(3800, 7000, 50)
                if name == "Teff"
                else np.linspace(0.5, 4.5, 50)
                if name == "Logg"
                else np.linspace(-2, 0.4, 50)
                for name in LABELS
            ]
        )
        label_names = list(LABELS)
        star_id = [str(i) for i in range(50)]
        synthetic = True
        source = "test <set>"

        def __len__(self):
            return 50

    monkeypatch.setattr(refset_module.ReferenceSet, "open", staticmethod(lambda path: FakeRefset()))
    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    wizard.refset_path = "fake"
    page = wizard.summary_page
    with qtbot.waitSignal(page.summary_shown, timeout=30000):
        page.initializePage()  # the set is read in a worker, not on the GUI thread
    document = QTextDocument()
    document.setHtml(page.text.text())
    shown = document.toPlainText()
    for region in default_regions():
        assert f"{region.name} ({region.description}): {page.region_counts[region.name]}" in shown
    assert "test <set>" in shown
    wizard.reject()


# ------------------------------------------------------------------ item 9
def test_reference_set_progress_is_a_bar_and_a_sentence(qtbot, window):
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    page = wizard.source_page
    page._on_progress(  # synth's own dict, as the job process converts it
        from_synthesis(
            {
                "stars_done": 120,
                "stars_total": 500,
                "spectra_kept": 313,
                "spectra_rejected": 2,
                "elapsed_s": 4.068258952000178,
            }
        )
    )
    assert (page.progress_bar.value(), page.progress_bar.maximum()) == (120, 500)
    text = page.status.text()
    assert "120 of 500 stars" in text and "313 spectra kept" in text and "4 s elapsed" in text
    assert "_" not in text and "4.068" not in text
    wizard.reject()


# ----------------------------------------------------------------- item 11
def test_line_labels_sit_above_the_data_and_apart(qtbot, window, open_file, sample):
    view = _prepared(qtbot, window, open_file, sample)
    window.resize(1500, 900)
    qtbot.wait(50)
    for arm_plot in view.arm_plots:
        assert arm_plot.label_items, "the deepest lines are labelled"
        _x, flux = arm_plot.curve_item.getData()
        _xr, (bottom, top) = arm_plot.plot.vb.viewRange()
        data_top = float(np.nanmax(np.where(arm_plot.curve.mask, np.nan, flux)))
        scene_rects = []
        for label in arm_plot.label_items:
            assert label.zValue() > arm_plot.curve_item.zValue()  # never under the spectrum
            rect = label.mapRectToView(label.boundingRect())
            assert rect.bottom() >= data_top - 1e-9 or rect.top() >= data_top - 1e-9
            scene_rects.append(label.sceneBoundingRect())
        scene_rects.sort(key=lambda r: r.left())
        for left, right in zip(scene_rects, scene_rects[1:]):
            assert not left.intersects(right), "line labels overlap each other"


# ----------------------------------------------------------------- item 12
def test_rv_box_readout_and_axis_are_not_stale(qtbot, window, open_file, sample):
    view = _prepared(qtbot, window, open_file, sample)
    view.rv_edit.setText("12.5")
    with qtbot.waitSignal(window.prepared, timeout=60000):
        qtbot.keyClick(view.rv_edit, Qt.Key_Return)
    assert view.rv_edit.text() == "12.5" and "given" in view.rv_label.text()
    with qtbot.waitSignal(window.prepared, timeout=60000):
        qtbot.mouseClick(view.measure_button, Qt.LeftButton)
    assert view.rv_edit.text() == ""  # no override is in force any more
    assert "ccf" in view.rv_label.text()

    view.cursor_label.setText(view.readout(view.arm_plots[0], 5000.0))
    assert "flux =" in view.cursor_label.text()
    qtbot.keyClick(view, Qt.Key_BracketRight)  # next spectrum
    assert "flux =" not in view.cursor_label.text()

    view.set_normalised(True)
    axis = view.arm_plots[0].plot.getAxis("bottom").labelText
    assert "rest" in axis  # as the readout says
    view.set_normalised(False)
    assert "observed" in view.arm_plots[0].plot.getAxis("bottom").labelText


# ----------------------------------------------------------------- item 13
def test_markers_at_an_unreliable_rv_say_so(qtbot, window, open_file, sample):
    view = _prepared(qtbot, window, open_file, sample)
    assert not any(p.markers_unreliable for p in view.arm_plots)
    spectra = window.state.current_prepared()
    spectra.quality.reason[0] = "RV cross-correlation peak 0.04 < 0.2 (RV unreliable)"
    spectra.quality.rv_unreliable[0] = True
    spectra.quality.ccf_peak[0] = 0.04
    view.refresh()
    assert all(p.markers_unreliable for p in view.arm_plots)
    assert "RV unreliable" in view.status_label.text() and "0.04" in view.status_label.text()
    pen = view.arm_plots[0].marker_named.opts["pen"]
    assert pen.style() == Qt.DotLine


# ------------------------------------------------------------- items 3 and 4
def _fake_batch(monkeypatch, view, tmp_path, sample, wait_for):
    """A batch run whose files are all in flight already: it ends after wait_for()."""
    from types import SimpleNamespace

    from spemr_gui.views import batch

    def fake_run_catalog(progress=None, cancel=None, pause=None, **options):
        progress(CatalogProgress(LABELLING, files_done=0, files_total=1))  # running
        deadline = time.monotonic() + 20
        while not wait_for(cancel) and time.monotonic() < deadline:
            time.sleep(0.01)
        progress(CatalogProgress(LABELLING, files_done=1, files_total=1, spectra_done=1))
        return SimpleNamespace(lines=lambda: ["1 of 1 files labelled"], output=None, model_trained_on="synthetic")

    monkeypatch.setattr(batch, "_run_catalog", fake_run_catalog)
    view.add_inputs([str(sample)])
    view.model_path.setText(str(tmp_path / "model"))
    view.output.setText(str(tmp_path / "cat.csv"))


def test_batch_pause_on_a_run_that_ends_anyway(qtbot, window, monkeypatch, tmp_path, sample):
    view = window.batch_view
    _fake_batch(monkeypatch, view, tmp_path, sample, lambda cancel: view.batch_state.pause_event.is_set())
    view.start()
    qtbot.waitUntil(lambda: view.batch_state.progress is not None, timeout=30000)
    with qtbot.waitSignal(view.run_finished, timeout=30000):
        qtbot.mouseClick(view.pause_button, Qt.LeftButton)
    assert view.pause_button.text() == "Pause" and not view.pause_button.isChecked()
    assert not view.batch_state.pause_event.is_set()
    assert "1 of 1 files labelled" in view.progress_label.text()


def test_batch_cancel_after_everything_was_done_reports_the_finished_run(qtbot, window, monkeypatch, tmp_path, sample):
    view = window.batch_view
    _fake_batch(monkeypatch, view, tmp_path, sample, lambda cancel: cancel())
    view.start()
    qtbot.waitUntil(lambda: view.batch_state.progress is not None, timeout=30000)  # the run is under way
    with qtbot.waitSignal(view.run_finished, timeout=30000):
        view.cancel()
    assert "cancelled" not in view.progress_label.text()
    assert "1 of 1 files labelled" in view.progress_label.text()


# ------------------------------------------------------------- items 5 and 6
SUMMARY = [
    "/some/rather/long/folder/name/for/the/output/catalog_of_the_night.csv: 12 rows from 12 files "
    "(12 labelled now, 0 resumed)",
    "flags: bad_pixels: 1, low_snr: 2, no_good_pixels: 1, poor_fit: 3, rv_unreliable: 2",
    "time: 41.2 s, 0.3 spectra/s",
]


def test_batch_buttons_stay_put_and_texts_are_not_clipped(qtbot, window):
    view = window.batch_view
    window.tabs.setCurrentWidget(view)
    window.resize(1500, 900)
    qtbot.wait(50)
    before = view.pause_button.mapTo(view, view.pause_button.rect().topLeft())
    view.progress_label.setText("\n".join(SUMMARY))
    view.caveat.setText("⚠ the model was trained on SYNTHETIC data: this catalog is not survey-grade")
    qtbot.wait(50)
    after = view.pause_button.mapTo(view, view.pause_button.rect().topLeft())
    assert after == before  # item 5: clicks land where aimed
    label = view.progress_label
    assert label.wordWrap() and label.heightForWidth(label.width()) <= label.height()
    assert label.text() == "\n".join(SUMMARY)
    box = view.overwrite  # item 6: the checkbox keeps its ")"
    assert box.sizeHint().width() <= box.width()


def test_batch_table_labels_first_flags_readable_double_click_opens(qtbot, window, sample):
    from spemr_engine.config import label_infos

    view = window.batch_view
    window.tabs.setCurrentWidget(view)
    teff = next(i.catalog for i in label_infos() if i.name == "Teff")
    row = {
        "obsid": 1,
        "filename": sample.name,
        "ra": 1.0,
        "dec": 2.0,
        "snr_blue": 50.0,
        teff: 4800.0,
        f"{teff}_err": 90.0,
        "flags": "rv_unreliable|no_good_pixels",
        "source": str(sample),
        "spectrum": "coadd",
    }
    view._add_rows([row])
    columns = view.model.columns
    assert columns[:3] == ["filename", teff, f"{teff}_err"]  # labels before metadata
    flags = columns.index("flags")
    assert view.table.columnWidth(flags) >= view.table.fontMetrics().horizontalAdvance(row["flags"])
    index = view.proxy.index(0, 0)
    qtbot.waitUntil(lambda: view.table.visualRect(index).isValid() and view.table.isVisible())
    rect = view.table.visualRect(index)
    with qtbot.waitSignal(window.file_opened, timeout=30000):
        qtbot.mouseClick(view.table.viewport(), Qt.LeftButton, pos=rect.center())  # as a hand does:
        qtbot.mouseDClick(view.table.viewport(), Qt.LeftButton, pos=rect.center())  # press, then double
    assert window.tabs.currentIndex() == 0
    assert window.state.current.name == sample.name
    assert window.state.current_pair_obj.label == "coadd"


# ------------------------------------------------------------------ item 1
def test_zero_flux_is_no_data_in_every_view(qtbot, window, open_file, shared_mrs_files):
    """med-58408 COADD_B has flux exactly 0 at 5210.1-5210.6 A (with ivar > 0): the raw
    view shows a gap inside a shaded band, the normalised view an interpolated,
    shaded stretch: no fake line down to 0 in either."""
    path = next(p for p in shared_mrs_files if "58408" in p.name)
    view = _prepared(qtbot, window, open_file, path)
    blue = view.arm_plots[0]
    arm = window.state.current_pair_obj.blue
    zero = (arm.flux == 0) & (arm.wave > 5200) & (arm.wave < 5220)
    assert zero.any()
    x, y = blue.curve_item.getData()
    assert np.isnan(y[zero]).all()  # a gap, not a line to 0
    x0, x1 = blue.mask_item.opts["x0"], blue.mask_item.opts["x1"]
    assert all(((x0 <= w) & (w <= x1)).any() for w in arm.wave[zero])  # shaded
    assert blue.y_range[0] > 0  # 0 does not set the scale
    view.set_normalised(True)
    spectra = window.state.current_prepared()
    rest = arm.wave[zero] / (1 + float(spectra.rv[0]) / 299792.458)
    x, y = blue.curve_item.getData()
    near = np.abs(x[:, None] - rest[None, :]).argmin(axis=0)  # nearest grid pixels
    assert blue.curve.mask[near].all() and (y[near] > 0.3).all()


# ----------------------------------------------------------------- item 10
def test_training_plots_legends_outside_and_y_labels(qtbot, window):
    from spemr_engine.config import LABELS
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    page = wizard.training_page
    wizard.resize(1100, 750)
    wizard.show()
    for job, epochs in (("m0 SP", 4), ("m0 CA", 3)):
        for epoch in range(1, epochs + 1):
            page.on_progress(
                TrainingProgress(
                    stage="pretrain",
                    member=0,
                    network=job.split()[1],
                    region=None,
                    epoch=epoch,
                    n_epochs=epochs,
                    step=4,
                    n_steps=4,
                    train_loss=2.0 / epoch,
                    val_loss=2.2 / epoch,
                    val_mae={name: 0.1 * (k + 1) / epoch for k, name in enumerate(LABELS)},
                )
            )
    qtbot.wait(50)
    for plot in (page.loss_plot, page.mae_plot):
        assert plot.getAxis("left").labelText  # y axes say what they show
    for legend, plot in ((page.loss_legend, page.loss_plot), (page.mae_legend, page.mae_plot)):
        assert legend.items  # a legend with entries...
        assert not legend.sceneBoundingRect().intersects(plot.vb.sceneBoundingRect())  # ...outside
    assert len(page.mae_legend.items) == len(LABELS)
    wizard.reject()


# ----------------------------------------------------------------- item 14
def test_sigma_against_snr_is_shown_and_an_inversion_flagged(qtbot, window, open_file, random_bundle, shared_mrs_files):
    path = next(p for p in shared_mrs_files if "58408" in p.name)
    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        window.load_model(str(random_bundle))
    opened = open_file(path)
    for pair in (0, 1):  # the coadd, then one exposure
        window.state.select(0, pair)
        with qtbot.waitSignal(window.inference_finished, timeout=120000):
            window.run_inference()
    panel = window.results_panel
    assert panel.snr_label.isVisible() or not panel.isVisible()
    assert "S/N" in panel.snr_label.text() and "coadd" in panel.snr_label.text()
    coadd, exposure = opened.results[0], opened.results[1]
    assert opened.pairs[0].snr_blue > opened.pairs[1].snr_blue and opened.pairs[0].snr_red > opened.pairs[1].snr_red
    teff = coadd.prediction.labels.index("Teff")
    coadd.prediction.sigma[0, teff], exposure.prediction.sigma[0, teff] = 172.0, 139.0  # as seen
    panel.refresh()
    assert panel.sigma_inverted and "not a photon-noise error bar" in panel.snr_label.text()
    assert "±172 K" in panel.snr_label.text() and "±139 K" in panel.snr_label.text()
    exposure.prediction.sigma[0, teff] = 200.0
    panel.refresh()
    assert not panel.sigma_inverted
