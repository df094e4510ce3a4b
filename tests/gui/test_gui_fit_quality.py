"""Fit quality in the GUI (real widgets, offscreen, the shipped default model): the
results panel and the template view show fit chi2 and a clear POOR FIT for a spectrum
from another world (sigmas marked), the sub-model comparison shows region_mismatch for
the metal-poor sample labelled by S1, and the batch table marks poor_fit sigmas."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from spemr_engine import api

from other_world import SAMPLES, other_world_file, samples


@pytest.fixture
def default_model(qtbot, window):
    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        window.load_model(str(api.default_model_path()))
    return window.state.model


def _infer(qtbot, window):
    with qtbot.waitSignal(window.inference_finished, timeout=60000):
        window.run_inference()
    return window.state.current_result()


def test_poor_fit_is_shown_in_results_and_template_views(qtbot, window, default_model, open_file, tmp_path):
    open_file(other_world_file(tmp_path))
    result = _infer(qtbot, window)
    assert result.usable and bool(result.fit.poor_fit[0])
    panel = window.results_panel
    assert panel.fit_label.isVisible()
    text = panel.fit_label.text()
    assert text.startswith("POOR FIT") and f"{result.fit.fit_chi2[0]:.2f}" in text
    assert f"{result.fit.sigma_inflation[0]:.2f}" in text
    sigma_cell = panel.table.item(0, 2)
    assert sigma_cell.text().endswith("⚠") and "poor_fit" in sigma_cell.toolTip()
    assert sigma_cell.background().color().red() > 200
    # the table's sigma is the inflated one, as in the catalog row
    row = api.analyse_file(window.state.current.path, default_model).rows()[0]
    assert panel.rows[0].sigma == pytest.approx(row["Teff[K]_err"], rel=1e-6)
    assert panel.context()["flags"].startswith("poor_fit")

    view = window.template_view
    with qtbot.waitSignal(window.templates_found, timeout=60000):
        window.tabs.setCurrentWidget(view)
    assert view.fit_label.isVisible() and "POOR FIT" in view.fit_label.text()
    assert f"{result.fit.fit_chi2[0]:.2f}" in view.fit_label.text()


def test_good_fit_says_so(qtbot, window, default_model, open_file):
    open_file(SAMPLES / samples()["giant"]["filename"])
    result = _infer(qtbot, window)
    assert not result.fit.poor_fit[0]
    text = window.results_panel.fit_label.text()
    assert text.startswith("good fit") and "POOR" not in text
    assert not window.results_panel.table.item(0, 2).text().endswith("⚠")
    assert not window.comparison_view.mismatch_label.text()


def test_region_mismatch_in_the_comparison_view(qtbot, window, default_model, open_file):
    open_file(SAMPLES / samples()["metal-poor"]["filename"])
    result = _infer(qtbot, window)
    mismatched = list(result.fit.region_mismatch[0])
    assert "S1" in mismatched, "the metal-poor sample's [Fe/H] ~ -1.75 is fused from S1 ([Fe/H] >= -1)"
    view = window.comparison_view
    window.tabs.setCurrentWidget(view)
    assert view.mismatch_label.isVisible()
    text = view.mismatch_label.text()
    assert "REGION MISMATCH" in text and "S1" in text and "σ outside" in text
    assert "REGION MISMATCH" in view.kiel_plot.titleLabel.text
    feh = result.prediction.labels.index("FeH")
    view.label_list.setCurrentRow(feh)
    assert "REGION MISMATCH" in view.label_plot.titleLabel.text
    assert "REGION MISMATCH" in window.results_panel.mismatch_label.text()


def test_batch_table_marks_poor_fit_sigmas(qtbot):
    from spemr_gui.views.batch import POOR_FIT_BRUSH, CatalogModel

    model = CatalogModel()
    model.replace(
        ["Teff[K]", "Teff[K]_err", "fit_chi2", "region_mismatch", "flags"],
        [
            {
                "Teff[K]": 4800.0,
                "Teff[K]_err": 520.0,
                "fit_chi2": 56.0,
                "region_mismatch": "",
                "flags": "poor_fit",
                "sigma_inflation": 3.2,
            },
            {
                "Teff[K]": 5500.0,
                "Teff[K]_err": 90.0,
                "fit_chi2": 1.1,
                "region_mismatch": "S1",
                "flags": "region_mismatch",
            },
            {"Teff[K]": 5000.0, "Teff[K]_err": 80.0, "fit_chi2": 1.0, "region_mismatch": "", "flags": ""},
        ],
    )
    err = model.data(model.index(0, 1), Qt.BackgroundRole)
    assert err.color().getRgb()[:3] == POOR_FIT_BRUSH
    assert "inflated" in model.data(model.index(0, 1), Qt.ToolTipRole)
    assert model.data(model.index(0, 0), Qt.BackgroundRole).color().getRgb()[:3] != POOR_FIT_BRUSH
    assert model.data(model.index(1, 3), Qt.BackgroundRole) is not None
    assert model.data(model.index(2, 1), Qt.BackgroundRole) is None
