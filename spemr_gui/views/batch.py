"""Batch labelling over the engine's catalog API (spemr_engine.batch.catalog.run_catalog):
inputs (folders, recursive, or files), options, start / pause / cancel, progress with
files and spectra done, spectra/s and ETA; rows stream into a sortable table (flags
included) and a Kiel diagram coloured by [Fe/H]; export, and the paper's diagnostics
(`spemr report`) for the catalog, written in a worker. A run always passes resume=True,
so starting again after a cancel or a crash continues where it stopped.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from spemr_engine.config import label_infos
from spemr_engine.progress import LABELLING, CatalogProgress

from ..kiel import LOGG_EXTENT, TEFF_EXTENT
from ..catalog_table import column_values, numeric, read_catalog, write_csv
from ..controller import BatchState
from ..settings import DEVICES
from ..workers import Task
from .widgets import path_row

EXPOSURE_CHOICES = ("coadd", "all")
FLAG_COLUMN = "flags"
ERROR_COLUMN = "error"
FLAGGED_BRUSH = (255, 225, 225)
FLAGGED = pg.mkBrush(*FLAGGED_BRUSH)
POOR_FIT_BRUSH = (240, 150, 140)  # the sigmas (and chi2) of a poor_fit row: inflated
POOR_FIT = pg.mkBrush(*POOR_FIT_BRUSH)
MISMATCH_BRUSH = (250, 200, 120)
MISMATCH = pg.mkBrush(*MISMATCH_BRUSH)
POOR_FIT_COLUMNS = ("fit_chi2", "member_spread", "sigma_inflation")
SIGMA_LABEL, SIGMA_LABEL_DISPLAY, SIGMA_LABEL_UNIT = "Teff", "Teff", "K"  # the sigma-vs-S/N plot's label
SORT_ARROW_PX = 14  # room for the header's sort indicator
# File names lose their middle beyond this (the tooltip has them whole), so that the
# label columns after them are in view in a panel a few hundred pixels wide.
MAX_COLUMN_PX = {"filename": 210}


def _catalog_name(label: str) -> str:
    return next(info.catalog for info in label_infos() if info.name == label)


# ====================================================================== table
class CatalogModel(QAbstractTableModel):
    """Rows of the catalog as they arrive; flagged rows are tinted."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.columns: list[str] = []
        self.rows: list[dict] = []

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if role == Qt.DisplayRole and orientation == Qt.Horizontal and section < len(self.columns):
            return self.columns[section]
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        value = row.get(self.columns[index.column()])
        if role == Qt.DisplayRole:
            return _display(value)
        if role == Qt.UserRole:
            return value
        column = self.columns[index.column()]
        if role == Qt.BackgroundRole:
            return _background(row, column)
        if role == Qt.ToolTipRole:
            if _has_flag(row, "poor_fit") and (column.endswith("_err") or column in POOR_FIT_COLUMNS):
                return (
                    f"poor_fit: fit_chi2 {_display(row.get('fit_chi2'))}; every sigma inflated "
                    f"×{_display(row.get('sigma_inflation'))}"
                )
            if row.get(ERROR_COLUMN):
                return str(row.get(ERROR_COLUMN))
            if column == "filename":
                return _display(value)  # whole, where the cell elides its middle
        return None

    def set_columns(self, columns: list[str]) -> None:
        self.beginResetModel()
        self.columns = list(columns)
        self.rows = []
        self.endResetModel()

    def append(self, rows: list[dict]) -> None:
        """Add streamed rows; new columns arrive in one step (one insert per column
        would relayout the view dozens of times and stall the UI)."""
        if not rows:
            return
        new_columns = [key for row in rows for key in row if key not in self.columns]
        new_columns = list(dict.fromkeys(new_columns))
        if new_columns:  # rare (first rows, an extra column): one reset, labels first
            self.beginResetModel()
            self.columns = display_order(self.columns + new_columns)
            self.rows.extend(rows)
            self.endResetModel()
            return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()

    def replace(self, columns: list[str], rows: list[dict]) -> None:
        self.beginResetModel()
        self.columns, self.rows = display_order(columns), list(rows)
        self.endResetModel()


