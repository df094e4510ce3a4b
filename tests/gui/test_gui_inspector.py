"""The spectrum inspector driven through real widgets (offscreen): open a real LAMOST
file, switch exposures with the keyboard, zoom/reset, export data and figure, refuse a
bad file with one line, remember recent files."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt


def test_open_real_file_lists_pairs_and_plots_raw_flux(qtbot, window, open_file, shared_mrs_files):
    path = next(p for p in shared_mrs_files if "58025" in p.name)
    opened = open_file(path)
    assert opened.name == path.name
    top = window.file_list.topLevelItem(0)
    assert top.childCount() == len(opened.pairs) == 5
    assert top.child(0).text(0) == "coadd"
    assert top.child(0).text(1) == f"{opened.pairs[0].snr_blue:.1f}"
    blue = window.spectrum_view.arm_plots[0]
    x, y = blue.curve_item.getData()
    flux = opened.pairs[0].blue.flux  # flux exactly 0 is no data: a gap (issue 12, item 1)
    assert np.array_equal(y, np.where(flux == 0, np.nan, flux), equal_nan=True)
    assert "coadd" in window.spectrum_view.title_label.text()
    meta = dict(
        window.metadata_view.item(i, 0).text()
        and (window.metadata_view.item(i, 0).text(), window.metadata_view.item(i, 1).text())
        for i in range(window.metadata_view.rowCount())
    )
    assert meta["obsid"] == str(opened.mrs.meta["obsid"])


def test_keyboard_switches_exposures_and_zoom_resets(qtbot, window, open_file, mrs_files):
    opened = open_file(mrs_files[0])
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key_BracketRight)
    assert window.state.current_pair == 1
    assert opened.pairs[1].label in window.spectrum_view.title_label.text()
    x, y = window.spectrum_view.arm_plots[1].curve_item.getData()
    assert np.array_equal(y, opened.pairs[1].red.flux)
    qtbot.keyClick(window, Qt.Key_BracketLeft)
    assert window.state.current_pair == 0
    view = window.spectrum_view
    before = view.x_ranges()[0]
    view.zoom(0.5)
    zoomed = view.x_ranges()[0]
    assert (zoomed[1] - zoomed[0]) < 0.6 * (before[1] - before[0])
    view.pan(0.1)
    view.reset_view()
    assert view.x_ranges()[0] == pytest.approx(before, rel=1e-3)
    # the side list follows the state, and selecting there drives the state
    window.file_list.setCurrentItem(window.file_list.topLevelItem(0).child(2))
    assert window.state.current_pair == 2


def test_export_plotted_data_and_figure(qtbot, window, open_file, mrs_files, tmp_path):
    opened = open_file(mrs_files[0])
    csv_path = window.export_data(tmp_path / "plotted.csv")
    lines = csv_path.read_text().splitlines()
    pair = opened.pairs[0]
    assert lines[0] == "arm,frame,wavelength_angstrom,flux,error,masked"
    assert len(lines) == 1 + pair.blue.wave.size + pair.red.wave.size
    first = lines[1].split(",")
    assert first[0] == "blue" and float(first[2]) == pytest.approx(pair.blue.wave[0], abs=1e-3)
    png = window.export_figure(tmp_path / "figure.png")
    svg = window.export_figure(tmp_path / "figure.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()[:2000]


def test_bad_file_gives_one_line_and_app_goes_on(qtbot, window, tmp_path, shared_lrs_file):
    junk = tmp_path / "not-a-spectrum.fits"
    junk.write_text("hello")
    for path in (junk, shared_lrs_file):
        with qtbot.waitSignal(window.open_failed, timeout=20000) as blocker:
            window.open_files([str(path)])
        message = blocker.args[0]
        assert message.startswith(path.name) and "\n" not in message
        assert window.last_error == message
    assert window.state.files == []


def test_recent_files_remembered(qtbot, window, open_file, mrs_files, settings):
    open_file(mrs_files[0])
    open_file(mrs_files[1])
    recent = settings.recent_files()
    assert recent[0].endswith(mrs_files[1].name)
    assert recent[1].endswith(mrs_files[0].name)
    window._fill_recent_menu()
    texts = [a.text() for a in window.recent_menu.actions()]
    assert texts[0] == recent[0]
    assert len(window.state.files) == 2
