"""Sub-model comparison: for the chosen label, the base ensemble and each region
sub-model as a point with its 1-sigma error bar and the spread of its ensemble
members, the fused choice highlighted; beside it a Kiel diagram with the fine-tuning
regions (drawn from the model's region definitions) and where the star falls.
"""

from __future__ import annotations

import html

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QGraphicsRectItem, QHBoxLayout, QLabel, QListWidget, QVBoxLayout, QWidget

from spemr_engine.config import label_infos

from ..kiel import LOGG_EXTENT, TEFF_EXTENT, off_plane_conditions, region_boxes, regions_containing
from ..results import format_value, poor_fit_inflation, region_mismatch_text, submodel_points
from .widgets import RedrawWhenShown

REGION_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
POINT_COLOUR = (70, 70, 70)
CHOSEN_COLOUR = (220, 30, 30)
MISMATCH_COLOUR = (230, 120, 0)
MISMATCH_STYLE = (
    "QLabel { background: #fff0d9; color: #8a4b00; border: 2px solid #f0ad4e; padding: 6px; font-weight: bold; }"
)


class ComparisonView(QWidget):
    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.infos = {info.name: info for info in label_infos()}
        self.label_list = QListWidget()
        self.label_list.setMaximumWidth(130)
        self.label_list.currentRowChanged.connect(lambda _row: self.refresh())
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground("w")
        # The label's plot on top, full width; the Kiel diagram and its legend below: side by
        # side the three did not fit the tab beside the docks and the Kiel column was cut.
        self.label_plot = self.graphics.addPlot(row=0, col=0, colspan=2)
        self.label_plot.showGrid(x=False, y=True, alpha=0.25)
        self.label_plot.getAxis("left").enableAutoSIPrefix(False)
        self.kiel_plot = self.graphics.addPlot(row=1, col=0)
        self._setup_kiel()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.mismatch_label = QLabel("")  # region_mismatch (spemr_engine.model.fit_quality)
        self.mismatch_label.setWordWrap(True)
        self.mismatch_label.setStyleSheet(MISMATCH_STYLE)
        self.mismatch_label.hide()
        self.mismatched: list[str] = []
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.mismatch_label)
        right_layout.addWidget(self.graphics, 1)
        right_layout.addWidget(self.summary)
        layout = QHBoxLayout(self)
        layout.addWidget(self.label_list)
        layout.addWidget(right, 1)
        self.point_items: list = []
        self.kiel_items: list = []
        self.redraws = RedrawWhenShown(self, self.refresh)  # a hidden tab redraws when shown
        for event in (state.selection_changed, state.result_changed, state.model_changed):
            event.connect(lambda *args: self.redraws.changed())
        self.refresh()

    def _setup_kiel(self) -> None:
        plot = self.kiel_plot
        plot.setTitle("Kiel diagram")
        plot.setLabel("bottom", "Teff (K)")
        plot.setLabel("left", "log g (dex)")
        plot.getAxis("bottom").enableAutoSIPrefix(False)
        plot.invertX(True)
        plot.invertY(True)
        plot.setXRange(*TEFF_EXTENT, padding=0)
        plot.setYRange(*LOGG_EXTENT, padding=0)
        # The regions' legend beside the plot, in its own cell: inside, it covered the
        # region boxes and its longest entry ran past the plot's edge.
        self.kiel_legend = pg.LegendItem(colCount=1, labelTextSize="8pt", labelTextColor="k")
        self.graphics.addItem(self.kiel_legend, row=1, col=1)
        self.graphics.ci.layout.setColumnStretchFactor(0, 3)
        self.graphics.ci.layout.setColumnStretchFactor(1, 1)

    # ------------------------------------------------------------------ data
    def labels(self) -> list[str]:
        result = self.state.current_result()
        return [] if result is None or result.prediction is None else list(result.prediction.labels)

    def current_label_index(self) -> int:
        return max(0, self.label_list.currentRow())

    def _sync_label_list(self, labels: list[str]) -> None:
        names = [self.infos[l].display if l in self.infos else l for l in labels]
        existing = [self.label_list.item(i).text() for i in range(self.label_list.count())]
        if existing != names:
            row = self.label_list.currentRow()
            self.label_list.blockSignals(True)
            self.label_list.clear()
            self.label_list.addItems(names)
            self.label_list.setCurrentRow(min(max(row, 0), len(names) - 1) if names else -1)
            self.label_list.blockSignals(False)

    def refresh(self) -> None:
        result = self.state.current_result()
        labels = self.labels()
        self._sync_label_list(labels)
        for item in self.point_items:
            self.label_plot.removeItem(item)
        self.point_items = []
        self._show_mismatch(result)
        self._draw_kiel(result)
        if result is None or not result.usable:
            self.label_plot.setTitle("no result yet" if result is None else "unusable spectrum")
            self.summary.setText(
                "Run inference (I) to compare the sub-models."
                if result is None
                else f"Unusable spectrum: {result.reason}"
            )
            return
        self._draw_label(result.prediction, self.current_label_index())

    def _show_mismatch(self, result) -> None:
        """The winning sub-models whose region the fused labels lie > 2 sigma outside."""
        fit = getattr(result, "fit", None)
        usable = result is not None and result.usable and fit is not None
        self.mismatched = list(fit.region_mismatch[0]) if usable else []
        text = (
            region_mismatch_text(
                result.prediction,
                self.mismatched,
                getattr(self.state.model, "regions", ()),
                inflation=poor_fit_inflation(fit),
            )
            if self.mismatched
            else ""
        )
        self.mismatch_label.setText(f"⚠ {text}" if text else "")
        self.mismatch_label.setVisible(bool(text))

    def _draw_label(self, prediction, j: int) -> None:
        name = prediction.labels[j]
        info = self.infos.get(name)
        unit = info.unit if info else ""
        points = submodel_points(prediction, 0, j)
        x = np.arange(len(points), dtype=float)
        means = np.array([p.mean for p in points])
        sigmas = np.array([p.sigma for p in points])
        plot = self.label_plot
        plot.setTitle(f"{info.display if info else name} per sub-model")
        plot.setLabel("left", f"{info.display if info else name} ({unit})")
        plot.getAxis("bottom").setTicks([[(i, p.name) for i, p in enumerate(points)]])
        fused, fused_sigma = float(prediction.mean[0, j]), float(prediction.sigma[0, j])
        band = pg.LinearRegionItem(
            (fused - fused_sigma, fused + fused_sigma),
            orientation="horizontal",
            movable=False,
            brush=pg.mkBrush(*CHOSEN_COLOUR, 35),
            pen=pg.mkPen(None),
        )
        line = pg.InfiniteLine(fused, angle=0, pen=pg.mkPen(CHOSEN_COLOUR, width=1, style=Qt.DashLine))
        bars = pg.ErrorBarItem(x=x, y=means, height=2 * sigmas, beam=0.15, pen=pg.mkPen(POINT_COLOUR, width=2))
        spreads = pg.ErrorBarItem(
            x=x + 0.22,
            y=(np.array([p.member_min for p in points]) + np.array([p.member_max for p in points])) / 2,
            height=np.array([p.member_max - p.member_min for p in points]),
            beam=0.06,
            pen=pg.mkPen((120, 120, 200), width=1),
        )
        members = self._member_scatter(prediction, j, x + 0.22)
        brushes = [
            pg.mkBrush(
                *(
                    MISMATCH_COLOUR
                    if p.chosen and p.name in self.mismatched
                    else CHOSEN_COLOUR
                    if p.chosen
                    else POINT_COLOUR
                )
            )
            for p in points
        ]
        sizes = [16 if p.chosen else 9 for p in points]
        symbols = ["star" if p.chosen else "o" for p in points]
        dots = pg.ScatterPlotItem(x=x, y=means, brush=brushes, size=sizes, symbol=symbols, pen=pg.mkPen("w"))
        for item in (band, line, bars, spreads, members, dots):
            plot.addItem(item)
            self.point_items.append(item)
        plot.setXRange(-0.5, len(points) - 0.5, padding=0)
        plot.enableAutoRange(axis="y")
        chosen = next((p.name for p in points if p.chosen), "-")
        if chosen in self.mismatched:
            plot.setTitle(f"{info.display if info else name} per sub-model — {chosen}: REGION MISMATCH")
        rows = "  ".join(f"{p.name}: {format_value(p.mean, unit)} ± {format_value(p.sigma, unit)}" for p in points)
        self.summary.setText(
            f"<b>{info.display if info else name}</b> fused "
            f"{format_value(fused, unit)} ± {format_value(fused_sigma, unit)} {unit} "
            f"from <b>{chosen}</b> (smallest predicted variance among "
            f"{', '.join(prediction.fused_over)})<br>{rows}<br>"
            f"<small>dots: sub-model mean ± 1σ; crosses: its ensemble members "
            f"(bar: their spread); red star and band: the fused value ± 1σ. "
            f"↑/↓ choose the label.</small>"
        )

    def _member_scatter(self, prediction, j: int, x: np.ndarray):
        members = np.asarray(prediction.member_mean)[0, :, :, j]  # (S, M)
        xs = np.repeat(x, members.shape[1])
        return pg.ScatterPlotItem(
            x=xs, y=members.ravel(), size=5, symbol="x", pen=pg.mkPen((120, 120, 200)), brush=None
        )

    # ------------------------------------------------------------------ Kiel
    def _draw_kiel(self, result) -> None:
        plot = self.kiel_plot
        for item in self.kiel_items:
            plot.removeItem(item)
        self.kiel_items = []
        self.kiel_legend.clear()
        plot.setTitle("Kiel diagram")
        model = self.state.model
        regions = tuple(getattr(model, "regions", ()) or ())
        for k, region in enumerate(regions):
            colour = REGION_COLOURS[k % len(REGION_COLOURS)]
            for box in region_boxes(region):
                rect = QGraphicsRectItem(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0)
                rect.setBrush(pg.mkBrush(*colour, 40))
                rect.setPen(pg.mkPen(*colour, width=2))
                rect.setToolTip(f"{region.name}: {region.description}")
                plot.addItem(rect)
                self.kiel_items.append(rect)
            swatch = pg.PlotDataItem([], [], pen=pg.mkPen(*colour, width=4))
            plot.addItem(swatch)
            self.kiel_items.append(swatch)
            # one line per condition: the legend's column stays narrow beside the plot
            self.kiel_legend.addItem(swatch, html.escape(region_legend(region)).replace(" (", "<br>("))
        if result is None or not result.usable:
            return
        prediction = result.prediction
        index = {name: i for i, name in enumerate(prediction.labels)}
        if "Teff" not in index or "Logg" not in index:
            return
        teff, logg = prediction.mean[0, index["Teff"]], prediction.mean[0, index["Logg"]]
        error = pg.ErrorBarItem(
            x=np.array([teff]),
            y=np.array([logg]),
            width=np.array([2 * prediction.sigma[0, index["Teff"]]]),
            height=np.array([2 * prediction.sigma[0, index["Logg"]]]),
            pen=pg.mkPen((0, 0, 0), width=2),
        )
        star = pg.ScatterPlotItem(
            x=[teff], y=[logg], symbol="star", size=20, brush=pg.mkBrush(*CHOSEN_COLOUR), pen=pg.mkPen("k")
        )
        for item in (error, star):
            plot.addItem(item)
            self.kiel_items.append(item)
        inside = regions_containing(prediction.mean[0], regions, prediction.labels)
        title = f"Kiel: star in {', '.join(inside) if inside else 'no region'}"
        if self.mismatched:
            title += f" — labelled by {', '.join(self.mismatched)}: REGION MISMATCH"
        plot.setTitle(title)

    def step_label(self, step: int) -> None:
        count = self.label_list.count()
        if count:
            self.label_list.setCurrentRow((self.current_label_index() + step) % count)


def region_legend(region) -> str:
    """Legend text: the region's name, plus what the Kiel plane cannot show."""
    others = off_plane_conditions(region)
    if not region_boxes(region):
        return f"{region.name}: {others} (not in this plane)"
    return f"{region.name}" + (f" (and {others})" if others else "")
