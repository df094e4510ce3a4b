"""The inference panel: model caveat banner, run/cancel with a busy indicator, the
results table (fused value, 1-sigma, winning sub-model per label), copy and export.
Unusable spectra show the preprocessing's reason instead of numbers."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import results as R

COLUMNS = ["label", "value", "± 1σ", "unit", "winner"]
BANNER_STYLE = (
    "QLabel { background: #fff3cd; color: #7a4b00; border: 1px solid #e0b54a; padding: 6px; font-weight: bold; }"
)
UNUSABLE_STYLE = "QLabel { color: #a00000; font-weight: bold; }"
POOR_FIT_STYLE = (
    "QLabel { background: #fde2e1; color: #8a0000; border: 1px solid #d9534f; padding: 4px; font-weight: bold; }"
)
GOOD_FIT_STYLE = "QLabel { color: #2d5f2d; }"
MISMATCH_STYLE = (
    "QLabel { background: #fff0d9; color: #8a4b00; border: 1px solid #f0ad4e; padding: 4px; font-weight: bold; }"
)
POOR_FIT_CELL = QColor(253, 200, 196)


class ResultsPanel(QWidget):
    run_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.rows: list[R.LabelResult] = []
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.hide()
        self.model_label = QLabel("model: none loaded")
        self.model_label.setWordWrap(True)
        self.run_button = QPushButton("Run inference (I)")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel (Esc)")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.cancel_button.setEnabled(False)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate
        self.busy.setMaximumHeight(10)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.fit_label = QLabel("")  # fit chi2 / poor_fit (spemr_engine.model.fit_quality)
        self.fit_label.setWordWrap(True)
        self.fit_label.hide()
        self.mismatch_label = QLabel("")  # region_mismatch
        self.mismatch_label.setWordWrap(True)
        self.mismatch_label.setStyleSheet(MISMATCH_STYLE)
        self.mismatch_label.hide()
        self.snr_label = QLabel("")  # sigma against S/N over the file's spectra
        self.snr_label.setWordWrap(True)
        self.snr_label.hide()
        self.sigma_inverted = False
        self.fit = None  # results.FitSummary of the shown result
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.clicked.connect(lambda: self._export_dialog("csv"))
        self.json_button = QPushButton("Export JSON…")
        self.json_button.clicked.connect(lambda: self._export_dialog("json"))

        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button)
        run_row.addWidget(self.cancel_button)
        export_row = QHBoxLayout()
        for button in (self.copy_button, self.csv_button, self.json_button):
            export_row.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.model_label)
        layout.addLayout(run_row)
        layout.addWidget(self.busy)
        layout.addWidget(self.message)
        layout.addWidget(self.fit_label)
        layout.addWidget(self.mismatch_label)
        layout.addWidget(self.snr_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(export_row)
        state.selection_changed.connect(self.refresh)
        state.result_changed.connect(lambda *args: self.refresh())
        state.model_changed.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ state
    def set_busy(self, busy: bool, text: str = "") -> None:
        self.busy.setVisible(busy)
        self.cancel_button.setEnabled(busy)
        self.run_button.setEnabled(not busy)
        if text or busy:
            self.message.setStyleSheet("")
            self.message.setText(text)

    def _show_sigma_snr(self, result) -> None:
        opened = self.state.current
        text, inverted = (
            ("", False)
            if opened is None or result is None or not result.usable
            else R.sigma_snr_note(opened, self.state.current_pair)
        )
        self.sigma_inverted = inverted
        if inverted:
            text = (
                "⚠ σ here is smaller than for a spectrum of this star with higher S/N: "
                "the network's σ is the spread it learned for such spectra, not a "
                "photon-noise error bar, so do not read this one as more precise. " + text
            )
        self.snr_label.setStyleSheet(MISMATCH_STYLE if inverted else "color: #444;")
        self.snr_label.setText(text)
        self.snr_label.setVisible(bool(text))

    def show_error(self, text: str) -> None:
        self.message.setStyleSheet(UNUSABLE_STYLE)
        self.message.setText(text)

    def refresh(self) -> None:
        model = self.state.model
        caveat = R.model_caveat(model)
        self.banner.setText(f"⚠ {caveat}" if caveat else "")
        self.banner.setVisible(bool(caveat))
        self.model_label.setText(f"model: {self.state.model_path or 'none loaded'}")
        result = self.state.current_result()
        self.rows = []
        self._show_fit(result)
        self._show_sigma_snr(result)
        if result is None:
            self._fill([])
            if not self.busy.isVisible():
                self.message.setStyleSheet("")
                self.message.setText("" if self.state.current is None else "no result yet (press I)")
            return
        if not result.usable:
            self._fill([])
            self.message.setStyleSheet(UNUSABLE_STYLE)
            self.message.setText(f"Unusable spectrum: {result.reason}")
            return
        self.rows = R.label_results(result.prediction, 0)
        self.message.setStyleSheet("")
        self.message.setText(
            f"fused SPEMR estimate on {result.device}; winner = sub-model with the smallest predicted variance. "
            + R.sigma_note(self.state.model)
        )
        self._fill(self.rows)

    def _show_fit(self, result) -> None:
        """The fit-quality line (red when poor_fit) and the region-mismatch warning."""
        usable = result is not None and result.usable
        self.fit = R.fit_summary(result.fit, self.state.model) if usable else None
        self.fit_label.setVisible(self.fit is not None)
        self.fit_label.setText(self.fit.line if self.fit else "")
        self.fit_label.setStyleSheet(POOR_FIT_STYLE if self.fit and self.fit.poor else GOOD_FIT_STYLE)
        mismatch = ""
        if self.fit is not None:
            mismatch = R.region_mismatch_text(
                result.prediction,
                self.fit.mismatch,
                getattr(self.state.model, "regions", ()),
                inflation=R.poor_fit_inflation(result.fit),
            )
        self.mismatch_label.setText(f"⚠ {mismatch}" if mismatch else "")
        self.mismatch_label.setVisible(bool(mismatch))

    def _fill(self, rows: list[R.LabelResult]) -> None:
        self.table.setRowCount(len(rows))
        poor = self.fit is not None and self.fit.poor
        for i, row in enumerate(rows):
            sigma_text = R.format_value(row.sigma, row.unit) + (" ⚠" if poor else "")
            cells = [row.display, R.format_value(row.value, row.unit), sigma_text, row.unit, row.winner]
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j in (1, 2):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    item.setToolTip(repr(row.value if j == 1 else row.sigma))
                if poor and j in (0, 2):
                    item.setBackground(POOR_FIT_CELL)
                    if j == 2:
                        item.setToolTip(f"{row.sigma!r}: poor_fit, inflated ×{self.fit.inflation:.2f}")
                self.table.setItem(i, j, item)
        for widget in (self.copy_button, self.csv_button, self.json_button):
            widget.setEnabled(bool(rows))

    # ----------------------------------------------------------------- export
    def context(self) -> dict:
        opened, pair = self.state.current, self.state.current_pair_obj
        context = {
            "file": str(opened.path) if opened else "",
            "spectrum": pair.label if pair else "",
            "model": self.state.model_path,
        }
        caveat = R.model_caveat(self.state.model)
        if caveat:
            context["caveat"] = caveat
        if self.fit is not None:
            context["fit_chi2"] = self.fit.fit_chi2
            context["member_spread"] = self.fit.member_spread
            context["sigma_inflation"] = self.fit.inflation
            flags = (["poor_fit"] if self.fit.poor else []) + (["region_mismatch"] if self.fit.mismatch else [])
            context["flags"] = "|".join(flags)
        return context

    def copy_to_clipboard(self) -> str:
        text = R.to_clipboard_text(self.rows)
        QGuiApplication.clipboard().setText(text)
        return text

    def export(self, path: str | Path) -> Path:
        path = Path(path)
        text = (
            R.to_json(self.rows, self.context())
            if path.suffix.lower() == ".json"
            else R.to_csv(self.rows, self.context())
        )
        path.write_text(text)
        return path

    def _export_dialog(self, kind: str) -> None:
        name, _ = QFileDialog.getSaveFileName(
            self, "Export results", f"spemr_result.{kind}", f"{kind.upper()} (*.{kind})"
        )
        if name:
            self.export(name)
