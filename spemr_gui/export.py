"""Figure export: the whole pyqtgraph scene of a view (all its plots) as PNG or SVG.

SVG is rendered with Qt's own QSvgGenerator rather than pyqtgraph's SVGExporter, which
fails to re-parse the path data Qt 6.11 writes for some items."""

from __future__ import annotations

from pathlib import Path

from spemr_engine.errors import SpemrError

RASTER = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def export_scene(graphics, path: str | Path, width: int = 1600) -> Path:
    """Write a GraphicsLayoutWidget's scene to path (.png or .svg)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".svg":
        _export_svg(graphics, path)
    elif suffix in RASTER:
        from pyqtgraph.exporters import ImageExporter

        exporter = ImageExporter(_scene_item(graphics))
        exporter.parameters()["width"] = width
        exporter.export(str(path))
    else:
        raise SpemrError(f"{path.name}: unknown figure format {suffix or '(none)'} (use .png or .svg)")
    return path


def _scene_item(graphics):
    """The item holding every plot of a view: a GraphicsLayoutWidget's central layout,
    or a PlotWidget's plot."""
    return graphics.ci if hasattr(graphics, "ci") else graphics.getPlotItem()


def _export_svg(graphics, path: Path) -> None:
    from PySide6.QtCore import QRectF, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    source = _scene_item(graphics).sceneBoundingRect()
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(QSize(int(source.width()), int(source.height())))
    generator.setViewBox(QRectF(0, 0, source.width(), source.height()))
    generator.setTitle("spemr figure")
    painter = QPainter(generator)
    try:
        graphics.scene().render(painter, QRectF(0, 0, source.width(), source.height()), source)
    finally:
        painter.end()
