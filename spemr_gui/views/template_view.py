"""Best-fit template (paper section 3.5): the training spectrum nearest to the fused
estimate in standardised label space, from the model bundle's template library,
overlaid on the normalised spectrum with a residual panel sharing the x axis.
T / Shift+T step to the next / previous nearest template. The model spectrum at the fused
labels (what fit_chi2 is measured against) is drawn too, dashed orange."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from spemr_engine.config import default_grid, label_infos

from ..plotdata import normalised_curves
from ..results import fit_summary, format_value
from .arm_plot import ArmPlot
from .widgets import RedrawWhenShown


POOR_FIT_STYLE = (
    "QLabel { background: #fde2e1; color: #8a0000; border: 1px solid #d9534f; padding: 4px; font-weight: bold; }"
)
GOOD_FIT_STYLE = "QLabel { background: #e6f4e6; color: #2d5f2d; border: 1px solid #8bc48b; padding: 4px; }"


class TemplateView(QWidget):
    """Shows state.templates (a TemplateMatches, computed in a worker by the window)."""

    templates_requested = Signal()

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.matches = None  # engine_calls.TemplateMatches for the current result
        self.infos = {info.name: info for info in label_infos()}
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.spectrum_plots, self.residual_plots, self.residual_items = [], [], []
        self.model_items = []  # the model spectrum at the fused labels, per arm
        for col, arm in enumerate(("blue", "red")):
            top = self.graphics.addPlot(row=0, col=col)
            top.setLabel("left", "normalised flux")
            top.showGrid(x=True, y=True, alpha=0.2)
            bottom = self.graphics.addPlot(row=1, col=col)
            bottom.setLabel("left", "data − template")
            bottom.getAxis("left").enableAutoSIPrefix(False)
            bottom.setLabel("bottom", "rest wavelength", units="Å")
            bottom.getAxis("bottom").enableAutoSIPrefix(False)
            bottom.showGrid(x=True, y=True, alpha=0.2)
            bottom.setXLink(top)
            bottom.addItem(pg.InfiniteLine(0, angle=0, pen=pg.mkPen((120, 120, 120))))
            residual = pg.PlotDataItem(pen=pg.mkPen((90, 90, 90), width=1), connect="finite")
            residual.setDownsampling(auto=True, method="peak")
            residual.setClipToView(True)
            bottom.addItem(residual)
            model_curve = pg.PlotDataItem(pen=pg.mkPen((230, 120, 0), width=1.2, style=Qt.DashLine), connect="finite")
            model_curve.setClipToView(True)
            top.addItem(model_curve)
            self.model_items.append(model_curve)
            self.spectrum_plots.append(ArmPlot(top, arm))
            self.residual_plots.append(bottom)
            self.residual_items.append(residual)
        self.graphics.ci.layout.setRowStretchFactor(0, 3)
        self.graphics.ci.layout.setRowStretchFactor(1, 1)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        self.fit_label = QLabel("")  # the fit chi2 and poor_fit, always beside the residuals
        self.fit_label.setWordWrap(True)
        self.fit_label.hide()
        self.fit = None  # results.FitSummary of the shown result
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["label", "estimate", "template", "difference"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        previous_button = QPushButton("◀ previous (Shift+T)")
        previous_button.clicked.connect(lambda: self.step(-1))
        next_button = QPushButton("next nearest (T) ▶")
        next_button.clicked.connect(lambda: self.step(1))
        buttons = QHBoxLayout()
        buttons.addWidget(previous_button)
        buttons.addWidget(next_button)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.addWidget(self.fit_label)
        side_layout.addWidget(self.info_label)
        side_layout.addLayout(buttons)
        side_layout.addWidget(self.table, 1)
        splitter = QSplitter()
        splitter.addWidget(self.graphics)
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.addWidget(splitter)
        for key, step in ((QKeySequence("T"), 1), (QKeySequence("Shift+T"), -1)):
            shortcut = QShortcut(key, self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda s=step: self.step(s))
        self.redraws = RedrawWhenShown(self, self.refresh, on_show=self._request_if_missing)
        for event in (state.selection_changed, state.result_changed, state.model_changed):
            event.connect(lambda *args: self.on_state_changed())
        self.refresh()

    # ------------------------------------------------------------------ state
    def on_state_changed(self) -> None:
        self.matches = None
        if self.redraws.changed():  # on screen: the templates now; hidden: when shown
            self.templates_requested.emit()

    def _request_if_missing(self) -> None:
        if self.matches is None:
            self.templates_requested.emit()

    def set_matches(self, matches) -> None:
        self.matches = matches
        self.state.template_rank = 0
        self.refresh()

    def step(self, step: int) -> None:
        if self.matches is None or isinstance(self.matches, str) or not len(self.matches.indices):
            return
        self.state.template_rank = (self.state.template_rank + step) % len(self.matches.indices)
        self.refresh()

    # ------------------------------------------------------------------ draw
    def refresh(self) -> None:
        result = self.state.current_result()
        spectra = result.spectra if result is not None else None
        curves = normalised_curves(spectra) if spectra is not None else [None, None]
        for arm_plot, curve in zip(self.spectrum_plots, curves):
            arm_plot.set_curve(curve)
            arm_plot.reset_view()
        self._show_fit(result)
        message = self._why_empty(result)
        if message:
            self.info_label.setText(message)
            self.table.setRowCount(0)
            for arm_plot, residual, model_curve in zip(self.spectrum_plots, self.residual_items, self.model_items):
                arm_plot.set_overlay(None, None)
                residual.setData([], [])
                model_curve.setData([], [])
            return
        rank = self.state.template_rank
        wave, flux = self.matches.spectra[rank]
        grid = default_grid()
        model_flux = self.matches.model_flux
        for arm_plot, residual, model_curve, part in zip(
            self.spectrum_plots, self.residual_items, self.model_items, grid.arm_slices().values()
        ):
            arm_plot.set_overlay(wave[part], flux[part])
            if model_flux is None:
                model_curve.setData([], [])
            else:
                model_curve.setData(wave[part], model_flux[part])
            data = np.asarray(spectra.flux[0], dtype=np.float64)[part]
            data = np.where(np.asarray(spectra.mask[0])[part], np.nan, data)
            residual.setData(wave[part], data - flux[part])
        self._fill_table(result.prediction, self.matches.labels[rank])
        self.info_label.setText(
            f"<b>template {rank + 1} of {len(self.matches.indices)}</b> "
            f"(library entry #{self.matches.indices[rank]}), nearest to the fused estimate in "
            f"standardised label space. Black: template; colour: this spectrum"
            + (
                "; dashed orange: the model spectrum at the fused labels (synthetic world, typical "
                "broadening), which fit χ² is measured against."
                if model_flux is not None
                else "."
            )
        )

    def _show_fit(self, result) -> None:
        usable = result is not None and result.usable
        self.fit = fit_summary(getattr(result, "fit", None), self.state.model) if usable else None
        self.fit_label.setVisible(self.fit is not None)
        if self.fit is None:
            self.fit_label.setText("")
            return
        self.fit_label.setText(f"<b>{self.fit.headline}</b>: {self.fit.text}")
        self.fit_label.setStyleSheet(POOR_FIT_STYLE if self.fit.poor else GOOD_FIT_STYLE)

    def _why_empty(self, result) -> str:
        if result is None:
            return "Run inference (I) first: the template is chosen from the estimate."
        if not result.usable:
            return f"Unusable spectrum: {result.reason}"
        if self.matches is None:
            return "finding the nearest templates…"
        if isinstance(self.matches, str):
            return self.matches
        if not len(self.matches.indices):
            return "the template library is empty"
        return ""

    def _fill_table(self, prediction, template_labels) -> None:
        names = list(prediction.labels)
        self.table.setRowCount(len(names))
        for i, name in enumerate(names):
            info = self.infos.get(name)
            unit = info.unit if info else ""
            estimate = float(prediction.mean[0, i])
            template = float(template_labels[i])
            cells = [
                info.display if info else name,
                format_value(estimate, unit),
                format_value(template, unit),
                format_value(estimate - template, unit),
            ]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
