"""Training wizard (Model > Train a new model…): reference set -> summary ->
configuration -> training (separate process; live loss and per-label validation MAE;
cancel and resume) -> evaluation per region -> make the saved bundle the active model.

Every long step (generating, importing or building a reference set, training) runs in
a separate process through :class:`JobRunner`, so the app never waits on it and a crash
in training cannot take the app down.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWizard,
    QWizardPage,
)

from spemr_engine.config import (
    architecture,
    architecture_names,
    default_regions,
    label_infos,
    preset_epochs,
    training_recipe,
)

from spemr_engine.progress import Count, TrainingEvent

from ..controller import RefsetSummary, TrainingState, summarise_refset
from ..eta import TrainingEta
from ..settings import DEVICES
from ..workers import Task
from .jobs import JobRunner
from .widgets import path_row

SOURCES = {
    "synthetic": ("Generate a synthetic reference set", "spemr_engine.synth.refset_builder:build_reference_set"),
    "open": ("Open an engine reference set (folder)", None),
    "published": (
        "Import the published layout (train/valid/test_flux.pkl, *_label.csv, label_config.pkl)",
        "spemr_engine.training.refset:import_published",
    ),
    "crossmatch": (
        "Build from real MRS files + a label catalog (cross-match)",
        "spemr_engine.training.crossmatch:build_reference_set",
    ),
}
# The source page's fields each source uses (the others are disabled).
FIELDS_USED = {
    "synthetic": {"n_stars", "seed", "output"},
    "open": {"existing"},
    "published": {"source_dir", "output"},
    "crossmatch": {"source_dir", "catalog", "output"},
}
HISTOGRAM_LABELS = ("Teff", "Logg", "FeH")


def install_training_menu(window) -> None:
    window.model_menu.addSeparator()
    window._action(window.model_menu, "&Train a new model…", lambda: open_wizard(window), "Ctrl+T")


def open_wizard(window) -> "TrainingWizard":
    wizard = TrainingWizard(window)
    window.training_wizard = wizard
    wizard.show()
    return wizard


def _pick_folder(parent, edit: QLineEdit, title: str) -> None:
    folder = QFileDialog.getExistingDirectory(parent, title, edit.text())
    if folder:
        edit.setText(folder)


# ==================================================================== wizard
class TrainingWizard(QWizard):
    refset_ready = Signal(str)
    training_done = Signal(str)
    training_failed = Signal(str)
    training_cancelled = Signal(str)

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.setWindowTitle("Train a SPEMR model")
        self.setWizardStyle(QWizard.ClassicStyle)
        self.resize(1000, 720)
        self.refset_path = ""
        self.refset_summary: RefsetSummary | None = None  # of refset_path, read in a worker
        self.bundle_path = ""
        self.source_page = SourcePage(self)
        self.summary_page = SummaryPage(self)
        self.config_page = ConfigPage(self)
        self.training_page = TrainingPage(self)
        self.evaluation_page = EvaluationPage(self)
        for page in (self.source_page, self.summary_page, self.config_page, self.training_page, self.evaluation_page):
            self.addPage(page)
        self.finished.connect(self._on_finished)
        window.close_checks.register(self.training_page.confirm_close, self.stop_jobs)

    def stop_jobs(self) -> None:
        for runner in (self.source_page.runner, self.training_page.runner):
            if runner is not None:
                runner.stop()

    def _on_finished(self, result: int) -> None:
        if result == QWizard.Accepted and self.bundle_path and self.evaluation_page.make_active.isChecked():
            self.window.load_model(self.bundle_path)


# ============================================================ 1: reference set
class SourcePage(QWizardPage):
    def __init__(self, wizard: TrainingWizard):
        super().__init__()
        self.wiz = wizard
        self.runner: JobRunner | None = None
        self.check_task: Task | None = None  # opening a set to accept it, in a worker
        self._next_when_accepted = False
        self.setTitle("1. Reference set")
        self.setSubTitle("Spectra with known labels to train on, in the engine's reference-set format.")
        self.group = QButtonGroup(self)
        layout = QVBoxLayout(self)
        self.buttons = {}
        for key, (text, _target) in SOURCES.items():
            button = QRadioButton(text)
            self.group.addButton(button)
            self.buttons[key] = button
            layout.addWidget(button)
        self.buttons["synthetic"].setChecked(True)
        self.n_stars = QSpinBox()
        self.n_stars.setRange(10, 1_000_000)
        self.n_stars.setValue(300)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.source_dir = QLineEdit()
        self.catalog = QLineEdit()
        self.output = QLineEdit()
        self.output.setPlaceholderText("folder for the new reference set")
        self.existing = QLineEdit()
        self.existing.setPlaceholderText("an existing reference set folder")
        form = QFormLayout()
        self.fields = {  # field name -> its row's widget (enabled only where it applies)
            "n_stars": self.n_stars,
            "seed": self.seed,
            "source_dir": path_row(self.source_dir, lambda: _pick_folder(self, self.source_dir, "Source folder")),
            "catalog": path_row(self.catalog, self._pick_catalog),
            "output": path_row(self.output, lambda: _pick_folder(self, self.output, "Output folder")),
            "existing": path_row(self.existing, lambda: _pick_folder(self, self.existing, "Reference set")),
        }
        for key, text in (
            ("n_stars", "synthetic: stars"),
            ("seed", "synthetic: seed"),
            ("source_dir", "published layout / MRS files folder"),
            ("catalog", "label catalog (cross-match)"),
            ("output", "new reference set folder"),
            ("existing", "existing reference set"),
        ):
            form.addRow(text, self.fields[key])
        self.form = form
        layout.addLayout(form)
        self.prepare_button = QPushButton("Prepare the reference set")
        self.prepare_button.clicked.connect(self.prepare)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(lambda: self.runner and self.runner.cancel())
        self.cancel_button.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.prepare_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        layout.addLayout(row)
        self.progress_bar = QProgressBar()  # stars / files done of total
        self.progress_bar.setRange(0, 0)
        self.progress_bar.hide()
        layout.addWidget(self.progress_bar)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.existing.textChanged.connect(self._existing_changed)
        self.group.buttonToggled.connect(lambda *_args: self._update_fields())
        self._update_fields()

    def _update_fields(self) -> None:
        """Only the fields the chosen source uses are enabled (labels included); the
        existing-set box stays open so that typing a path there picks "open"."""
        used = FIELDS_USED[self.choice()] | {"existing"}
        for key, widget in self.fields.items():
            widget.setEnabled(key in used)
            label = self.form.labelForField(widget)
            if label is not None:
                label.setEnabled(key in used)
        self.prepare_button.setEnabled(
            self.choice() != "open" and not (self.runner is not None and self.runner.is_running())
        )
        self.completeChanged.emit()

    def _pick_catalog(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Label catalog", "", "Tables (*.fits *.csv);;All (*)")
        if name:
            self.catalog.setText(name)

    def choice(self) -> str:
        return next(key for key, button in self.buttons.items() if button.isChecked())

    def _existing_changed(self, text: str) -> None:
        if text.strip():
            self.buttons["open"].setChecked(True)
        self.completeChanged.emit()

    def _checking(self) -> bool:
        return self.check_task is not None and not self.check_task.is_done()

    def isComplete(self) -> bool:
        if (self.runner is not None and self.runner.is_running()) or self._checking():
            return False
        if self.choice() == "open":
            return bool(self.existing.text().strip())
        return bool(self.wiz.refset_path)

    def validatePage(self) -> bool:
        """An existing set is opened in a worker first (reading its rows table takes
        seconds for a large one); Next then happens once it is accepted."""
        if self.choice() == "open":
            path = self.existing.text().strip()
            if self.wiz.refset_path == path and self.wiz.refset_summary is not None:
                return True
            self._next_when_accepted = True
            self._accept_refset(path)
            return False
        return bool(self.wiz.refset_path)

    def job_arguments(self) -> tuple[str, dict]:
        choice, out = self.choice(), self.output.text().strip()
        if not out:
            raise ValueError("choose a folder for the new reference set")
        if choice == "synthetic":
            return SOURCES[choice][1], {"path": out, "n_stars": self.n_stars.value(), "seed": self.seed.value()}
        if choice == "published":
            return SOURCES[choice][1], {"source_dir": self.source_dir.text().strip(), "out_path": out}
        if choice == "crossmatch":
            return SOURCES[choice][1], {
                "inputs": [self.source_dir.text().strip()],
                "catalog_path": self.catalog.text().strip(),
                "out": out,
            }
        raise ValueError(f"nothing to prepare for {choice!r}")

    def prepare(self) -> JobRunner | None:
        try:
            target, kwargs = self.job_arguments()
        except ValueError as error:
            self.status.setText(str(error))
            return None
        self.wiz.refset_path, self.wiz.refset_summary = "", None
        self.runner = JobRunner(target, kwargs, self)
        out = self.output.text().strip()
        self.runner.progress.connect(self._on_progress)
        self.runner.done.connect(lambda _result: self._accept_refset(out))
        self.runner.failed.connect(lambda message: self._job_ended(f"failed: {message}"))
        self.runner.cancelled.connect(
            lambda message: self._job_ended(f"cancelled: {message} (Prepare again to resume)")
        )
        self.runner.start()
        self.progress_bar.setRange(0, 0)  # busy until the first count arrives
        self.progress_bar.show()
        self.status.setText("started in a separate process…")
        self.prepare_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.completeChanged.emit()
        return self.runner

    def _on_progress(self, event: Count) -> None:
        if event.total:
            self.progress_bar.setRange(0, event.total)
            self.progress_bar.setValue(min(event.done, event.total))
        self.status.setText(_event_text(event))

    def _job_ended(self, text: str) -> None:
        self.progress_bar.hide()
        self.status.setText(text)
        self.cancel_button.setEnabled(False)
        self._update_fields()  # the prepare button again, where the source has one

    def _accept_refset(self, path: str) -> Task:
        """Open and summarise the set in a worker; it becomes the wizard's set when that
        succeeds (the summary page then shows what was read, without reading again)."""
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        self.status.setText(f"reading the reference set {path}…")
        task = Task(lambda progress, cancel: summarise_refset(path), "open reference set")
        task.signals.result.connect(self._on_accepted)
        task.signals.failed.connect(lambda message: self._on_not_accepted(f"not a usable reference set: {message}"))
        task.signals.finished.connect(self.completeChanged.emit)
        self.check_task = self.wiz.window.runner.start(task)
        self.completeChanged.emit()
        return task

    def _on_accepted(self, summary: RefsetSummary) -> None:
        self.check_task = None  # landed (its finished signal may still be queued)
        self.wiz.refset_path, self.wiz.refset_summary = summary.path, summary
        self._job_ended(f"reference set ready: {summary.path} ({summary.n_spectra} spectra)")
        self.wiz.refset_ready.emit(summary.path)
        if self._next_when_accepted and self.wiz.currentPage() is self:
            self._next_when_accepted = False
            self.wiz.next()

    def _on_not_accepted(self, message: str) -> None:
        self.check_task = None
        self._next_when_accepted = False
        self._job_ended(message)


def _event_text(event: Count) -> str:
    """A progress event as a sentence: "120 of 500 stars · 313 spectra kept, 2 rejected ·
    1 min 04 s elapsed" (never raw keys and 16-digit floats)."""
    parts = []
    if event.total:
        stage = "" if event.unit == "stars" else f"{event.stage}: "
        parts.append(f"{stage}{event.done:,} of {event.total:,} {event.unit}")
    if event.kept is not None:
        rejected = f", {event.rejected:,} rejected" if event.rejected is not None else ""
        parts.append(f"{event.kept:,} spectra kept{rejected}")
    if event.elapsed_s is not None:
        seconds = int(round(event.elapsed_s))
        parts.append(f"{seconds // 60} min {seconds % 60:02d} s elapsed" if seconds >= 60 else f"{seconds} s elapsed")
    return " · ".join(p for p in parts if p)[:300]