def display_order(columns) -> list[str]:
    """Table columns as a reader wants them: the file, the labels with their sigmas, the
    flags, then the metadata (the catalog file keeps the engine's order)."""
    columns = list(dict.fromkeys(columns))
    label_columns = []
    for info in label_infos():
        label_columns += [info.catalog, f"{info.catalog}_err"]
    first = [c for c in ("filename", "extname_blue") if c in columns]
    labels = [c for c in label_columns if c in columns]
    flags = [c for c in (FLAG_COLUMN,) if c in columns]
    taken = set(first + labels + flags)
    return first + labels + flags + [c for c in columns if c not in taken]


class SortProxy(QSortFilterProxyModel):
    """Numbers sort as numbers (NaN last), text as text."""

    def lessThan(self, left, right) -> bool:
        a, b = left.data(Qt.UserRole), right.data(Qt.UserRole)
        x, y = numeric(a), numeric(b)
        if not (math.isnan(x) and math.isnan(y)) and not isinstance(a, str) and not isinstance(b, str):
            return (math.isnan(y) and not math.isnan(x)) or x < y
        return str(a or "") < str(b or "")


def _display(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.5g}"
    return str(value)


def _has_flag(row: dict, flag: str) -> bool:
    return flag in str(row.get(FLAG_COLUMN) or "").split("|")


def _background(row: dict, column: str):
    """Flagged rows are tinted; a poor_fit row's sigmas and fit columns, and a
    region_mismatch row's region_mismatch cell, stand out more."""
    if _has_flag(row, "poor_fit") and (column.endswith("_err") or column in POOR_FIT_COLUMNS):
        return POOR_FIT
    if _has_flag(row, "region_mismatch") and column in ("region_mismatch", FLAG_COLUMN):
        return MISMATCH
    return FLAGGED if _is_flagged(row) else None


def _is_flagged(row: dict) -> bool:
    return bool(row.get(FLAG_COLUMN)) or str(row.get("usable", True)).lower() in ("false", "0")


