"""Issue 12, "what users of such tools expect": the full FITS header of every HDU,
legends and units, a display-only smoothing control, and the training wizard's ETA,
source-dependent fields and a really quick tiny preset; through real widgets."""
from __future__ import annotations

import threading

import pytest

from PySide6.QtCore import Qt


def test_fits_header_tab_lists_every_hdu_with_all_cards(qtbot, window, open_file, mrs_files,
                                                        monkeypatch):
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
    assert threads and gui_thread not in threads   # read in a worker
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

    from spemr_engine.isochrones import read_isochrones
    from spemr_engine.report import default_isochrones
    from spemr_gui.views.batch import _catalog_name

    view = window.batch_view
    teff, logg = _catalog_name("Teff"), _catalog_name("Logg")
    columns = ["obsid", teff, f"{teff}_err", logg, f"{logg}_err"]
    rows = [{"obsid": 1, teff: 5000.0, f"{teff}_err": 80.0, logg: 3.0, f"{logg}_err": 0.1},
            {"obsid": 2, teff: 5800.0, f"{teff}_err": 120.0, logg: 4.4, f"{logg}_err": 0.2},
            {"obsid": 3, teff: None, f"{teff}_err": None, logg: None, f"{logg}_err": None}]
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
    view.set_isochrones(isochrones)   # replaced, not added twice
    legend = [label.text for _sample, label in view.kiel_legend.items]
    assert sum(text.startswith("isochrone ") for text in legend) == len(isochrones)
    assert f"isochrone {isochrones[0].name}" in legend
