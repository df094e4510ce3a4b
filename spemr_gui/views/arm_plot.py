"""One arm's plot: flux, 1-sigma error band, masked pixels shaded, line markers.

pyqtgraph's peak downsampling and clip-to-view keep 4,000-pixel arms fluid; masked
pixels are drawn as one BarGraphItem (one item, not one per run) for the same reason.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPainterPath
from PySide6.QtWidgets import QGraphicsPathItem

from ..lines import labelled_lines
from ..plotdata import ArmCurve, finite_range, mask_intervals

ARM_COLOURS = {"blue": (40, 90, 200), "red": (200, 50, 40)}
MASK_BRUSH = (255, 160, 0, 70)
BAND_ALPHA = 60
MARKER_FAINT = ((90, 90, 90, 80), 1, Qt.SolidLine)  # (rgba, width, style)
MARKER_NAMED = ((90, 90, 90, 170), 1, Qt.DashLine)
MARKER_UNRELIABLE = (230, 120, 0, 200)
LABEL_COLOUR = (60, 60, 60)
LABEL_WIDTH_PX = 20  # a vertical label's width on screen, with a little air
LABEL_HEADROOM = 0.22  # fraction of the data's y span kept free above it for labels


class ArmPlot:
    """Owns the items of one PlotItem and redraws them from an ArmCurve."""

    def __init__(self, plot: pg.PlotItem, arm: str):
        self.plot = plot
        self.arm = arm
        colour = ARM_COLOURS.get(arm, (0, 0, 0))
        self.curve_item = pg.PlotDataItem(pen=pg.mkPen(colour, width=1), connect="finite", name=f"{arm} flux")
        self.curve_item.setDownsampling(auto=True, method="peak")
        self.curve_item.setClipToView(True)
        self.band_item = BandItem(pg.mkBrush(*colour, BAND_ALPHA))
        self.mask_item = pg.BarGraphItem(x0=[], x1=[], y0=[], y1=[], brush=pg.mkBrush(*MASK_BRUSH), pen=pg.mkPen(None))
        self.overlay_item = pg.PlotDataItem(pen=pg.mkPen((30, 30, 30), width=1), connect="finite")
        self.overlay_item.setDownsampling(auto=True, method="peak")
        self.overlay_item.setClipToView(True)
        for item in (self.mask_item, self.band_item, self.curve_item, self.overlay_item):
            plot.addItem(item)
        self.mask_item.setZValue(-20)
        self.band_item.setZValue(-10)
        self.overlay_item.setZValue(5)
        # Line markers: two items in all (faint and labelled lines, segments in pairs)
        # instead of one InfiniteLine per line: ~50 InfiniteLines per arm cost ~70 ms of
        # GUI time at every redraw. Labels are vertical TextItems kept at the top of the
        # view, in headroom above the data (they never cover the spectrum).
        self.marker_faint = pg.PlotCurveItem(pen=_marker_pen(*MARKER_FAINT), connect="pairs")
        self.marker_named = pg.PlotCurveItem(pen=_marker_pen(*MARKER_NAMED), connect="pairs")
        for item in (self.marker_faint, self.marker_named):
            item.setZValue(-5)
            plot.addItem(item, ignoreBounds=True)
        self.label_items: list[pg.TextItem] = []
        self.marker_positions: dict[str, float] = {}  # label text -> plotted wavelength
        self.markers_unreliable = False
        plot.vb.sigYRangeChanged.connect(lambda *_args: self._place_labels())
        self.curve: ArmCurve | None = None
        self.y_range = (0.0, 1.0)

    # ----------------------------------------------------------------- data
    def set_curve(self, curve: ArmCurve | None) -> None:
        self.curve = curve
        if curve is None:
            for item in (self.curve_item, self.overlay_item):
                item.setData([], [])
            self.band_item.clear()
            self.mask_item.setOpts(x0=[], x1=[], y0=[], y1=[])
            return
        self.curve_item.setData(curve.wave, curve.flux)
        self._set_band(curve)
        self.y_range = finite_range(np.where(curve.mask, np.nan, curve.flux))
        self._set_mask(curve)

    def _set_band(self, curve: ArmCurve) -> None:
        error = np.nan_to_num(curve.error, nan=0.0, posinf=0.0)
        if not np.any(error > 0):
            self.band_item.clear()
            return
        flux = _fill_gaps(curve.flux)
        error = np.minimum(error, 10 * (np.nanmax(np.abs(flux)) + 1))  # tame absurd ivar
        self.band_item.set_band(curve.wave, flux - error, flux + error)

    def _set_mask(self, curve: ArmCurve) -> None:
        intervals = mask_intervals(curve.wave, curve.mask)
        if not intervals:
            self.mask_item.setOpts(x0=[], x1=[], y0=[], y1=[])
            return
        starts, stops = np.array(intervals).T
        low, high = self.y_range
        span = high - low
        self.mask_item.setOpts(
            x0=starts, x1=stops, y0=np.full(starts.size, low - 10 * span), y1=np.full(starts.size, high + 10 * span)
        )

    def set_overlay(self, wave: np.ndarray | None, flux: np.ndarray | None) -> None:
        """A second curve (the best-fit template) drawn over the flux."""
        if wave is None:
            self.overlay_item.setData([], [])
        else:
            self.overlay_item.setData(wave, flux)

    def set_markers(self, lines, shift=lambda w: w, unreliable: bool = False) -> None:
        """Vertical markers for the lines inside this arm; shift maps rest-frame
        wavelength to the plotted frame (identity on the rest-frame grid). Only the
        deeper, well separated lines are labelled. ``unreliable``: the RV placing them
        is not trusted (weak CCF peak): markers are drawn dotted and orange."""
        for item in self.label_items:
            self.plot.removeItem(item)
        self.label_items = []
        self.marker_positions = {}
        self.markers_unreliable = bool(unreliable)
        empty = np.zeros(0)
        self.marker_faint.setData(empty, empty)
        self.marker_named.setData(empty, empty)
        if self.curve is None or self.curve.wave.size == 0 or not lines:
            return
        low, high = float(self.curve.wave[0]), float(self.curve.wave[-1])
        positions = {line: float(shift(line.wave_vac)) for line in lines}
        inside = [line for line, x in positions.items() if low <= x <= high]
        if not inside:
            return
        width_px = float(self.plot.vb.width() or 0)
        min_gap = LABEL_WIDTH_PX * (high - low) / width_px if width_px > 50 else 0.0
        # no label within half a label's width of the ends: it would be cut by the plot's edge
        away_from_ends = [line for line in inside if low + min_gap / 2 <= positions[line] <= high - min_gap / 2]
        labelled = labelled_lines(
            away_from_ends, min(line.wave_vac for line in inside), max(line.wave_vac for line in inside), min_gap
        )
        y0, y1 = self.y_range
        span = (y1 - y0) or 1.0
        bottom, top = y0 - 10 * span, y1 + 10 * span
        colour = MARKER_UNRELIABLE if unreliable else None
        for item, chosen, (rgba, width, style) in (
            (self.marker_faint, [l for l in inside if l not in labelled], MARKER_FAINT),
            (self.marker_named, [l for l in inside if l in labelled], MARKER_NAMED),
        ):
            x = np.repeat([positions[l] for l in chosen], 2)
            y = np.tile([bottom, top], len(chosen))
            item.setPen(_marker_pen(colour or rgba, width, Qt.DotLine if unreliable else style))
            item.setData(x, y)
        for line in sorted(labelled, key=lambda l: l.wave_vac):
            text = pg.TextItem(
                line.species,
                color=colour or LABEL_COLOUR,
                angle=90,
                anchor=(1, 0.5),
                fill=pg.mkBrush(255, 255, 255, 220),
            )  # the marker does not strike it through
            text.setToolTip(f"{line.species} {line.wave_vac:.2f} Å (vacuum, rest)")
            text.textItem.document().setDocumentMargin(1)  # narrow: labels stay apart
            text.setZValue(20)  # above the data, never under the spectrum
            text.setPos(positions[line], y1)
            self.plot.addItem(text, ignoreBounds=True)
            self.label_items.append(text)
            self.marker_positions[line.species] = positions[line]
        self._place_labels()

    def _place_labels(self) -> None:
        """Keep the labels at the top of the visible y range (in the headroom)."""
        if not self.label_items:
            return
        _x_range, (bottom, top) = self.plot.vb.viewRange()
        y = top - 0.01 * (top - bottom)
        for item in self.label_items:
            item.setPos(item.pos().x(), y)

    # ----------------------------------------------------------------- view
    def reset_view(self) -> None:
        if self.curve is None or self.curve.wave.size == 0:
            self.plot.enableAutoRange()
            return
        self.plot.setXRange(float(self.curve.wave[0]), float(self.curve.wave[-1]), padding=0.01)
        low, high = self.y_range
        if self.label_items:  # room for the vertical line labels above the data
            high += LABEL_HEADROOM * (high - low)
        self.plot.setYRange(low, high, padding=0)

    def value_at(self, wave: float) -> float | None:
        """Flux of the pixel nearest to a wavelength (cursor readout)."""
        if self.curve is None or self.curve.wave.size == 0:
            return None
        index = int(np.clip(np.searchsorted(self.curve.wave, wave), 0, self.curve.wave.size - 1))
        if index > 0 and abs(self.curve.wave[index - 1] - wave) < abs(self.curve.wave[index] - wave):
            index -= 1
        return float(self.curve.flux[index])


class LegendSample(pg.ItemSample):
    """A legend sample that only shows what an item looks like: clicking it does not
    hide anything (the samples stand for items on both arms)."""

    def mouseClickEvent(self, event) -> None:
        event.accept()


def legend_proxies() -> dict[str, pg.GraphicsObject]:
    """Stand-ins drawn in the inspector's legend, styled as the plots draw them."""
    return {
        "error": pg.BarGraphItem(
            x0=[], x1=[], y0=[], y1=[], brush=pg.mkBrush(90, 90, 90, BAND_ALPHA), pen=pg.mkPen(None)
        ),
        "mask": pg.BarGraphItem(x0=[], x1=[], y0=[], y1=[], brush=pg.mkBrush(*MASK_BRUSH), pen=pg.mkPen(None)),
        "marker": pg.PlotDataItem([], [], pen=_marker_pen(*MARKER_NAMED)),
    }


