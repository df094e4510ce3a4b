"""Header metadata of the current file and the selected arm pair, read-only."""

from __future__ import annotations

import math

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem


def metadata_rows(opened, pair) -> list[tuple[str, str]]:
    """(key, value) rows: the file's header metadata, then the selected pair, then
    the reader's warnings (kept visible, never swallowed)."""
    rows = [(key, _text(value)) for key, value in opened.mrs.meta.items()]
    if pair is not None:
        for arm in (pair.blue, pair.red):
            prefix = f"{arm.extname}"
            rows += [
                (f"{prefix} S/N", _text(arm.snr)),
                (f"{prefix} exptime", _text(arm.exptime)),
                (f"{prefix} pixels", str(arm.wave.size)),
                (f"{prefix} masked", str(int(arm.mask.sum()))),
                (f"{prefix} range", f"{arm.wave[0]:.1f}–{arm.wave[-1]:.1f} Å" if arm.wave.size else "-"),
            ]
    for arm in getattr(opened.mrs, "unpaired", []):
        rows.append(("unpaired arm", arm.extname))
    for warning in getattr(opened.mrs, "warnings", []):
        rows.append(("warning", warning))
    return rows


def _text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


class MetadataView(QTableWidget):
    def __init__(self, state, parent=None):
        super().__init__(0, 2, parent)
        self.state = state
        self.setHorizontalHeaderLabels(["key", "value"])
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setAlternatingRowColors(True)
        state.selection_changed.connect(self.refresh)
        state.file_removed.connect(lambda _index: self.refresh())

    def refresh(self) -> None:
        opened = self.state.current
        rows = [] if opened is None else metadata_rows(opened, self.state.current_pair_obj)
        self.setRowCount(len(rows))
        for i, (key, value) in enumerate(rows):
            self.setItem(i, 0, QTableWidgetItem(key))
            self.setItem(i, 1, QTableWidgetItem(value))