# ======================================================================= view
class BatchView(QWidget):
    run_finished = Signal(object)  # CatalogSummary
    run_failed = Signal(str)
    run_cancelled = Signal()
    rows_added = Signal(int)  # how many rows arrived
    report_written = Signal(object)  # list of the files written ([] when it failed)

    def __init__(self, window):
        super().__init__()
        self.window = window
        self.task: Task | None = None
        self.batch_state = BatchState()  # running, paused, progress, isochrones, report
        self.isochrone_items: list = []
        self._build()
        window.close_checks.register(self.confirm_close, self.stop_for_shutdown)

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        self.inputs = QListWidget()
        self.inputs.setToolTip("Folders are searched recursively for MRS files")
        add_folder = QPushButton("Add folder…")
        add_folder.clicked.connect(self._add_folder_dialog)
        add_files = QPushButton("Add files…")
        add_files.clicked.connect(self._add_files_dialog)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.inputs.clear)
        input_buttons = QHBoxLayout()
        for button in (add_folder, add_files, clear):
            input_buttons.addWidget(button)
        input_box = QGroupBox("Inputs")
        input_layout = QVBoxLayout(input_box)
        input_layout.addWidget(self.inputs)
        input_layout.addLayout(input_buttons)

        self.exposures = QComboBox()
        self.exposures.addItems(EXPOSURE_CHOICES)
        self.rv_catalog = QLineEdit()
        self.rv_catalog.setPlaceholderText("optional: CSV with obsid/filename and rv")
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("the active model")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(self.window.settings.device)
        self.workers = QSpinBox()
        self.workers.setRange(0, 64)
        self.workers.setValue(1)
        self.workers.setToolTip("reading/preprocessing processes (0 = in the app's worker thread)")
        self.output = QLineEdit()
        self.output.setPlaceholderText("catalog .csv / .fits / .parquet")
        self.overwrite = QCheckBox("start again (discard an interrupted run)")
        self.overwrite.setToolTip(
            "Discard what an interrupted run with this output already wrote, instead of resuming it"
        )
        form = QFormLayout()
        form.addRow("exposures", self.exposures)
        form.addRow("RV catalog", path_row(self.rv_catalog, self._browse_rv))
        form.addRow("model", path_row(self.model_path, self._browse_model))
        form.addRow("device", self.device)
        form.addRow("workers", self.workers)
        form.addRow("output", path_row(self.output, self._browse_output))
        form.addRow("", self.overwrite)
        option_box = QGroupBox("Options")
        option_box.setLayout(form)

        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self.set_paused)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button = QPushButton("Export table…")
        self.export_button.clicked.connect(self._export_dialog)
        self.isochrone_button = QPushButton("Isochrones…")
        self.isochrone_button.clicked.connect(self._isochrone_dialog)
        self.report_button = QPushButton("Report…")
        self.report_button.setToolTip(
            "The paper's diagnostics for the catalog (Kiel diagrams by S/N, "
            "sigma against S/N beside repeat observations, fit quality and "
            "flags) as an HTML or PDF file"
        )
        self.report_button.clicked.connect(self._report_dialog)
        self.output.textChanged.connect(lambda _text: self._show_controls())
        # two rows: six buttons in one row of the 460 px panel clip their text
        controls = QVBoxLayout()
        for buttons in (
            (self.start_button, self.pause_button, self.cancel_button),
            (self.export_button, self.isochrone_button, self.report_button),
        ):
            row = QHBoxLayout()
            for button in buttons:
                row.addWidget(button)
            controls.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m files")
        # Fixed heights: text that grows or shrinks must not move the buttons above
        # (clicks missed by ~30 px); wrapped, so nothing is clipped at the panel's width.
        self.progress_label = WrappingLabel("idle")
        self.progress_label.setFixedHeight(self._lines_height(PROGRESS_LINES))
        self.caveat = WrappingLabel("")
        self.caveat.setFixedHeight(self._lines_height(2, bold=True))
        self.caveat.setStyleSheet("color: #7a4b00; font-weight: bold;")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(input_box, 1)
        left_layout.addWidget(option_box)
        left_layout.addLayout(controls)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.progress_label)
        left_layout.addWidget(self.caveat)

        self.model = CatalogModel(self)
        self.proxy = SortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.doubleClicked.connect(self._open_row)
        self.table.setToolTip("Double-click a row to open that spectrum in the inspector")
        self.table.setAlternatingRowColors(False)
        self.table.setWordWrap(False)  # wrapped at '-', a name was cut to "med-58408-..."
        self.table.setTextElideMode(Qt.ElideMiddle)  # "med-58408-TD2…sp01-015.fits"
        self.table.verticalHeader().setDefaultSectionSize(22)
        # Fixed widths: measuring ~70 columns of contents costs tens of ms on the GUI thread.
        self.table.horizontalHeader().setDefaultSectionSize(90)
        self.graphics = pg.GraphicsLayoutWidget()  # also what figure export renders
        self.graphics.setBackground("w")
        self.kiel_plot = self.graphics.addPlot(row=0, col=0)
        self._setup_kiel()
        self.sigma_graphics = pg.GraphicsLayoutWidget()
        self.sigma_graphics.setBackground("w")
        self.sigma_plot = self.sigma_graphics.addPlot(row=0, col=0)
        self._setup_sigma()
        self.plots = QTabWidget()
        self.plots.addTab(self.graphics, "Kiel diagram")
        self.plots.addTab(self.sigma_graphics, "σ against S/N")
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.table)
        right.addWidget(self.plots)
        right.setStretchFactor(0, 3)
        right.setStretchFactor(1, 2)
        left.setMaximumWidth(460)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([380, 900])
        layout = QGridLayout(self)
        layout.addWidget(splitter, 0, 0)
        self._show_controls()

    def _open_row(self, index) -> None:
        """The inspector shows the row's spectrum (its file and exposure)."""
        row = self.model.rows[self.proxy.mapToSource(index).row()]
        source = row.get("source")
        if source:
            label = row.get("spectrum")
            self.window.show_spectrum(source, None if label in (None, "", "file") else str(label))

    def _size_text_columns(self) -> None:
        """File names and flags are wider than numbers: fit them (from the longest text
        seen, not by measuring every cell) so 'rv_unreliable' is not 'rv_unreliab'."""
        metrics = self.table.fontMetrics()
        for name in ("filename", "extname_blue", FLAG_COLUMN, "region_mismatch"):
            if name not in self.model.columns:
                continue
            column = self.model.columns.index(name)
            longest = max((str(row.get(name) or "") for row in self.model.rows[-200:]), key=len, default="")
            width = max(metrics.horizontalAdvance(longest), metrics.horizontalAdvance(name) + SORT_ARROW_PX) + 16
            if width > self.table.columnWidth(column):
                self.table.setColumnWidth(column, min(width, MAX_COLUMN_PX.get(name, 420)))

    def _lines_height(self, lines: int, bold: bool = False) -> int:
        font = self.font()
        font.setBold(bold)
        return QFontMetrics(font).lineSpacing() * lines + 6

    def _setup_kiel(self) -> None:
        plot = self.kiel_plot
        plot.setLabel("bottom", "Teff (K)")
        plot.setLabel("left", "log g (dex)")
        plot.getAxis("bottom").enableAutoSIPrefix(False)
        plot.invertX(True)
        plot.invertY(True)
        plot.setTitle("Kiel diagram (colour: [Fe/H])")
        # Legend top-left: hot, low-gravity corner, where LAMOST stars are rare.
        self.kiel_legend = plot.addLegend(
            offset=(5, 5), labelTextSize="8pt", labelTextColor="k", brush=pg.mkBrush(255, 255, 255, 220)
        )
        self.scatter = pg.ScatterPlotItem(
            size=7, pen=pg.mkPen(None), brush=(68, 1, 84), name="spectra (colour: [Fe/H])"
        )
        self.error_bars = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0, pen=pg.mkPen(150, 150, 150, 120))
        self.error_bars.setZValue(-1)
        plot.addItem(self.error_bars)
        plot.addItem(self.scatter)
        self.kiel_legend.addItem(pg.PlotDataItem([], [], pen=pg.mkPen(150, 150, 150)), "±1σ (Teff, log g)")
        self.colormap = pg.colormap.get("viridis")
        self.feh_range = (-2.0, 0.5)
        self.colorbar = pg.ColorBarItem(
            values=self.feh_range, colorMap=self.colormap, label="[Fe/H]", interactive=False
        )
        self.graphics.addItem(self.colorbar, row=0, col=1)

    # ----------------------------------------------------------------- inputs
    def add_inputs(self, paths) -> None:
        for path in paths:
            self.inputs.addItem(str(path))
        if not self.output.text() and self.inputs.count():
            first = Path(self.inputs.item(0).text())
            folder = first if first.is_dir() else first.parent
            self.output.setText(str(folder / "spemr_catalog.csv"))

    def input_paths(self) -> list[str]:
        return [self.inputs.item(i).text() for i in range(self.inputs.count())]

    def _add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of MRS files (searched recursively)")
        if folder:
            self.add_inputs([folder])

    def _add_files_dialog(self) -> None:
        names, _ = QFileDialog.getOpenFileNames(self, "MRS files", "", "FITS (*.fits *.fits.gz);;All files (*)")
        self.add_inputs(names)

    def _browse_rv(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "RV catalog", "", "CSV (*.csv);;All files (*)")
        if name:
            self.rv_catalog.setText(name)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if folder:
            self.model_path.setText(folder)

    def _browse_output(self) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Catalog", self.output.text(), "CSV (*.csv);;FITS (*.fits);;Parquet (*.parquet)"
        )
        if name:
            self.output.setText(name)

    # -------------------------------------------------------------------- run
    def is_running(self) -> bool:
        """True from start until the run's outcome (result/failure/cancel) has landed."""
        return self.batch_state.running

    def run_options(self) -> dict:
        model = self.model_path.text().strip() or self.window.state.model_path or None
        return {
            "inputs": self.input_paths(),
            "output": self.output.text().strip(),
            "model": model,
            "exposures": self.exposures.currentText(),
            "rv_catalog": self.rv_catalog.text().strip() or None,
            "device": self.device.currentText(),
            "workers": self.workers.value(),
            "resume": True,
            "overwrite": self.overwrite.isChecked(),
        }

    def start(self) -> Task | None:
        if self.is_running():
            return self.task
        options = self.run_options()
        if not options["inputs"] or not options["output"]:
            self._show_problem("add inputs and choose an output catalog first")
            return None
        if options["model"] is None:
            self._show_problem("no model: load one (Model menu) or pick a bundle folder")
            return None
        self.pause_button.setChecked(False)
        self.batch_state.start()
        self.model.set_columns([])
        self._plot_rows()
        completed: list = []  # the summary, when the run ended although Cancel was pressed
        pause = self.batch_state.pause_event

        def run(progress, cancel):
            summary = _run_catalog(progress=progress, cancel=cancel, pause=pause, **options)
            completed.append(summary)
            return summary

        task = Task(run, "batch")
        task.completed = completed
        task.signals.progress.connect(self.on_progress)
        task.signals.result.connect(self._on_finished)
        task.signals.failed.connect(self._on_failed)
        task.signals.cancelled.connect(self._on_cancelled)
        self.task = self.window.runner.start(task)
        self._show_controls()
        self.progress_label.setText("starting… (worker processes load the engine)")
        return task

    def set_paused(self, paused: bool) -> None:
        text = self.batch_state.set_paused(paused)
        self._show_controls()
        if text:
            self.progress_label.setText(text)

    def cancel(self) -> None:
        if self.is_running():
            self.task.cancel()
            self.progress_label.setText("cancelling (committed work is kept; Start resumes)…")

    def on_progress(self, event: CatalogProgress) -> None:
        done, total = self.batch_state.on_progress(event)
        if event.rows:
            self._add_rows(event.rows)
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)
        self.progress_label.setText(progress_text(event))

    def _add_rows(self, rows: list[dict]) -> None:
        self.model.append(rows)
        self._size_text_columns()
        self.batch_state.add_rows(len(rows))
        self._plot_rows()
        self.rows_added.emit(len(rows))

    def _end_run(self) -> bool:
        """The run's outcome landed: not running, and not paused (the button reads Pause
        again). True when Pause was pressed (a small run's files were all in flight, so
        nothing waited)."""
        self.task = None
        was_paused = self.batch_state.end()
        self.pause_button.blockSignals(True)
        self.pause_button.setChecked(False)
        self.pause_button.blockSignals(False)
        self._show_controls()
        return was_paused

    def _on_finished(self, summary) -> None:
        was_paused = self._end_run()
        self.progress.setValue(self.progress.maximum())
        lines = summary.lines() if hasattr(summary, "lines") else [str(summary)]
        if was_paused:
            lines.append("(Pause came after every remaining file was already being labelled)")
        self.progress_label.setText("\n".join(lines))
        self._show_caveat(getattr(summary, "model_trained_on", ""))
        self._load_output(summary)

    def _load_output(self, summary) -> None:
        """Show the finished catalog (the authoritative, ordered table) in a worker."""
        path = getattr(summary, "output", None)
        if not path:
            self.run_finished.emit(summary)
            return
        task = Task(lambda progress, cancel: read_catalog(path), "read catalog")
        task.signals.result.connect(lambda loaded, s=summary: self._on_catalog_read(loaded, s))
        task.signals.failed.connect(lambda message, s=summary: (self._show_problem(message), self.run_finished.emit(s)))
        self.window.runner.start(task)

    def _on_catalog_read(self, loaded, summary) -> None:
        columns, rows = loaded
        self.model.replace(columns, rows)
        self._size_text_columns()
        self._plot_rows(finished=True)
        self.run_finished.emit(summary)

    def _on_failed(self, message: str) -> None:
        self._end_run()
        self._show_problem(message)
        self.run_failed.emit(message)

    def _on_cancelled(self) -> None:
        completed = getattr(self.task, "completed", None)
        if completed:  # every file was done (and the catalog written) before the cancel
            self._on_finished(completed[0])
            return
        self._end_run()
        self.progress_label.setText(self.batch_state.cancelled_text())
        self.run_cancelled.emit()

    def _show_problem(self, message: str) -> None:
        self.progress_label.setText(message)
        self.window.status(message, error=True)

    def _show_caveat(self, trained_on: str) -> None:
        trained_on = str(trained_on or "")
        if trained_on in ("synthetic", "random"):
            self.caveat.setText(
                f"⚠ the model was trained on {trained_on.upper()} data: this catalog is not survey-grade"
            )
        else:
            self.caveat.setText("")

    def _show_controls(self) -> None:
        """The buttons as the batch state says (the state is the truth, not the widgets)."""
        controls = self.batch_state.controls(self.catalog_path() is not None)
        self.start_button.setEnabled(controls.start)
        self.pause_button.setEnabled(controls.pause)
        self.pause_button.setText(controls.pause_text)
        self.cancel_button.setEnabled(controls.cancel)
        self.report_button.setEnabled(controls.report)

    # ------------------------------------------------------------------ Kiel
    def _plot_rows(self, finished: bool = False) -> None:
        """Kiel diagram and sigma against S/N; the repeat-observation scatter (a pass over
        every row) only for a finished catalog, not at every streamed batch."""
        self._plot_sigma(with_repeats=finished)
        rows = self.model.rows
        teff = column_values(rows, _catalog_name("Teff"))
        logg = column_values(rows, _catalog_name("Logg"))
        feh = column_values(rows, _catalog_name("FeH"))
        good = np.isfinite(teff) & np.isfinite(logg)
        if not good.any():
            self.scatter.setData([], [])
            self.error_bars.setData(x=np.zeros(0), y=np.zeros(0))
            return
        low, high = self.feh_range
        scaled = np.clip((np.nan_to_num(feh[good], nan=low) - low) / (high - low), 0, 1)
        colours = self.colormap.map(scaled, mode="qcolor")
        self.scatter.setData(teff[good], logg[good], brush=colours)
        teff_err = column_values(rows, f"{_catalog_name('Teff')}_err")[good]
        logg_err = column_values(rows, f"{_catalog_name('Logg')}_err")[good]
        self.error_bars.setData(
            x=teff[good],
            y=logg[good],
            width=2 * np.nan_to_num(teff_err, nan=0.0, posinf=0.0),
            height=2 * np.nan_to_num(logg_err, nan=0.0, posinf=0.0),
        )

    # ------------------------------------------------------------ sigma vs S/N
    def _setup_sigma(self) -> None:
        """The paper's uncertainty figure for Teff: each spectrum's predicted sigma against
        S/N, and (for a finished catalog) the scatter of repeat observations of a star."""
        plot = self.sigma_plot
        plot.setTitle(f"σ({SIGMA_LABEL_DISPLAY}) against S/N")
        plot.setLabel("bottom", "S/N (blue arm)")
        plot.setLabel("left", f"1σ {SIGMA_LABEL_DISPLAY} ({SIGMA_LABEL_UNIT})")
        plot.setLogMode(x=True, y=False)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.addLegend(offset=(-5, 5), labelTextSize="8pt", labelTextColor="k", brush=pg.mkBrush(255, 255, 255, 220))
        self.sigma_points = pg.PlotDataItem(
            [],
            [],
            pen=None,
            symbol="o",
            symbolSize=4,
            symbolBrush=(120, 120, 120, 140),
            symbolPen=None,
            name="predicted σ",
        )
        self.sigma_median = pg.PlotDataItem(
            [],
            [],
            pen=pg.mkPen((31, 119, 180), width=2),
            symbol="o",
            symbolSize=6,
            symbolBrush=(31, 119, 180),
            name="median per S/N bin",
        )
        self.repeat_curve = pg.PlotDataItem(
            [],
            [],
            pen=pg.mkPen((214, 39, 40), width=2, style=Qt.DashLine),
            symbol="s",
            symbolSize=7,
            symbolBrush=(214, 39, 40),
            name="repeat-observation scatter",
        )
        for item in (self.sigma_points, self.sigma_median, self.repeat_curve):
            plot.addItem(item)

    def _plot_sigma(self, with_repeats: bool) -> None:
        from spemr_engine.batch.report import Catalog, binned_median, repeat_groups, repeat_scatter

        rows = self.model.rows
        snr = column_values(rows, "snr_blue")
        sigma = column_values(rows, f"{_catalog_name(SIGMA_LABEL)}_err")
        ok = np.isfinite(snr) & np.isfinite(sigma) & (snr > 0)
        self.sigma_points.setData(snr[ok], sigma[ok])
        x, y = binned_median(snr[ok], sigma[ok])
        drawn = np.isfinite(y)
        self.sigma_median.setData(x[drawn], y[drawn])
        if not with_repeats:
            self.repeat_curve.setData([], [])
            return
        names = ("designation", "obsid", "filename", "spectrum", "extname_blue")
        table = Catalog(Path(self.output.text()), {n: [row.get(n) for row in rows] for n in names})
        value = column_values(rows, _catalog_name(SIGMA_LABEL))
        repeats = repeat_scatter(repeat_groups(table), snr, value)
        shown = np.isfinite(repeats.scatter)
        self.repeat_curve.setData(repeats.centre[shown], repeats.scatter[shown])

    def set_isochrones(self, isochrones) -> None:
        plot = self.kiel_plot
        for item in self.isochrone_items:
            plot.removeItem(item)
            self.kiel_legend.removeItem(item)
        self.isochrone_items = []
        for k, iso in enumerate(isochrones):
            inside = (
                (iso.teff >= TEFF_EXTENT[0])
                & (iso.teff <= TEFF_EXTENT[1])
                & (iso.logg >= LOGG_EXTENT[0])
                & (iso.logg <= LOGG_EXTENT[1])
            )
            item = pg.PlotDataItem(
                np.where(inside, iso.teff, np.nan),
                np.where(inside, iso.logg, np.nan),
                connect="finite",
                pen=pg.mkPen((90, 90, 90), width=1, style=[Qt.SolidLine, Qt.DashLine, Qt.DotLine][k % 3]),
                name=f"isochrone {iso.name}",
            )
            item.setToolTip(iso.name)
            plot.addItem(item)
            self.isochrone_items.append(item)
        plot.setXRange(*TEFF_EXTENT, padding=0.02)
        plot.setYRange(*LOGG_EXTENT, padding=0.02)

    def _isochrone_dialog(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Isochrone CSV (teff*/logg* columns)", "", "CSV (*.csv);;All files (*)"
        )
        if not name:
            return
        from ..isochrones import read_isochrones
        from spemr_engine.errors import SpemrError

        try:
            self.set_isochrones(read_isochrones(name))
        except SpemrError as error:
            self._show_problem(str(error))
            return
        self.batch_state.isochrone_path = name

    # ----------------------------------------------------------------- report
    def catalog_path(self) -> Path | None:
        """The catalog the report is made from: the output, once it exists as a file."""
        text = self.output.text().strip()
        return Path(text) if text and Path(text).is_file() else None

    def _report_dialog(self) -> None:
        catalog = self.catalog_path()
        if catalog is None:
            return
        suggested = catalog.with_name(f"{catalog.stem}_report.html")
        name, _ = QFileDialog.getSaveFileName(self, "Catalog report", str(suggested), "HTML (*.html);;PDF (*.pdf)")
        if name:
            self.make_report(name)

    def make_report(self, target: str | Path) -> Task | None:
        """Write the report of the current catalog to target (.html or .pdf) in a worker."""
        catalog = self.catalog_path()
        if catalog is None or self.batch_state.reporting:
            return None
        isochrones = self.batch_state.isochrone_path

        def run(progress, cancel):
            from spemr_engine.batch.report import default_isochrones, write_report

            chosen = isochrones or (default_isochrones() if default_isochrones().is_file() else None)
            return write_report(catalog, target, None, chosen)

        task = Task(run, "report")
        task.signals.result.connect(self._on_report_written)
        task.signals.failed.connect(self._on_report_failed)
        self.batch_state.reporting = True
        self.window.runner.start(task)
        self._show_controls()
        self.progress_label.setText(f"writing the report of {catalog.name}…")
        return task

    def _on_report_written(self, paths) -> None:
        self.batch_state.reporting = False
        self._show_controls()
        where = ", ".join(str(p) for p in paths)
        self.progress_label.setText(f"report written to {where}")
        self.window.status(f"report written to {where}")
        self.report_written.emit([str(p) for p in paths])

    def _on_report_failed(self, message: str) -> None:
        self.batch_state.reporting = False
        self._show_controls()
        self._show_problem(f"report: {message}")
        self.report_written.emit([])

    # ----------------------------------------------------------------- export
    def export(self, path: str | Path) -> Path:
        return write_csv(path, self.model.columns, self.model.rows)

    def _export_dialog(self) -> None:
        name, _ = QFileDialog.getSaveFileName(self, "Export table", "spemr_batch.csv", "CSV (*.csv)")
        if name:
            self.export(name)

    # ------------------------------------------------------------------ close
    def confirm_close(self) -> bool:
        if not self.is_running():
            return True
        answer = QMessageBox.question(
            self,
            "A batch is running",
            "A batch run is in progress. Stop it and quit? What is committed is kept and a "
            "later run with the same inputs and output resumes where it stopped.",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def stop_for_shutdown(self) -> None:
        if self.is_running() and self.task is not None:
            self.batch_state.pause_event.clear()
            self.task.cancel()
            self.task.wait(60)


def _run_catalog(**options):
    """The engine's batch API, imported in the worker (its import takes ~0.2 s)."""
    from spemr_engine.batch.catalog import run_catalog

    return run_catalog(**options)


def progress_text(event: CatalogProgress) -> str:
    """ "files 3/10 · 42 spectra · 12.3 spectra/s · ETA 0:12" from a progress event."""
    parts = [f"files {event.files_done}/{event.files_total}", f"{event.spectra_done} spectra"]
    if event.spectra_per_s:
        parts.append(f"{event.spectra_per_s:.1f} spectra/s")
    eta = event.eta_s
    if eta is not None and math.isfinite(eta):
        minutes, seconds = divmod(int(round(eta)), 60)
        parts.append(f"ETA {minutes}:{seconds:02d}")
    if event.files_resumed:
        parts.append(f"{event.files_resumed} resumed")
    if event.phase != LABELLING:
        parts.append(event.phase)
    return " · ".join(parts)


PROGRESS_LINES = 7  # a finished run's summary (output path, flags, time), wrapped


LONG_WORD = 30  # characters: a word this long may not fit the panel's width


def _breakable(match) -> str:
    """A long word (a path, a flag list) with break opportunities after '/', '_' and
    ','; shorter words wrap whole ("no_good_pixels", not "no_good_ / pixels")."""
    word = match.group(0)
    for mark in ("/", "_", ","):
        word = word.replace(mark, mark + "\u200b")
    return word


class WrappingLabel(QLabel):
    """A word-wrapped, top-aligned, selectable label that can also break long paths
    and flag lists (after '/', ',' and '_' in words of LONG_WORD characters or more),
    so nothing is clipped; text() is the text as set, the full text is also the tooltip."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self._plain = ""
        self.setText(text)

    def setText(self, text: str) -> None:
        self._plain = str(text)
        super().setText(re.sub(r"\S{%d,}" % LONG_WORD, _breakable, self._plain))
        self.setToolTip(self._plain if len(self._plain) > 60 else "")

    def text(self) -> str:
        return self._plain
