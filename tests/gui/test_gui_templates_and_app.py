"""A shipped sample with the shipped default model: inference, the best-fit template
view (nearest templates from the bundle's library, stepping with T), plus the ways in:
command-line arguments and drag and drop; and closing mid-batch asks first."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from spemr_engine import api
from spemr_engine.config import assets_dir

SAMPLES = sorted((assets_dir() / "samples").glob("med-*.fits*"))


@pytest.fixture
def sample():
    if not SAMPLES:
        pytest.fail("assets/samples has no shipped sample files")
    return next((p for p in SAMPLES if "GIANT" in p.name), SAMPLES[0])


@pytest.fixture
def default_model(qtbot, window):
    path = api.default_model_path()
    if not path.exists():
        pytest.fail(f"no shipped default model at {path}")
    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        window.load_model(str(path))
    return window.state.model


def test_sample_with_default_model_and_template_view(qtbot, window, default_model, open_file, sample):
    from spemr_gui.engine_calls import find_templates

    open_file(sample)
    with qtbot.waitSignal(window.inference_finished, timeout=60000):
        window.run_inference()
    result = window.state.current_result()
    assert result.usable
    assert "SYNTHETIC" in window.results_panel.banner.text()
    view = window.template_view
    with qtbot.waitSignal(window.templates_found, timeout=60000):
        window.tabs.setCurrentWidget(view)
    from spemr_engine.model.templates import TemplateLibrary

    library = TemplateLibrary.load(default_model.template_library_path)
    expected = library.nearest(result.prediction.mean[0], k=len(view.matches.indices))
    assert view.matches.indices == [int(i) for i in expected]
    wave, flux = library.spectrum(expected[0])
    x, y = view.spectrum_plots[0].overlay_item.getData()
    blue = slice(0, x.size)
    np.testing.assert_allclose(y, flux[blue], rtol=1e-6)
    residual_x, residual_y = view.residual_items[0].getData()
    data = np.where(result.spectra.mask[0][blue], np.nan, result.spectra.flux[0][blue])
    np.testing.assert_allclose(residual_y, data - flux[blue], rtol=1e-5, equal_nan=True)
    assert view.table.item(0, 2).text().strip() == f"{library.labels(expected[0])[0]:.0f}"
    # the model spectrum at the fused labels, the one fit_chi2 is measured against
    from spemr_engine.model.fit_quality import fit_chi2
    from spemr_engine.synth.model_spectra import model_spectra
    from spemr_gui.engine_calls import _in_order
    from spemr_engine.config import LABELS

    model_flux = model_spectra(_in_order(result.prediction.mean[0], result.prediction.labels, LABELS)[None, :])[0]
    mx, my = view.model_items[0].getData()
    np.testing.assert_allclose(my, model_flux[blue], rtol=1e-6)
    chi2 = fit_chi2(result.spectra.flux[:1], result.spectra.ivar[:1], model_flux[None, :])[0]
    assert float(result.fit.fit_chi2[0]) == pytest.approx(chi2, rel=1e-5)
    assert "dashed orange" in view.info_label.text()
    view.setFocus()
    qtbot.keyClick(view, Qt.Key_T)
    assert window.state.template_rank == 1
    assert "template 2 of" in view.info_label.text()
    qtbot.keyClick(view, Qt.Key_T, Qt.ShiftModifier)
    assert window.state.template_rank == 0
    assert find_templates(default_model, result.prediction, 3).indices == [int(i) for i in expected[:3]]


def test_files_from_the_command_line(qtbot, settings, sample):
    from spemr_gui.app import build_parser, create_window

    settings.infer_on_open = False
    args = build_parser().parse_args([str(sample), "--normalised", "--model", str(api.default_model_path())])
    window = create_window(args, settings)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: len(window.state.files) == 1, timeout=30000)
        assert window.state.current.name == sample.name
        assert window.spectrum_view.normalised
        qtbot.waitUntil(lambda: window.state.current_prepared() is not None, timeout=60000)
        x, _ = window.spectrum_view.arm_plots[0].curve_item.getData()
        assert x[0] == pytest.approx(window.state.current_prepared().wave[0])
    finally:
        window.shutdown()


def test_drag_and_drop_opens_files(qtbot, window, sample):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(sample))])
    event = QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(window.file_opened, timeout=30000):
        window.dropEvent(event)
    assert window.state.current.name == sample.name


def test_closing_mid_batch_asks(qtbot, window, monkeypatch, tmp_path, sample, random_bundle):
    view = window.batch_view
    view.add_inputs([str(sample)])
    view.model_path.setText(str(random_bundle))
    view.output.setText(str(tmp_path / "cat.csv"))
    view.workers.setValue(0)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a) or QMessageBox.No)
    view.start()
    assert view.is_running()
    assert window.confirm_close() is False and len(asked) == 1
    view.cancel()
    qtbot.waitUntil(lambda: not view.is_running(), timeout=60000)
    assert window.confirm_close() is True and len(asked) == 1