# ================================================================ 2: summary
class SummaryPage(QWizardPage):
    summary_shown = Signal()

    def __init__(self, wizard: TrainingWizard):
        super().__init__()
        self.wiz = wizard
        self.setTitle("2. Summary")
        self.setSubTitle(
            "What the reference set holds: spectra and stars, counts per fine-tuning region, label distributions."
        )
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.RichText)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(self.graphics, 1)
        self.region_counts: dict[str, int] = {}
        self.shown_path = ""  # the set whose summary is on the page

    def initializePage(self) -> None:
        """Show the set's summary: the one read when the set was accepted, else read it
        now in a worker (never on the GUI thread)."""
        summary = self.wiz.refset_summary
        if summary is not None and summary.path == self.wiz.refset_path:
            self.show_summary(summary)
            return
        self.shown_path = ""
        self.graphics.clear()
        self.text.setText(f"reading {html.escape(self.wiz.refset_path)}…")
        path = self.wiz.refset_path
        task = Task(lambda progress, cancel: summarise_refset(path), "reference-set summary")
        task.signals.result.connect(self._on_summary)
        task.signals.failed.connect(
            lambda message, p=path: p == self.wiz.refset_path and self.text.setText(html.escape(message))
        )
        self.wiz.window.runner.start(task)

    def _on_summary(self, summary: RefsetSummary) -> None:
        if summary.path != self.wiz.refset_path:
            return  # the user went back and chose another set meanwhile
        self.wiz.refset_summary = summary
        self.show_summary(summary)

    def isComplete(self) -> bool:
        return bool(self.shown_path) and self.shown_path == self.wiz.refset_path

    def show_summary(self, summary: RefsetSummary) -> None:
        self.region_counts = dict(summary.region_counts)
        regions = "".join(
            f"<li>{html.escape(r.name)} ({html.escape(r.description)}): {self.region_counts.get(r.name, 0)}</li>"
            for r in default_regions()
        )
        kind = "synthetic" if summary.synthetic else "real"
        self.text.setText(
            f"<b>{summary.n_spectra}</b> spectra of <b>{summary.n_stars}</b> stars ({kind}); "
            f"source: {html.escape(summary.source)}<br>per region:<ul>{regions}</ul>"
        )
        self.graphics.clear()
        infos = {info.name: info for info in label_infos()}
        for col, name in enumerate(HISTOGRAM_LABELS):
            if name not in summary.histograms:
                continue
            counts, edges = summary.histograms[name]
            plot = self.graphics.addPlot(row=0, col=col, title=f"{infos[name].display}")
            plot.getAxis("bottom").enableAutoSIPrefix(False)
            plot.addItem(pg.BarGraphItem(x0=edges[:-1], x1=edges[1:], height=counts, brush=pg.mkBrush(70, 110, 190)))
        self.shown_path = summary.path
        self.completeChanged.emit()
        self.summary_shown.emit()


