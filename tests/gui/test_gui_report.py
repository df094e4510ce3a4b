"""The Batch tab's Report… button (issue 12, "the paper's diagnostics as plots"): enabled
once a catalog exists, writes `spemr report` in a worker (the GUI thread keeps ticking)
and says where the file went; a bad catalog is one line in the panel."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from spemr_engine.cli import main
from spemr_engine.config import assets_dir

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, random_bundle):
    """Two shipped samples, coadd + exposures, labelled by the tiny random model."""
    samples = sorted(str(p) for p in (assets_dir() / "samples").glob("med-*.fits.gz"))[:2]
    out = tmp_path_factory.mktemp("gui-report") / "cat.csv"
    assert main(["predict", *samples, "--exposure", "all", "--model", str(random_bundle), "-o", str(out)]) == 0
    return out


def test_report_button_writes_the_report_in_a_worker(qtbot, window, catalog, tmp_path, monkeypatch):
    view = window.batch_view
    window.tabs.setCurrentWidget(view)
    view.output.setText(str(tmp_path / "not-yet.csv"))
    assert not view.report_button.isEnabled()  # no catalog yet
    view.output.setText(str(catalog))
    assert view.report_button.isEnabled()

    target = tmp_path / "report.html"
    monkeypatch.setattr(
        "spemr_gui.views.batch.QFileDialog.getSaveFileName", lambda *args, **kwargs: (str(target), "HTML (*.html)")
    )
    with qtbot.waitSignal(view.report_written, timeout=60000) as written:
        qtbot.mouseClick(view.report_button, Qt.LeftButton)
        # the click returned at once: the work is in a worker, the button waits for it
        assert view.batch_state.reporting and not view.report_button.isEnabled()
    assert written.args[0] == [str(target)]
    text = target.read_text()
    for section in ("header", "kiel", "uncertainty", "quality"):
        assert f'<section id="{section}">' in text
    assert f"report written to {target}" in view.progress_label.text()
    assert view.report_button.isEnabled()


def test_report_of_a_bad_catalog_is_one_line(qtbot, window, tmp_path):
    view = window.batch_view
    bad = tmp_path / "bad.csv"
    bad.write_text("obsid,filename\n1,a.fits\n")
    view.output.setText(str(bad))
    with qtbot.waitSignal(view.report_written, timeout=30000) as written:
        view.make_report(tmp_path / "r.html")
    assert written.args[0] == []
    message = view.progress_label.text()
    assert message.startswith("report: bad.csv: not a spemr catalog") and "\n" not in message
    assert not (tmp_path / "r.html").exists()


def test_sigma_against_snr_plot_in_the_tab(window, catalog):
    """The tab's own uncertainty plot: every spectrum's sigma, and for a finished catalog
    the scatter of each star's repeat exposures."""
    from spemr_gui.catalog_table import read_catalog

    view = window.batch_view
    columns, rows = read_catalog(catalog)
    view.model.replace(columns, rows)
    view._plot_rows()
    x, _ = view.sigma_points.getData()
    assert len(x) == sum(1 for row in rows if row.get("Teff[K]_err") is not None and row.get("snr_blue"))
    assert len(view.repeat_curve.getData()[0] or []) == 0  # streaming: points only
    view._plot_rows(finished=True)
    rx, ry = view.repeat_curve.getData()
    assert len(rx) >= 1 and all(value > 0 for value in ry)
