"""The Qt-free controller in the views (issue 13) and the training leftovers of issue 12,
driven through the real widgets: the wizard reads reference sets in a worker, its tiny
preset is the CLI's, fields that don't apply are disabled, hidden tabs redraw when
shown, and views ask before the app closes through the window's close checks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from refset_testdata import make_refset

from spemr_engine.progress import TrainingProgress


@pytest.fixture
def wizard(qtbot, window):
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    yield wizard
    wizard.reject()


@pytest.fixture
def refset_opens(monkeypatch):
    """The threads ReferenceSet.open ran on (the real open, recorded)."""
    from spemr_engine.training.refset import ReferenceSet

    threads: list[threading.Thread] = []
    real_open = ReferenceSet.open.__func__

    def recording_open(cls, path):
        threads.append(threading.current_thread())
        return real_open(cls, path)

    monkeypatch.setattr(ReferenceSet, "open", classmethod(recording_open))
    return threads


# ================================================================ issue 12
def test_the_tiny_preset_is_quick_in_the_wizard_and_the_cli_alike(wizard):
    from spemr_engine import cli
    from spemr_engine.commands.train import epochs_of
    from spemr_engine.config import preset_epochs, training_recipe

    config = wizard.config_page
    config.preset.setCurrentText("tiny")
    shown = (config.epochs.value(), config.finetune_epochs.value())
    args = cli.build_parser(["train"]).parse_args(["train", "RS", "-o", "OUT", "--config", "tiny"])
    assert shown == epochs_of(args) == preset_epochs("tiny") == (3, 1)
    assert config.train_arguments()["epochs"] == 3 and config.train_arguments()["finetune_epochs"] == 1
    config.preset.setCurrentText(training_recipe().architecture)
    assert (config.epochs.value(), config.finetune_epochs.value()) == (
        training_recipe().epochs,
        training_recipe().finetune_epochs,
    )


def test_fields_that_do_not_apply_to_the_source_are_disabled(qtbot, wizard):
    from spemr_gui.views.wizard import FIELDS_USED

    page = wizard.source_page
    wizard.show()
    for source, used in FIELDS_USED.items():
        button = page.buttons[source]
        qtbot.mouseClick(button, Qt.LeftButton, pos=QPoint(8, button.height() // 2))  # on its circle
        assert page.choice() == source
        for name, widget in page.fields.items():
            applies = name in used or name == "existing"  # typing a set's path there picks "open"
            assert widget.isEnabled() == applies, (source, name)
            assert page.form.labelForField(widget).isEnabled() == applies, (source, name)
        assert page.prepare_button.isEnabled() == (source != "open")


# ================================================================ issue 13
def test_an_existing_set_is_opened_off_the_gui_thread_and_read_once(qtbot, wizard, tmp_path, refset_opens):
    make_refset(tmp_path / "set", n_stars=20, repeats=2)
    refset_opens.clear()
    page = wizard.source_page
    page.existing.setText(str(tmp_path / "set"))
    assert page.choice() == "open" and page.isComplete()
    with qtbot.waitSignal(wizard.summary_page.summary_shown, timeout=30000):
        wizard.next()  # accepted in a worker; Next happens once it is
        assert wizard.currentPage() is page and not page.isComplete()  # meanwhile: waiting
    assert wizard.currentPage() is wizard.summary_page and wizard.summary_page.isComplete()
    assert "<b>40</b> spectra of <b>20</b> stars (synthetic)" in wizard.summary_page.text.text()
    assert sum(wizard.summary_page.region_counts.values()) > 0
    assert len(refset_opens) == 1 and refset_opens[0] is not threading.main_thread()


def test_the_summary_page_reads_a_set_it_has_no_summary_of_in_a_worker(qtbot, wizard, tmp_path, refset_opens):
    make_refset(tmp_path / "set", n_stars=20, repeats=1)
    refset_opens.clear()
    wizard.refset_path = str(tmp_path / "set")  # as a finished Prepare leaves it, without a summary
    page = wizard.summary_page
    with qtbot.waitSignal(page.summary_shown, timeout=30000):
        page.initializePage()
        assert not page.isComplete() and "reading" in page.text.text()
    assert "<b>20</b> spectra" in page.text.text() and page.isComplete()
    assert refset_opens and all(thread is not threading.main_thread() for thread in refset_opens)


def test_a_folder_that_is_not_a_set_is_refused_on_the_source_page(qtbot, wizard, tmp_path):
    page = wizard.source_page
    page.existing.setText(str(tmp_path))
    wizard.next()
    qtbot.waitUntil(lambda: "not a usable reference set" in page.status.text(), timeout=30000)
    assert wizard.currentPage() is page and not wizard.refset_path
    assert page.isComplete()  # the user may correct the path and try again


def test_hidden_tabs_redraw_when_shown(qtbot, window):
    comparison, template = window.comparison_view, window.template_view
    window.tabs.setCurrentIndex(0)
    window.state.set_model(None, "")  # a state change while both tabs are hidden
    assert comparison.redraws.stale and template.redraws.stale
    window.tabs.setCurrentWidget(comparison)
    assert not comparison.redraws.stale and template.redraws.stale
    assert comparison.label_plot.titleLabel.text == "no result yet"
    with qtbot.waitSignal(template.templates_requested, timeout=5000):
        window.tabs.setCurrentWidget(template)  # shown without matches: asks for them
    assert not template.redraws.stale
    with qtbot.waitSignal(template.templates_requested, timeout=5000):
        window.state.set_model(None, "")  # on screen: redrawn and asked at once
    assert not template.redraws.stale and comparison.redraws.stale


def test_a_view_that_says_no_keeps_the_window_open(qtbot, window):
    stopped = []
    remove = window.close_checks.register(lambda: False, lambda: stopped.append(True))
    window.close()
    assert window.isVisible() and not stopped
    remove()
    assert window.confirm_close()


def test_a_running_training_asks_before_the_app_closes(qtbot, window, wizard, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *args: asked.append(args[2]) or QMessageBox.No)
    page = wizard.training_page
    assert window.confirm_close() and not asked  # nothing running: no question

    class Running:  # a job runner that is running (the real one would start a process)
        def is_running(self):
            return True

    page.runner = Running()
    assert not window.confirm_close()
    assert asked and "Training is running" in asked[0]
    page.runner = None


# ============================================ what the regenerated screenshots showed
def test_no_line_label_is_cut_by_the_plot_edge(qtbot, window, open_file):
    """A deep line at an arm's very end keeps its marker but gets no label: half of it
    would lie past the plot's edge (Fe I at 5330, Al I at 6698 on the screenshots)."""
    import dataclasses

    from spemr_engine.config import assets_dir
    from spemr_gui.lines import load_lines

    sample = next(p for p in sorted((assets_dir() / "samples").glob("*.fits*")) if "GIANT" in p.name)
    open_file(sample)
    qtbot.waitUntil(lambda: window.state.current_prepared() is not None, timeout=60000)
    window.spectrum_view.set_normalised(True)
    qtbot.wait(50)
    arm_plot = window.spectrum_view.arm_plots[0]
    low, high = float(arm_plot.curve.wave[0]), float(arm_plot.curve.wave[-1])
    lines = [line for line in load_lines() if low <= line.wave_vac <= high]
    template = max(lines, key=lambda line: line.depth)
    at_ends = [
        dataclasses.replace(template, species="Xx I", wave_vac=high - 0.2, depth=0.99),
        dataclasses.replace(template, species="Yy I", wave_vac=low + 0.2, depth=0.99),
    ]
    arm_plot.set_markers(lines + at_ends)
    assert arm_plot.label_items  # the others are still labelled...
    assert "Xx I" not in arm_plot.marker_positions and "Yy I" not in arm_plot.marker_positions  # ...not these
    x, _y = arm_plot.marker_faint.getData()
    assert np.isclose(x, high - 0.2).any() and np.isclose(x, low + 0.2).any()  # their markers are drawn
    view_rect = arm_plot.plot.vb.sceneBoundingRect()
    arm_plot.reset_view()
    qtbot.wait(50)
    for label in arm_plot.label_items:
        rect = label.sceneBoundingRect()
        assert view_rect.left() <= rect.left() and rect.right() <= view_rect.right()


