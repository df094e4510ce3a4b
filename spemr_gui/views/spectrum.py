"""The inspector's spectrum view: blue and red arm plots, raw or normalised, with
line markers at the measured RV, an RV override box, a cursor readout and keyboard
navigation (arrows pan/zoom, R resets, N toggles the normalised model input).
"""

from __future__ import annotations

import math

import numpy as np

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..lines import load_lines
from ..plotdata import SMOOTHING_KINDS, ArmCurve, normalised_curves, observed_wavelength, raw_curves, smooth_curve
from .arm_plot import ArmPlot, LegendSample, legend_proxies, marker_legend

PAN_FRACTION = 0.15
ZOOM_FACTOR = 0.8


class SpectrumView(QWidget):
    """Shows the state's current arm pair; asks the window for work via signals."""

    normalised_toggled = Signal(bool)  # the window prepares the spectrum if needed
    rv_override_requested = Signal(object)  # float, or None to measure again

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self._lines = None  # read on first use: the engine's rv module (scipy) must not
        # be imported on the GUI thread before the window shows
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        self.arm_plots = [self._make_plot(0, "blue"), self._make_plot(1, "red")]
        for arm_plot in self.arm_plots:  # the model spectrum: over the data, half transparent
            arm_plot.overlay_item.setPen(pg.mkPen((20, 20, 20, 140), width=1))
        self._build_legend()
        self.normalised_box = QCheckBox("&Normalised model input (N)")
        self.normalised_box.toggled.connect(self._on_normalised_toggled)
        self.rv_label = QLabel("RV: -")
        self.rv_edit = QLineEdit()
        self.rv_edit.setPlaceholderText("RV (km/s)")
        self.rv_edit.setToolTip("Override the RV (km/s): Enter or Apply RV; Measure RV drops the override")
        # wide enough for its placeholder, whatever the font ("override RV (k" was clipped)
        self.rv_edit.setMinimumWidth(self.rv_edit.fontMetrics().horizontalAdvance("RV (km/s)  ") + 16)
        self.rv_edit.setMaximumWidth(150)
        self.rv_edit.returnPressed.connect(self._apply_rv)
        apply_button = QPushButton("Apply RV")
        apply_button.clicked.connect(self._apply_rv)
        measure_button = QPushButton("Measure RV")
        measure_button.setToolTip("Drop the override and measure the RV by cross-correlation")
        measure_button.clicked.connect(self._measure_rv)
        self.measure_button = measure_button
        self.smooth_kind = QComboBox()
        self.smooth_kind.addItems(SMOOTHING_KINDS)
        self.smooth_width = QDoubleSpinBox()
        self.smooth_width.setRange(0.5, 50.0)
        self.smooth_width.setSingleStep(0.5)
        self.smooth_width.setValue(2.0)
        self.smooth_width.setSuffix(" px")
        self.smooth_width.setEnabled(False)
        tip = (
            "Smoothing for display only: box width or Gaussian sigma in pixels. The model "
            "input, inference and File > Export plotted data use the unsmoothed flux."
        )
        for widget in (self.smooth_kind, self.smooth_width):
            widget.setToolTip(tip)
        self.smooth_kind.currentTextChanged.connect(self._on_smoothing_changed)
        self.smooth_width.valueChanged.connect(self._on_smoothing_changed)
        smooth_label = QLabel("Smooth:")
        smooth_label.setToolTip(tip)
        reset_button = QPushButton("Reset view (R)")
        reset_button.clicked.connect(self.reset_view)
        self.cursor_label = QLabel(" ")
        self.title_label = QLabel(" ")
        self.title_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.status_label = QLabel("")
        self.status_label.setStyleSheet("color: #a05000;")

        bar = QHBoxLayout()
        for widget in (self.normalised_box, self.rv_label, self.rv_edit, apply_button, measure_button, reset_button):
            bar.addWidget(widget)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title_label)
        layout.addLayout(bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.graphics, 1)
        bottom = QHBoxLayout()  # the toolbar above is full: smoothing sits by the readout
        bottom.addWidget(self.cursor_label, 1)
        for widget in (smooth_label, self.smooth_kind, self.smooth_width):
            bottom.addWidget(widget)
        layout.addLayout(bottom)
        self._proxy = pg.SignalProxy(self.graphics.scene().sigMouseMoved, rateLimit=30, slot=self._on_mouse_moved)
        self._install_keys()
        for event in (state.selection_changed, state.prepared_changed, state.model_changed):
            event.connect(lambda *args: self.refresh())
        self.refresh()

    def _make_plot(self, row: int, arm: str) -> ArmPlot:
        plot = self.graphics.addPlot(row=row, col=0)
        plot.showGrid(x=True, y=True, alpha=0.2)
        plot.setLabel("bottom", "wavelength", units="Å")
        plot.getAxis("bottom").enableAutoSIPrefix(False)  # Å, never kÅ
        plot.getAxis("left").enableAutoSIPrefix(False)
        plot.setLabel("left", "flux")
        plot.setMenuEnabled(True)
        return ArmPlot(plot, arm)

    def _build_legend(self) -> None:
        """One legend for both arms, in its own row under the plots (a legend inside a
        plot covers the spectrum or the line labels)."""
        self.legend = pg.LegendItem(colCount=3, labelTextColor="k", labelTextSize="8pt", horSpacing=18)
        self.graphics.addItem(self.legend, row=2, col=0)
        self.graphics.ci.layout.setRowStretchFactor(2, 0)
        self.legend_proxies = legend_proxies()
        self.legend_labels: dict[str, object] = {}
        entries = [
            ("blue", self.arm_plots[0].curve_item, "blue arm flux"),
            ("red", self.arm_plots[1].curve_item, "red arm flux"),
            ("error", self.legend_proxies["error"], "1σ error"),
            ("mask", self.legend_proxies["mask"], "masked / no data"),
            ("marker", self.legend_proxies["marker"], marker_legend(False, False)[0]),
        ]
        for key, item, text in entries:
            self.legend.addItem(LegendSample(item), text)
            self.legend_labels[key] = self.legend.items[-1][1]

    def legend_texts(self) -> list[str]:
        return [label.text for _sample, label in self.legend.items]

    def _install_keys(self) -> None:
        keys = {
            Qt.Key_Left: lambda: self.pan(-PAN_FRACTION),
            Qt.Key_Right: lambda: self.pan(PAN_FRACTION),
            Qt.Key_Up: lambda: self.zoom(ZOOM_FACTOR),
            Qt.Key_Down: lambda: self.zoom(1 / ZOOM_FACTOR),
            Qt.Key_Plus: lambda: self.zoom(ZOOM_FACTOR),
            Qt.Key_Minus: lambda: self.zoom(1 / ZOOM_FACTOR),
            Qt.Key_R: self.reset_view,
            Qt.Key_0: self.reset_view,
            Qt.Key_N: self.normalised_box.toggle,
        }
        for key, action in keys.items():
            shortcut = QShortcut(QKeySequence(key), self)
            shortcut.setContext(Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(action)

    # --------------------------------------------------------------- state
    @property
    def lines(self) -> tuple:
        if self._lines is None:
            self._lines = load_lines()
        return self._lines

    @property
    def normalised(self) -> bool:
        return self.normalised_box.isChecked()

    def set_normalised(self, on: bool) -> None:
        self.normalised_box.setChecked(on)

    def _on_normalised_toggled(self, on: bool) -> None:
        self.refresh()
        self.normalised_toggled.emit(on)

    @property
    def smoothing(self) -> tuple[str, float]:
        return self.smooth_kind.currentText(), float(self.smooth_width.value())

    def set_smoothing(self, kind: str, width: float | None = None) -> None:
        if width is not None:
            self.smooth_width.setValue(width)
        self.smooth_kind.setCurrentText(kind)

    def _on_smoothing_changed(self, *_args) -> None:
        self.smooth_width.setEnabled(self.smooth_kind.currentText() != "none")
        ranges = self.x_ranges()  # keep the user's zoom: only the curves change
        self.refresh()
        if self.state.current_pair_obj is not None:
            for arm_plot, (x0, x1) in zip(self.arm_plots, ranges):
                arm_plot.plot.setXRange(x0, x1, padding=0)

    def displayed_curves(self) -> list[ArmCurve | None]:
        """What the plots show: current_curves() smoothed when asked (display only)."""
        kind, width = self.smoothing
        return [None if curve is None else smooth_curve(curve, kind, width) for curve in self.current_curves()]

    def _measure_rv(self) -> None:
        self.rv_edit.clear()  # the box must not keep saying an override is in force
        self.status_label.setText("")
        self.rv_override_requested.emit(None)

    def _apply_rv(self) -> None:
        text = self.rv_edit.text().strip()
        if not text:
            self.rv_override_requested.emit(None)
            return
        try:
            value = float(text)
        except ValueError:
            self.status_label.setText(f"RV override must be a number in km/s, not {text!r}")
            return
        if not math.isfinite(value) or abs(value) > 2000:
            self.status_label.setText(f"RV override {value} km/s is outside ±2000 km/s")
            return
        self.status_label.setText("")
        self.rv_override_requested.emit(value)

    def current_curves(self) -> list[ArmCurve | None]:
        pair = self.state.current_pair_obj
        if pair is None:
            return [None, None]
        if not self.normalised:
            return raw_curves(pair)
        spectra = self.state.current_prepared()
        return normalised_curves(spectra) if spectra is not None else [None, None]

    def refresh(self) -> None:
        """Redraw from the state (cheap: arrays are already in memory)."""
        opened, pair = self.state.current, self.state.current_pair_obj
        if opened is None or pair is None:
            self.title_label.setText("Open a LAMOST MRS file (Ctrl+O, drag and drop, or File > Open recent)")
            for arm_plot in self.arm_plots:
                arm_plot.set_curve(None)
                arm_plot.set_markers([])
            self.rv_label.setText("RV: -")
            self.cursor_label.setText(" ")
            self.rv_edit.clear()
            return
        self.title_label.setText(
            f"<b>{opened.name}</b> — {pair.label}: "
            f"{pair.extname_blue} / {pair.extname_red}, "
            f"S/N {pair.snr_blue:.1f} / {pair.snr_red:.1f}"
        )
        spectra = self.state.current_prepared()
        rv = self._rv_text(spectra)
        self.rv_label.setText(rv)
        # The override box shows the override in force for this spectrum, or nothing.
        override = self.state.rv_override()
        self.rv_edit.setText("" if override is None else f"{override:g}")
        self.cursor_label.setText(" ")  # a readout of the previous spectrum is stale
        unreliable = rv_unreliable(spectra)
        waiting = self.normalised and spectra is None
        status = "preparing the normalised spectrum…" if waiting else ""
        if unreliable and not self.normalised:
            status = (
                f"RV unreliable (CCF peak {float(spectra.quality.ccf_peak[0]):.2f}): "
                "line markers (dotted, orange) may be misplaced; give an RV to fix them"
            )
        self.status_label.setText(status)
        rest_rv = None if spectra is None else float(spectra.rv[0])
        frame = "rest-frame wavelength (vacuum)" if self.normalised else "observed wavelength (vacuum)"
        text, pen = marker_legend(unreliable, self.normalised)
        self.legend_labels["marker"].setText(text)
        self.legend_proxies["marker"].setPen(pen)
        flux_label = (
            "normalised flux (continuum = 1)"
            if self.normalised
            else flux_axis_label(getattr(opened, "flux_unit", None))
        )
        overlays = self._model_overlays()
        self._show_model_legend(any(o is not None for o in overlays))
        for arm_plot, curve, overlay in zip(self.arm_plots, self.displayed_curves(), overlays):
            arm_plot.set_curve(curve)
            arm_plot.set_overlay(*(overlay or (None, None)))
            arm_plot.plot.setLabel("left", flux_label)
            arm_plot.plot.setLabel("bottom", frame, units="Å")
            if self.normalised:
                arm_plot.set_markers(self.lines)
            elif rest_rv is not None:
                arm_plot.set_markers(self.lines, lambda w, v=rest_rv: observed_wavelength(w, v), unreliable=unreliable)
            else:
                arm_plot.set_markers([])
            arm_plot.reset_view()

    def _model_overlays(self) -> list:
        """In the normalised view, after inference: the model spectrum at the fused
        labels (the one fit chi2 is measured against) per arm, (wave, flux); else None."""
        result = self.state.current_result() if self.normalised else None
        fit = getattr(result, "fit", None)
        model = getattr(fit, "model_flux", None)
        if model is None or result.spectra is None:
            return [None, None]
        from spemr_engine.config import default_grid

        wave = np.asarray(result.spectra.wave, dtype=np.float64)
        model = np.asarray(model, dtype=np.float64)[0]
        return [(wave[part], model[part]) for part in default_grid().arm_slices().values()]

    def _show_model_legend(self, shown: bool) -> None:
        text = MODEL_LEGEND
        present = any(label.text == text for _sample, label in self.legend.items)
        if shown and not present:
            self.legend.addItem(LegendSample(self.arm_plots[0].overlay_item), text)
        elif not shown and present:
            self.legend.removeItem(text)

    def _rv_text(self, spectra) -> str:
        override = self.state.rv_override()
        if spectra is None:
            return f"RV: {override:.2f} km/s (given)" if override is not None else "RV: not measured yet"
        rv, err, source = float(spectra.rv[0]), float(spectra.rv_err[0]), spectra.rv_source[0]
        if source == "given":
            return f"RV: {rv:.2f} km/s (given)"
        return f"RV: {rv:.2f} ± {err:.2f} km/s ({source})"

    # ----------------------------------------------------------- navigation
    def pan(self, fraction: float) -> None:
        for arm_plot in self.arm_plots:
            (x0, x1), _ = arm_plot.plot.vb.viewRange()
            arm_plot.plot.vb.translateBy(x=fraction * (x1 - x0))

    def zoom(self, factor: float) -> None:
        for arm_plot in self.arm_plots:
            arm_plot.plot.vb.scaleBy(x=factor, y=1.0)

    def reset_view(self) -> None:
        for arm_plot in self.arm_plots:
            arm_plot.reset_view()

    def x_ranges(self) -> list[tuple[float, float]]:
        return [tuple(arm_plot.plot.vb.viewRange()[0]) for arm_plot in self.arm_plots]

    def _on_mouse_moved(self, event) -> None:
        position = event[0]
        for arm_plot in self.arm_plots:
            if arm_plot.plot.sceneBoundingRect().contains(position):
                point = arm_plot.plot.vb.mapSceneToView(position)
                self.cursor_label.setText(self.readout(arm_plot, point.x()))
                return

    def readout(self, arm_plot: ArmPlot, wave: float) -> str:
        value = arm_plot.value_at(wave)
        frame = "rest" if self.normalised else "observed"
        flux = "-" if value is None else f"{value:.4g}"
        kind, width = self.smoothing
        smoothed = "" if kind == "none" else f" (smoothed: {kind} {width:g} px)"
        return f"{arm_plot.arm} arm  λ = {wave:.2f} Å ({frame})  flux = {flux}{smoothed}"


MODEL_LEGEND = "model spectrum at the fused labels"
RELATIVE_FLUX = "flux (relative units; the file gives none)"


def flux_axis_label(unit: str | None) -> str:
    """The raw flux axis: the unit the file states (TUNIT of its FLUX column, or BUNIT),
    else relative (LAMOST MRS flux is not flux-calibrated: no unit is invented)."""
    return f"flux ({unit})" if unit else RELATIVE_FLUX


def rv_unreliable(spectra) -> bool:
    """The RV was measured (not given) and preprocessing calls it untrustworthy (the
    catalog's rv_unreliable flag: spemr_engine.preprocessing.preprocess.QualityFlags.rv_unreliable)."""
    if spectra is None or not len(spectra.rv_source) or spectra.rv_source[0] == "given":
        return False
    return bool(spectra.quality.rv_unreliable[0])
