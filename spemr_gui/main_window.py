"""The main window: menus, docks and tabs around the views, and the controller logic
that turns user actions into background tasks and their results into state changes.

Rule: nothing that can take more than ~100 ms runs on the GUI thread. Files are read,
spectra preprocessed, models loaded and inference run in :class:`TaskRunner` tasks;
results are applied only if they still match what the user is looking at.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget

from . import engine_calls
from .controller import CloseChecks, Request
from .import_speed import skip_source_scan
from .plotdata import curves_to_csv
from .settings import DEVICES, AppSettings
from .state import AppState
from .views.files import FileListView
from .views.fits_header import FitsHeaderView
from .views.log_view import LogView
from .views.metadata import MetadataView
from .views.results_panel import ResultsPanel
from .views.spectrum import SpectrumView
from .workers import Task, TaskRunner

skip_source_scan()

FITS_FILTER = "LAMOST MRS spectra (*.fits *.fits.gz *.fit *.fits.fz);;All files (*)"


class MainWindow(QMainWindow):
    # Emitted on the GUI thread when background work lands (tests wait on these).
    file_opened = Signal(int)  # file index
    open_failed = Signal(str)  # one-line message
    model_loaded = Signal(str)  # model path
    model_failed = Signal(str)
    prepared = Signal(int, int)  # file, pair
    inference_finished = Signal(int, int)
    inference_failed = Signal(str)
    inference_cancelled = Signal()
    templates_found = Signal()

    def __init__(self, settings: AppSettings | None = None, load_default_model: bool = True):
        super().__init__()
        self.setWindowTitle("spemr — LAMOST MRS stellar parameters")
        self.resize(1500, 900)
        self.setAcceptDrops(True)
        self.settings = settings or AppSettings()
        self.state = AppState()
        self.runner = TaskRunner(max_threads=3, parent=self)
        self.close_checks = CloseChecks()  # views with running jobs register here
        self.inference_task: Task | None = None
        self.prepare_tasks: dict[Request, Task] = {}
        self._open_queue: list[list] = []  # reads in the order they were asked for
        self._show_when_open: dict[str, str | None] = {}  # file -> pair label to select
        self.model_task: Task | None = None
        self.last_error = ""
        self._build_views()
        self._build_menus()
        self.state.selection_changed.connect(self._on_selection_changed)
        self.state.model_changed.connect(self._on_model_changed)
        # Nothing heavy before the window is on screen: the engine (torch, astropy) is
        # imported, the model loaded and command-line files read only once it is mapped.
        self._load_default_model = load_default_model
        self.session_model_path = ""  # --model DIR: used this session, not saved
        self._files_at_start: list[str] = []
        self._background_started = False
        QTimer.singleShot(0, self._start_background_when_mapped)

    def open_files_when_shown(self, paths) -> None:
        """Open these once the window is mapped (command-line files; kept in order)."""
        if self._background_started:
            self.open_files(paths)
        else:
            self._files_at_start.extend(str(p) for p in paths)

    def _start_background_when_mapped(self) -> None:
        handle = self.windowHandle()
        if self.isVisible() and handle is not None and not handle.isExposed():
            handle.installEventFilter(self)
            QTimer.singleShot(2000, self._start_background)  # never exposed (minimised)
        else:
            self._start_background()

    def eventFilter(self, obj, event) -> bool:
        if (
            not self._background_started
            and obj is self.windowHandle()
            and event.type() == QEvent.Expose
            and obj.isExposed()
        ):
            obj.removeEventFilter(self)
            QTimer.singleShot(0, self._start_background)  # after this first frame is drawn
        return super().eventFilter(obj, event)

    def _start_background(self) -> None:
        if self._background_started:
            return
        self._background_started = True
        if self._load_default_model:
            self.load_model_from_settings()
        if self._files_at_start:
            files, self._files_at_start = self._files_at_start, []
            self.open_files(files)
        self.runner.start(Task(lambda progress, cancel: engine_calls.warm_up(), "warm up"))

    # ================================================================== layout
    def _build_views(self) -> None:
        self.spectrum_view = SpectrumView(self.state)
        self.spectrum_view.normalised_toggled.connect(lambda _on: self._ensure_prepared())
        self.spectrum_view.rv_override_requested.connect(self.override_rv)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.spectrum_view, "&Spectrum")
        self.setCentralWidget(self.tabs)

        self.file_list = FileListView(self.state)
        self.file_list.close_requested.connect(self.close_file)
        files_dock = self._add_dock("Files", self.file_list, Qt.LeftDockWidgetArea)

        self.results_panel = ResultsPanel(self.state)
        self.results_panel.run_requested.connect(self.run_inference)
        self.results_panel.cancel_requested.connect(self.cancel_inference)
        self.metadata_view = MetadataView(self.state)
        side_tabs = QTabWidget()
        side_tabs.addTab(self.results_panel, "Results")
        side_tabs.addTab(self.metadata_view, "Header")
        self.fits_header_view = FitsHeaderView(self.state, self.runner)
        side_tabs.addTab(self.fits_header_view, "FITS header")
        self.log_view = LogView()
        self.log_index = side_tabs.addTab(self.log_view, "Log")
        self.log_view.changed.connect(lambda n: self.side_tabs.setTabText(self.log_index, f"Log ({n})"))
        self.side_tabs = side_tabs
        inference_dock = self._add_dock("Inference", side_tabs, Qt.RightDockWidgetArea)
        self.resizeDocks([files_dock, inference_dock], [290, 330], Qt.Horizontal)
        self.status_label = QLabel("")
        self.statusBar().addPermanentWidget(self.status_label)

    def _add_dock(self, title: str, widget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def add_tab(self, widget, title: str) -> int:
        return self.tabs.addTab(widget, title)

    # =================================================================== menus
    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "&Open…", self.open_dialog, QKeySequence.Open)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._action(file_menu, "&Close file", lambda: self.close_file(self.state.current_file), QKeySequence.Close)
        file_menu.addSeparator()
        self._action(file_menu, "Export plotted &data (CSV)…", self.export_data_dialog, "Ctrl+E")
        self._action(file_menu, "Export &figure (PNG/SVG)…", self.export_figure_dialog, "Ctrl+Shift+E")
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.Quit)

        self.model_menu = bar.addMenu("&Model")
        self._action(self.model_menu, "&Load model…", self.load_model_dialog, "Ctrl+M")
        self._action(self.model_menu, "Use the &default model", lambda: self.load_model(None))
        self.model_menu.addSeparator()
        self._action(self.model_menu, "Run &inference", self.run_inference, "I")
        self._action(self.model_menu, "&Cancel", self.cancel_inference, "Esc")

        settings_menu = bar.addMenu("&Settings")
        device_menu = settings_menu.addMenu("&Device")
        group = QActionGroup(self)
        for device in DEVICES:
            action = QAction(device, self, checkable=True)
            action.setChecked(device == self.settings.device)
            action.triggered.connect(lambda _checked, d=device: self.set_device(d))
            group.addAction(action)
            device_menu.addAction(action)
        self.infer_on_open_action = QAction("Run inference on &open", self, checkable=True)
        self.infer_on_open_action.setChecked(self.settings.infer_on_open)
        self.infer_on_open_action.toggled.connect(self._set_infer_on_open)
        settings_menu.addAction(self.infer_on_open_action)

        self.view_menu = bar.addMenu("&View")
        self._action(self.view_menu, "&Next spectrum", lambda: self.state.step_pair(1), "]")
        self._action(self.view_menu, "&Previous spectrum", lambda: self.state.step_pair(-1), "[")
        self._action(self.view_menu, "Next spectrum (page)", lambda: self.state.step_pair(1), "PgDown")
        self._action(self.view_menu, "Previous spectrum (page)", lambda: self.state.step_pair(-1), "PgUp")
        self._action(self.view_menu, "Next &file", lambda: self._step_file(1), "Ctrl+PgDown")
        self._action(self.view_menu, "Previous f&ile", lambda: self._step_file(-1), "Ctrl+PgUp")
        self._action(self.view_menu, "Toggle &normalised input", self.spectrum_view.normalised_box.toggle)
        self.view_menu.addSeparator()
        for i in range(6):
            self._action(self.view_menu, f"Tab {i + 1}", lambda i=i: self._show_tab(i), f"Alt+{i + 1}")

        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&Keyboard shortcuts", self.show_shortcuts, "F1")

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)
        return action

    def _show_tab(self, index: int) -> None:
        if index < self.tabs.count():
            self.tabs.setCurrentIndex(index)

    def _step_file(self, step: int) -> None:
        if self.state.files:
            current = self.state.current_file or 0
            self.state.select((current + step) % len(self.state.files), 0)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_files([p]))
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list").triggered.connect(self.settings.clear_recent)

    def show_shortcuts(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS_HELP)

    def set_device(self, device: str) -> None:
        self.settings.device = device
        self.status(f"device: {device} (applies to the next inference)")

    def _set_infer_on_open(self, on: bool) -> None:
        self.settings.infer_on_open = on

    def status(self, text: str, error: bool = False) -> None:
        """The status bar line; every error also goes to the Log tab, where it stays."""
        if error:
            self.last_error = text
            self.log_view.add(text)
            text = f"{text}  (all errors: Log tab)"
        self.status_label.setStyleSheet("color: #a00000;" if error else "")
        self.status_label.setText(text)

    # ============================================================ open files
    def open_dialog(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "Open LAMOST MRS spectra", self.settings.last_dir, FITS_FILTER)
        if names:
            self.settings.last_dir = str(Path(names[0]).parent)
            self.open_files(names)

    def open_files(self, paths) -> list[Task]:
        """Read each file in the background; each lands as its own file_opened/open_failed,
        in the order asked for (command line, dialog, drop), whichever read ends first."""
        tasks = []
        for path in paths:
            task = Task(lambda progress, cancel, p=path: engine_calls.read_file(p), f"open {path}")
            slot = [task, None]  # [task, ("ok", OpenFile) | ("failed", message) | None]
            self._open_queue.append(slot)
            task.signals.result.connect(lambda opened, s=slot: self._open_landed(s, ("ok", opened)))
            task.signals.failed.connect(lambda message, s=slot: self._open_landed(s, ("failed", message)))
            task.signals.cancelled.connect(lambda s=slot: self._open_landed(s, ("cancelled", None)))
            tasks.append(self.runner.start(task))
        if tasks:
            self.status(f"opening {len(tasks)} file(s)…")
        return tasks

    def show_spectrum(self, path, label: str | None = None) -> None:
        """Show one spectrum of a file in the inspector (opening the file if needed):
        label is the pair's label ("coadd" or the exposure's lmjm), as catalogs write it."""
        self.tabs.setCurrentIndex(0)
        key = _same_file_key(path)
        for index, opened in enumerate(self.state.files):
            if _same_file_key(opened.path) == key:
                self.state.select(index, _pair_index(opened, label))
                return
        self._show_when_open[key] = label
        self.open_files([str(path)])

    def _open_landed(self, slot: list, outcome: tuple) -> None:
        slot[1] = outcome
        while self._open_queue and self._open_queue[0][1] is not None:
            kind, value = self._open_queue.pop(0)[1]
            if kind == "ok":
                self._on_file_read(value)
            elif kind == "failed":
                self._on_open_failed(value)

    def _on_file_read(self, opened) -> None:
        self.settings.add_recent(opened.path)
        index = self.state.add_file(opened)
        key = _same_file_key(opened.path)
        if key in self._show_when_open:  # opened from the batch table: that spectrum
            self.state.select(index, _pair_index(opened, self._show_when_open.pop(key)))
        warnings = "; ".join(opened.mrs.warnings)
        self.status(f"opened {opened.name}" + (f" — {warnings}" if warnings else ""))
        self.file_opened.emit(index)
        if self.settings.infer_on_open and self.state.model is not None:
            self.run_inference()

    def _on_open_failed(self, message: str) -> None:
        self.status(message, error=True)
        self.open_failed.emit(message)

    def close_file(self, index: int | None) -> None:
        if index is not None and 0 <= index < len(self.state.files):
            self.state.remove_file(index)

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        files = [p for p in paths if Path(p).is_file()]
        if files:
            self.open_files(files)
            event.acceptProposedAction()

    # ================================================================ models
    def load_model_from_settings(self) -> None:
        """The saved or the default model, loaded in a worker (the existence check
        imports the engine, which must not happen on the GUI thread)."""
        if self.session_model_path:  # --model: for this session only, never saved
            self.load_model(self.session_model_path, remember=False)
            return
        self.load_model(self.settings.model_path or None, quiet_if_missing=True, remember=False)

    def load_model_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Open a spemr model bundle (folder)", self.settings.model_path or ""
        )
        if folder:
            self.load_model(folder)

    def load_model(self, path: str | None, quiet_if_missing: bool = False, remember: bool = True) -> Task:
        """Load a model in a worker. ``remember``: a choice the user made in this window
        (Model menu, wizard) becomes the saved model once it has loaded; the saved one
        and --model are used as they are, so a bad path is never saved."""

        def load(progress, cancel):
            if path is None and quiet_if_missing and not engine_calls.default_model_exists():
                return None
            return engine_calls.load_model(path, device=device)

        device = self.settings.device
        task = Task(load, "load model")
        task.signals.result.connect(lambda loaded: self._on_model_loaded(loaded, remember))
        task.signals.failed.connect(self._on_model_failed)
        self.model_task = self.runner.start(task)
        self.status(f"loading model {path or '(default)'}…")
        return task

    def _on_model_loaded(self, loaded, remember: bool = True) -> None:
        if loaded is None:
            self.status("no model loaded: Model > Load model…, or train one (Model > Train)")
            return
        bundle, path = loaded
        self.state.set_model(bundle, path)
        if remember:
            default = engine_calls.is_default_model(path)
            self.settings.model_path = "" if default else path
        self.status(f"model: {path} (trained on {getattr(bundle, 'trained_on', '?')})")
        self.model_loaded.emit(path)
        if self.settings.infer_on_open and self.state.current is not None:
            self.run_inference()

    def _on_model_failed(self, message: str) -> None:
        self.status(message, error=True)
        self.model_failed.emit(message)

    def _on_model_changed(self) -> None:
        self._ensure_prepared()

    # ========================================================= preprocessing
    def _on_selection_changed(self) -> None:
        self._ensure_prepared()
        if (
            self.settings.infer_on_open
            and self.state.model is not None
            and self.state.current is not None
            and self.state.current_result() is None
        ):
            self.run_inference()

    def _ensure_prepared(self) -> None:
        """Preprocess the current pair in the background when it is not yet: the
        measured RV places the line markers and the normalised view shows the result.
        Decided once the current event is handled, so that an inference started by the
        same event (which preprocesses too, and hands its spectra over) is not doubled:
        two workers on the same pair made each inference ~2x slower on 2 cores."""
        QTimer.singleShot(0, self._ensure_prepared_now)

    def _inference_in_flight(self, request: Request) -> bool:
        task = self.inference_task
        return task is not None and not task.is_done() and getattr(task, "request", None) == request

    def _ensure_prepared_now(self) -> None:
        request = Request.current(self.state)
        if request is None or self.state.current_prepared() is not None or request in self.prepare_tasks:
            return
        if self._inference_in_flight(request):
            return
        opened, pair_index = self.state.current, self.state.current_pair
        model, rv = self.state.model, self.state.rv_override()
        task = Task(lambda progress, cancel: engine_calls.prepare_pair(opened, pair_index, model, rv), "preprocess")
        task.signals.result.connect(lambda spectra, r=request: self._on_prepared(r, spectra))
        task.signals.failed.connect(lambda message: self.status(message, error=True))
        task.signals.finished.connect(lambda r=request: self.prepare_tasks.pop(r, None))
        self.prepare_tasks[request] = self.runner.start(task)

    def _on_prepared(self, request: Request, spectra) -> None:
        file_index = request.file_index(self.state)
        if file_index is None:
            return  # stale: the file closed, the model or the RV override changed
        if request.pair not in self.state.files[file_index].prepared:
            self.state.set_prepared(file_index, request.pair, spectra)
        self.prepared.emit(file_index, request.pair)

    def override_rv(self, rv: float | None) -> None:
        if self.state.current is None:
            return
        self.state.set_rv_override(rv)
        self.status(
            "RV override cleared: measuring by cross-correlation"
            if rv is None
            else f"RV set to {rv:.2f} km/s: re-running preprocessing"
        )
        self._ensure_prepared()
        if self.state.model is not None:
            self.run_inference()

    # ============================================================= inference
    def run_inference(self) -> Task | None:
        request = Request.current(self.state)
        if request is None:
            self.status("open a file first", error=True)
            return None
        if self.state.model is None:
            self.results_panel.show_error("No model loaded: Model > Load model…")
            self.status("no model loaded", error=True)
            return None
        if self.inference_task is not None and not self.inference_task.is_done():
            self.inference_task.cancel()
        opened, pair_index = self.state.current, self.state.current_pair
        model, model_key = self.state.model, self.state.model_key
        rv, device = self.state.rv_override(), self.settings.device
        task = Task(
            lambda progress, cancel: engine_calls.infer_pair(
                opened, pair_index, model, model_key, rv=rv, device=device
            ),
            "inference",
        )
        task.signals.result.connect(lambda result, r=request, t=task: self._on_inferred(r, result, t))
        task.signals.failed.connect(lambda message, t=task: self._on_inference_failed(message, t))
        task.signals.cancelled.connect(lambda t=task: self._on_inference_cancelled(t))
        task.request = request
        self.inference_task = self.runner.start(task)
        self.results_panel.set_busy(True, f"running fused SPEMR on {pair_label(opened, pair_index)} ({device})…")
        return task

    def cancel_inference(self) -> None:
        task = self.inference_task
        if task is not None and not task.is_done():
            task.cancel()
            self._on_inference_cancelled(task)

    def _on_inferred(self, request: Request, result, task: Task) -> None:
        if task is self.inference_task:
            self.results_panel.set_busy(False)
        file_index = request.file_index(self.state)
        if file_index is None:
            return  # stale: the file closed, the model or the RV override changed
        opened, pair_index = self.state.files[file_index], request.pair
        if pair_index not in opened.prepared and result.spectra is not None:
            self.state.set_prepared(file_index, pair_index, result.spectra)
        self.state.set_result(file_index, pair_index, result)
        self.inference_finished.emit(file_index, pair_index)
        self.status(f"inference done: {opened.name} {pair_label(opened, pair_index)}")

    def _on_inference_failed(self, message: str, task: Task) -> None:
        self._ensure_prepared()  # the view still needs its normalised spectrum
        if task is self.inference_task:
            self.results_panel.set_busy(False)
            self.results_panel.show_error(message)
        self.status(message, error=True)
        self.inference_failed.emit(message)

    def _on_inference_cancelled(self, task: Task) -> None:
        self._ensure_prepared()
        if task is self.inference_task:
            self.inference_task = None
            self.results_panel.set_busy(False, "inference cancelled")
            self.inference_cancelled.emit()

    # ================================================================ export
    def export_data(self, path: str | Path) -> Path:
        curves = [c for c in self.spectrum_view.current_curves() if c is not None]
        path = Path(path)
        path.write_text(curves_to_csv(curves))
        self.status(f"wrote {path}")
        return path

    def export_figure(self, path: str | Path) -> Path:
        """PNG or SVG of the current tab's plots (by file suffix)."""
        from .export import export_scene

        path = Path(path)
        widget = self.tabs.currentWidget()
        export_scene(getattr(widget, "graphics", self.spectrum_view.graphics), path)
        self.status(f"wrote {path}")
        return path

    def export_data_dialog(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export plotted data", "spectrum.csv", "CSV (*.csv)")
        if name:
            self.export_data(name)

    def export_figure_dialog(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Export figure", "spectrum.png", "PNG image (*.png);;SVG drawing (*.svg)"
        )
        if name:
            self.export_figure(name)

    # ================================================================= close
    def closeEvent(self, event) -> None:
        if not self.confirm_close():
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def confirm_close(self) -> bool:
        """Views with running jobs (batch, training) get to ask: they registered in
        close_checks."""
        return self.close_checks.may_close()

    def shutdown(self) -> None:
        self.close_checks.stop_all()
        self.runner.cancel_all()
        self.runner.wait_all(10000)
        self.settings.sync()


def _same_file_key(path) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def _pair_index(opened, label) -> int:
    labels = [pair.label for pair in opened.pairs]
    return labels.index(str(label)) if label is not None and str(label) in labels else 0


def pair_label(opened, pair_index: int) -> str:
    return opened.pairs[pair_index].label if opened.pairs else "?"


SHORTCUTS_HELP = """\
Ctrl+O  open files (or drag and drop, or File > Open recent)
[ / ]  or  PgUp / PgDown  previous / next spectrum (coadd, exposures)
Ctrl+PgUp / Ctrl+PgDown  previous / next file
Alt+1 … Alt+6  switch tabs
In the spectrum plot: ← → pan, ↑ ↓ (or + −) zoom, R or 0 reset view, N normalised input
I  run inference,  Esc  cancel
In the template view:  T / Shift+T  next / previous nearest template
In the sub-model view: ↑ ↓  choose the label
Ctrl+E  export plotted data (CSV),  Ctrl+Shift+E  export figure (PNG/SVG)
"""