def test_the_rv_box_shows_its_whole_placeholder(qtbot, window):
    edit = window.spectrum_view.rv_edit
    window.resize(1100, 800)  # a smaller screen: the toolbar row is full
    qtbot.wait(50)
    assert edit.width() >= edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + 8


def test_long_file_names_keep_their_end(qtbot, window):
    from PySide6.QtCore import Qt as QtNS

    assert window.file_list.textElideMode() == QtNS.ElideMiddle
    view = window.batch_view
    name = "med-58408-TD230151N343645T01_sp01-015.fits"
    view._add_rows([{"filename": name, "extname_blue": "COADD_B", "flags": ""}])
    column = view.model.columns.index("filename")
    assert view.table.textElideMode() == QtNS.ElideMiddle and not view.table.wordWrap()
    assert view.table.columnWidth(column) <= 210  # the labels after it stay in view
    assert view.proxy.index(0, column).data(QtNS.ToolTipRole) == name  # whole in the tooltip
    header = view.table.fontMetrics().horizontalAdvance("extname_blue")
    assert view.table.columnWidth(view.model.columns.index("extname_blue")) > header  # "extname_" no more


def test_the_kiel_legend_of_the_sub_model_view_sits_outside_its_plot(qtbot, window, random_bundle):
    view = window.comparison_view
    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        window.load_model(str(random_bundle))
    window.tabs.setCurrentWidget(view)
    qtbot.wait(50)
    legend = view.kiel_legend
    assert len(legend.items) == len(window.state.model.regions)
    assert not legend.sceneBoundingRect().intersects(view.kiel_plot.vb.sceneBoundingRect())
    width = view.graphics.width()
    assert legend.sceneBoundingRect().right() <= width  # its longest entry is not cut


