"""Fused SPEMR inference in the GUI (worker thread, offscreen widgets): the table shows
exactly what the engine computes for the same input; the caveat banner is there for a
random/synthetic model; an unusable spectrum says why; cancel works; the sub-model
comparison and Kiel views show the same prediction."""

from __future__ import annotations

import numpy as np
import pytest

from spemr_engine import api
from spemr_gui.results import format_value


@pytest.fixture
def loaded(qtbot, window, random_bundle):
    with qtbot.waitSignal(window.model_loaded, timeout=30000):
        window.load_model(str(random_bundle))
    return window


def _infer(qtbot, window, timeout=60000):
    with qtbot.waitSignal(window.inference_finished, timeout=timeout):
        window.run_inference()
    return window.state.current_result()


def test_table_equals_engine_for_same_input(qtbot, loaded, open_file, shared_mrs_files):
    window = loaded
    path = next(p for p in shared_mrs_files if "58025" in p.name)
    opened = open_file(path)
    qtbot.keyClick(window, "]")  # an exposure, not the coadd
    assert window.state.current_pair == 1
    result = _infer(qtbot, window)
    expected = api.analyse_file(path, model=window.state.model, exposure=opened.pairs[1].label)
    rows = window.results_panel.rows
    assert [r.label for r in rows] == list(expected.prediction.labels)
    np.testing.assert_allclose([r.value for r in rows], expected.prediction.mean[0], rtol=1e-6)
    np.testing.assert_allclose([r.sigma for r in rows], expected.prediction.sigma[0], rtol=1e-6)
    winners = [expected.prediction.submodels[w] for w in expected.prediction.winner[0]]
    assert [r.winner for r in rows] == winners
    table = window.results_panel.table
    assert table.rowCount() == 16
    assert table.item(0, 1).text() == format_value(rows[0].value, rows[0].unit)
    assert table.item(2, 4).text() == winners[2]
    assert result.spectra.extname_blue[0] == opened.pairs[1].extname_blue
    banner = window.results_panel.banner
    assert banner.isVisible() and "RANDOM" in banner.text()
    assert "not calibrated on held-out spectra" in window.results_panel.message.text()  # random bundle
    # copy and export carry the same numbers
    text = window.results_panel.copy_to_clipboard()
    assert text.splitlines()[1].split("\t")[1] == str(rows[0].value)


def test_unusable_spectrum_says_why(qtbot, loaded, open_file, shared_mrs_files):
    window = loaded
    open_file(next(p for p in shared_mrs_files if "58268" in p.name))  # S/N ~ 0
    result = _infer(qtbot, window)
    assert not result.usable
    message = window.results_panel.message.text()
    assert message.startswith("Unusable spectrum:") and result.reason in message
    assert window.results_panel.table.rowCount() == 0


def test_cancel_inference_releases_the_ui(qtbot, loaded, open_file, mrs_files):
    window = loaded
    open_file(mrs_files[0])
    with qtbot.waitSignal(window.inference_cancelled, timeout=5000):
        window.run_inference()
        window.cancel_inference()
    assert not window.results_panel.busy.isVisible()
    assert window.results_panel.run_button.isEnabled()
    assert "cancelled" in window.results_panel.message.text()
    window.runner.wait_all(30000)
    assert window.state.current_result() is None  # a cancelled result is never applied


def test_comparison_and_kiel_show_the_prediction(qtbot, loaded, open_file, mrs_files):
    window = loaded
    open_file(mrs_files[0])
    result = _infer(qtbot, window)
    view = window.comparison_view
    window.tabs.setCurrentWidget(view)
    view.label_list.setCurrentRow(2)  # [Fe/H]
    prediction = result.prediction
    dots = [item for item in view.point_items if item.__class__.__name__ == "ScatterPlotItem"][-1]
    x, y = dots.getData()
    np.testing.assert_allclose(y, prediction.sub_mean[0, :, 2])
    assert list(x) == list(range(len(prediction.submodels)))
    chosen = prediction.submodels[prediction.winner[0, 2]]
    assert f"from <b>{chosen}</b>" in view.summary.text()
    star = [item for item in view.kiel_items if item.__class__.__name__ == "ScatterPlotItem"][0]
    sx, sy = star.getData()
    assert sx[0] == pytest.approx(prediction.mean[0, 0]) and sy[0] == pytest.approx(prediction.mean[0, 1])
    assert view.kiel_plot.titleLabel.text.startswith("Kiel: star in")


def test_rv_override_reruns_preprocessing(qtbot, loaded, open_file, mrs_files):
    window = loaded
    open_file(mrs_files[0])
    window.spectrum_view.rv_edit.setText("12.5")
    with qtbot.waitSignal(window.inference_finished, timeout=60000):
        window.spectrum_view._apply_rv()
    result = window.state.current_result()
    assert result.spectra.rv[0] == pytest.approx(12.5)
    assert result.spectra.rv_source[0] == "given"
    assert "12.50 km/s (given)" in window.spectrum_view.rv_label.text()