# =========================================================== 3: configuration
class ConfigPage(QWizardPage):
    def __init__(self, wizard: TrainingWizard):
        super().__init__()
        self.wiz = wizard
        self.setTitle("3. Configuration")
        self.setSubTitle(
            "RRNet preset and the training recipe (paper: Adam, lr 1e-4, 30 epochs; "
            "region fine-tuning of fc1, lr 1e-5, 10 epochs)."
        )
        recipe = training_recipe()  # the defaults of spemr train, from presets/training.json
        self.preset = QComboBox()
        self.preset.addItems(architecture_names())
        self.preset.setCurrentText(recipe.architecture)
        self.members = QSpinBox()
        self.members.setRange(1, 32)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(recipe.epochs)
        self.finetune_epochs = QSpinBox()
        self.finetune_epochs.setRange(0, 1000)
        self.finetune_epochs.setValue(recipe.finetune_epochs)
        self.lr = _rate(recipe.lr)
        self.finetune_lr = _rate(recipe.finetune_lr)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 4096)
        self.batch_size.setValue(recipe.batch_size)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(recipe.seed)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.output = QLineEdit()
        self.output.setPlaceholderText("folder for the new model bundle")
        self.output.textChanged.connect(lambda _text: self.completeChanged.emit())
        self.preset.currentTextChanged.connect(self._preset_changed)
        self._preset_changed(self.preset.currentText())
        form = QFormLayout(self)
        form.addRow("architecture", self.preset)
        form.addRow("ensemble members", self.members)
        form.addRow("pre-training epochs", self.epochs)
        form.addRow("fine-tuning epochs", self.finetune_epochs)
        form.addRow("learning rate", self.lr)
        form.addRow("fine-tuning learning rate", self.finetune_lr)
        form.addRow("batch size", self.batch_size)
        form.addRow("seed", self.seed)
        form.addRow("device", self.device)
        form.addRow("model folder", path_row(self.output, lambda: _pick_folder(self, self.output, "Model folder")))

    def _preset_changed(self, name: str) -> None:
        """A preset brings its members and its epochs (tiny: a quick trial run; the
        others: the recipe's) from the presets; the user may change them after."""
        self.members.setValue(architecture(name).members)
        epochs, finetune_epochs = preset_epochs(name)
        self.epochs.setValue(epochs)
        self.finetune_epochs.setValue(finetune_epochs)

    def isComplete(self) -> bool:
        return bool(self.output.text().strip())

    def train_arguments(self) -> dict:
        return {
            "refset": self.wiz.refset_path,
            "out_dir": self.output.text().strip(),
            "architecture": self.preset.currentText(),
            "members": self.members.value(),
            "epochs": self.epochs.value(),
            "finetune_epochs": self.finetune_epochs.value(),
            "lr": self.lr.value(),
            "finetune_lr": self.finetune_lr.value(),
            "batch_size": self.batch_size.value(),
            "seed": self.seed.value(),
            "device": self.device.currentText(),
            "resume": True,
            "command": "spemr-gui training wizard",
        }