def test_one_epoch_of_validation_mae_is_visible_and_epochs_are_whole(qtbot, wizard):
    page = wizard.training_page
    wizard.show()
    page.on_progress(
        TrainingProgress(
            stage="pretrain",
            member=0,
            network="CA",
            region=None,
            n_epochs=6,
            epoch=1,
            step=10,
            n_steps=10,
            train_loss=5.4,
            val_loss=5.2,
            val_mae={"CH": 0.12, "NH": 0.25},
        )
    )
    curves = page.mae_plot.listDataItems()
    assert len(curves) == 2 and all(curve.opts["symbol"] == "o" for curve in curves)  # a point, not nothing
    assert not page.mae_plot.getAxis("left").autoSIPrefix  # no "(x0.001)" on the log axis
    ticks = page.mae_plot.getAxis("bottom")._tickLevels
    assert [value for value, _text in ticks[0]] == [1]


def test_the_evaluation_page_reads_the_bundle_in_a_worker(qtbot, wizard, random_bundle, monkeypatch):
    from spemr_engine.model import bundle as bundle_module

    threads = []
    real_load = bundle_module.load_bundle

    def recording_load(path, *args, **kwargs):
        threads.append(threading.current_thread())
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "load_bundle", recording_load)
    wizard.bundle_path = str(random_bundle)
    page = wizard.evaluation_page
    with qtbot.waitSignal(page.report_shown, timeout=30000):
        page.initializePage()
        assert "Reading the evaluation" in page.report.toPlainText()
    assert f"Model saved in {random_bundle}" in page.report.toPlainText()
    assert threads and all(thread is not threading.main_thread() for thread in threads)