def marker_legend(unreliable: bool, rest_frame: bool) -> tuple[str, object]:
    """(legend text, pen) of the line markers as they are drawn now."""
    if rest_frame:
        return "spectral line (rest frame)", _marker_pen(*MARKER_NAMED)
    if unreliable:
        return "spectral line (RV unreliable)", _marker_pen(MARKER_UNRELIABLE, 1, Qt.DotLine)
    return "spectral line (at the measured RV)", _marker_pen(*MARKER_NAMED)


class BandItem(QGraphicsPathItem):
    """The filled region between two curves, as one closed polygon built with numpy.

    pyqtgraph's FillBetweenItem joins its curves' QPainterPaths point by point through
    Qt's polygon API: 0.5-0.7 s of GUI-thread time per 3,600-pixel arm, the app's longest
    stall at start-up. arrayToQPath builds the same outline in a few milliseconds."""

    def __init__(self, brush):
        super().__init__()
        self.setBrush(brush)
        self.setPen(pg.mkPen(None))

    def set_band(self, x: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        outline_x = np.concatenate([x, x[::-1]]).astype(np.float64)
        outline_y = np.concatenate([high, low[::-1]]).astype(np.float64)
        path = pg.arrayToQPath(outline_x, outline_y, connect="all")
        path.closeSubpath()
        self.setPath(path)

    def clear(self) -> None:
        self.setPath(QPainterPath())


def _marker_pen(rgba, width, style):
    return pg.mkPen(rgba, width=width, style=style)


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Non-finite values replaced by linear interpolation (for drawing the band only)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.all() or not finite.any():
        return np.nan_to_num(values)
    index = np.arange(values.size)
    return np.interp(index, index[finite], values[finite])