def eta_for(arguments: dict) -> TrainingEta:
    """The ETA of a run with these train_model arguments."""
    config = architecture(arguments["architecture"])
    members = arguments.get("members") or config.members
    return TrainingEta(
        members, len(config.networks), len(default_regions()), arguments["epochs"], arguments["finetune_epochs"]
    )


def _rate(value: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(7)
    box.setRange(1e-7, 1.0)
    box.setSingleStep(1e-5)
    box.setValue(value)
    return box


# ================================================================ 4: training
class TrainingPage(QWizardPage):
    def __init__(self, wizard: TrainingWizard):
        super().__init__()
        self.wiz = wizard
        self.runner: JobRunner | None = None
        self.training_state = TrainingState()  # phase, status, epochs, MAE: the truth
        self.setTitle("4. Training")
        self.setSubTitle("Runs in a separate process. Cancel keeps a checkpoint; Start again resumes.")
        self.start_button = QPushButton("Start / resume training")
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.eta_label = QLabel("")
        self.eta_label.setToolTip(
            "From the pace of the epochs finished so far; a fine-tuning "
            "epoch counts as a pre-training one until one has finished."
        )
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.loss_plot = self.graphics.addPlot(row=0, col=0, title="loss per epoch")
        self.loss_plot.setLabel("bottom", "epoch (jobs in order: member, network, pre-training then regions)")
        self.loss_plot.setLabel("left", "loss (Gaussian NLL, standardised labels)")
        self.mae_plot = self.graphics.addPlot(row=0, col=1, title="validation MAE per label (latest job)")
        self.mae_plot.setLabel("bottom", "epoch")
        self.mae_plot.setLabel("left", "validation MAE (K for Teff, dex otherwise; log scale)")
        self.mae_plot.getAxis("left").enableAutoSIPrefix(False)  # not "(x0.001)" on a log axis
        self.mae_plot.setLogMode(y=True)
        # Legends below the plots, in their own layout cells: inside, the job markers'
        # labels covered the loss legend and the MAE legend covered its curves.
        self.loss_legend = pg.LegendItem(colCount=2)
        self.mae_legend = pg.LegendItem(colCount=7)
        self.graphics.addItem(self.loss_legend, row=1, col=0)
        self.graphics.addItem(self.mae_legend, row=1, col=1)
        self.train_curve = self.loss_plot.plot([], [], pen=pg.mkPen((40, 90, 200), width=2), name="train")
        self.val_curve = self.loss_plot.plot([], [], pen=pg.mkPen((200, 60, 40), width=2), name="validation")
        self.loss_legend.addItem(self.train_curve, "train")
        self.loss_legend.addItem(self.val_curve, "validation")
        self.job_markers: list = []
        row = QHBoxLayout()
        row.addWidget(self.start_button)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.eta_label)
        layout.addWidget(self.graphics, 1)
        self._show_state()

    def _show_state(self) -> None:
        """Buttons and texts from the training state."""
        state = self.training_state
        self.start_button.setEnabled(state.phase in ("idle", "stopped"))
        self.cancel_button.setEnabled(state.phase == "running")
        self.status.setText(state.status)
        self.eta_label.setText(state.eta_text)

    def isComplete(self) -> bool:
        return bool(self.training_state.done_path)

    def start(self) -> JobRunner | None:
        if self.runner is not None and self.runner.is_running():
            return self.runner
        arguments = self.wiz.config_page.train_arguments()
        self.runner = JobRunner("spemr_engine.training.train:train_model", arguments, self)
        self.runner.progress.connect(self.on_progress)
        self.runner.done.connect(self._on_done)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.start()
        self.training_state.start(eta_for(arguments))
        self._show_state()
        return self.runner

    def cancel(self) -> None:
        if self.runner is not None and self.runner.is_running():
            self.runner.cancel()
            self.training_state.cancelling()
            self._show_state()

    def on_progress(self, event: TrainingEvent) -> None:
        job = self.training_state.on_progress(event)
        self._show_state()
        if job is not None:
            self._draw_epochs()

    def _draw_epochs(self) -> None:
        """The loss curves, each job (member x network x stage/region) its own segment
        with a marker where it starts; the latest job's validation MAE per label."""
        state = self.training_state
        starts = state.job_starts()
        for x, job in starts[len(self.job_markers) :]:
            marker = pg.InfiniteLine(
                x,
                angle=90,
                pen=pg.mkPen((160, 160, 160), style=Qt.DotLine),
                label=job.replace("pretrain ", "").replace("finetune ", "ft "),
                labelOpts={
                    "position": 0.95,
                    "color": (90, 90, 90),
                    "rotateAxis": (1, 0),
                    "anchors": [(1, 0.5), (1, 0.5)],
                },
            )
            self.loss_plot.addItem(marker)
            self.job_markers.append(marker)
        curves = state.loss_curves()
        self.train_curve.setData(curves.x, curves.train, connect=curves.connect)
        self.val_curve.setData(curves.x, curves.val, connect=curves.val_connect)
        if state.mae_history:
            self._draw_mae()

    def _draw_mae(self) -> None:
        state = self.training_state
        self.mae_plot.clear()
        self.mae_legend.clear()
        self.mae_plot.setTitle(f"validation MAE per label — {state.mae_job}")
        infos = {info.name: info for info in label_infos()}
        for k, (label, values) in enumerate(state.mae_history.items()):
            values = np.asarray(values, dtype=float)
            good = np.isfinite(values) & (values > 0)
            colour = pg.intColor(k, hues=max(len(state.mae_history), 1))
            name = infos[label].display if label in infos else label
            # symbols too: a job's first epoch is a single point, which a line alone hides
            curve = self.mae_plot.plot(
                np.arange(1, len(values) + 1)[good],
                values[good],
                pen=pg.mkPen(colour, width=2),
                symbol="o",
                symbolSize=5,
                symbolBrush=colour,
                symbolPen=None,
            )
            self.mae_legend.addItem(curve, name)
        # whole epochs on the axis (not 1.2, 1.4, ...): about eight ticks at most
        n_epochs = max((len(values) for values in state.mae_history.values()), default=1)
        step = max(1, -(-n_epochs // 8))
        self.mae_plot.getAxis("bottom").setTicks([[(e, str(e)) for e in range(1, n_epochs + 1, step)], []])

    def _on_done(self, result) -> None:
        self.training_state.finished(str(result))
        self.wiz.bundle_path = self.training_state.done_path
        self._show_state()
        self.completeChanged.emit()
        self.wiz.training_done.emit(self.training_state.done_path)

    def _on_failed(self, message: str) -> None:
        self.training_state.failed(message)
        self._show_state()
        self.wiz.training_failed.emit(message)

    def _on_cancelled(self, message: str) -> None:
        self.training_state.cancelled(message)
        self._show_state()
        self.wiz.training_cancelled.emit(message)

    def confirm_close(self) -> bool:
        if self.runner is None or not self.runner.is_running():
            return True
        from PySide6.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self,
            "Training is running",
            "Training is running. Stop it (a checkpoint is kept; the wizard can resume it later) and quit?",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes


# ============================================================== 5: evaluation
class EvaluationPage(QWizardPage):
    report_shown = Signal()

    def __init__(self, wizard: TrainingWizard):
        super().__init__()
        self.wiz = wizard
        self.setTitle("5. Evaluation and save")
        self.setSubTitle("Held-out test split (by star): base ensemble vs fused SPEMR, overall and per region.")
        self.report = QTextBrowser()
        self.make_active = QCheckBox("Make this model the active model when I press Finish")
        # Off by default: a throw-away model must not silently become everyone's default.
        self.make_active.setChecked(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.report, 1)
        layout.addWidget(self.make_active)
        self.shown_path = ""
        self.setFinalPage(True)

    def initializePage(self) -> None:
        """The bundle's evaluation, read in a worker (loading a bundle reads its weights)."""
        path = self.wiz.bundle_path
        self.shown_path = ""
        self.report.setMarkdown(f"Reading the evaluation of `{path}`…")
        task = Task(lambda progress, cancel: evaluation_markdown(path), "read the evaluation")
        task.signals.result.connect(lambda text, p=path: self._show(p, text))
        task.signals.failed.connect(lambda message, p=path: self._show(p, f"Could not read the model: {message}"))
        self.wiz.window.runner.start(task)

    def _show(self, path: str, text: str) -> None:
        if path != self.wiz.bundle_path:
            return  # another run's model meanwhile
        self.report.setMarkdown(text)
        self.shown_path = path
        self.report_shown.emit()


def evaluation_markdown(bundle_path: str) -> str:
    """The evaluation page's text for a saved bundle (off the GUI thread)."""
    from spemr_engine.model.bundle import load_bundle
    from spemr_engine.training.evaluate import render_markdown

    bundle = load_bundle(bundle_path)
    metrics = bundle.metrics
    header = f"Model saved in `{bundle_path}` (trained on {bundle.trained_on} spectra).\n\n"
    if "overall" in metrics:
        return header + render_markdown(metrics)
    return header + f"No evaluation: {metrics.get('note', 'no test split')}."
