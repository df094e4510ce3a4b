"""Walk the training wizard through a tiny run: generate a synthetic reference set (in a
separate process), look at its summary, configure the tiny preset, train in a separate
process, cancel mid-way and resume, read the evaluation, and make the model active."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QWizard

from spemr_engine.model.bundle import load_bundle


@pytest.mark.slow
def test_wizard_tiny_training_with_cancel_and_resume(qtbot, window, tmp_path):
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    source = wizard.source_page
    assert wizard.currentPage() is source and not source.isComplete()
    source.buttons["synthetic"].setChecked(True)
    source.n_stars.setValue(40)
    source.seed.setValue(1)
    source.output.setText(str(tmp_path / "refset"))
    with qtbot.waitSignal(wizard.refset_ready, timeout=120000):
        source.prepare()
    assert source.isComplete()

    wizard.next()
    summary = wizard.summary_page
    assert wizard.currentPage() is summary
    assert "spectra of" in summary.text.text() and "synthetic" in summary.text.text()
    assert set(summary.region_counts) == {"S1", "S2", "S3", "S4"}
    assert summary.region_counts["S1"] > 0

    wizard.next()
    config = wizard.config_page
    config.preset.setCurrentText("tiny")
    config.members.setValue(1)
    config.epochs.setValue(2)
    config.finetune_epochs.setValue(1)
    config.batch_size.setValue(32)
    config.device.setCurrentText("cpu")
    config.output.setText(str(tmp_path / "model"))
    assert config.isComplete()

    wizard.next()
    training = wizard.training_page
    assert not training.isComplete()
    runner = training.start()
    with qtbot.waitSignal(runner.progress, timeout=120000):
        pass
    with qtbot.waitSignal(wizard.training_cancelled, timeout=120000):
        training.cancel()
    assert not training.isComplete() and training.start_button.isEnabled()
    assert window.isVisible()  # the app is untouched by the job process
    with qtbot.waitSignal(wizard.training_done, timeout=180000) as done:
        training.start()  # resumes from the checkpoint
    model_path = done.args[0]
    assert training.isComplete()
    assert len(training.training_state.history) >= 2  # epochs with train/validation loss plotted
    assert training.training_state.mae_history  # per-label validation MAE curves
    assert load_bundle(model_path).trained_on == "synthetic"

    evaluation = wizard.evaluation_page
    with qtbot.waitSignal(evaluation.report_shown, timeout=60000):
        wizard.next()  # the bundle is read in a worker
    assert "Overall" in evaluation.report.toPlainText()
    assert not evaluation.make_active.isChecked()  # never by default (issue 12, item 8)
    evaluation.make_active.setChecked(True)
    with qtbot.waitSignal(window.model_loaded, timeout=60000):
        wizard.done(QWizard.Accepted)
    assert window.state.model_path == model_path
    assert "SYNTHETIC" in window.results_panel.banner.text()


def test_training_job_crash_is_reported_not_fatal(qtbot, window, tmp_path):
    """A job that dies (here: a refset path that does not exist) is reported in the
    wizard; the app goes on."""
    from spemr_gui.views.jobs import JobRunner

    runner = JobRunner(
        "spemr_engine.training.train:train_model",
        {"refset": str(tmp_path / "missing"), "out_dir": str(tmp_path / "m"), "architecture": "tiny"},
    )
    with qtbot.waitSignal(runner.failed, timeout=120000) as failed:
        runner.start()
    assert "missing" in failed.args[0]
    assert window.isVisible()


def test_wizard_configuration_defaults_are_the_training_recipe(qtbot, window):
    from spemr_engine.config import training_recipe
    from spemr_gui.views.wizard import open_wizard

    wizard = open_wizard(window)
    qtbot.addWidget(wizard)
    config, recipe = wizard.config_page, training_recipe()
    assert config.preset.currentText() == recipe.architecture
    assert (config.epochs.value(), config.finetune_epochs.value(), config.batch_size.value(), config.seed.value()) == (
        recipe.epochs,
        recipe.finetune_epochs,
        recipe.batch_size,
        recipe.seed,
    )
    assert config.lr.value() == pytest.approx(recipe.lr) and config.finetune_lr.value() == pytest.approx(
        recipe.finetune_lr
    )
