"""Side list of open files and their arm pairs (coadd and each exposure) with S/N.
Selecting a pair selects it in the state; the state's selection is mirrored back."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QTreeWidget, QTreeWidgetItem


class FileListView(QTreeWidget):
    close_requested = Signal(int)  # file index (Delete key)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setColumnCount(4)
        self.setHeaderLabels(["spectrum", "S/N blue", "S/N red", "result"])
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.setRootIsDecorated(True)
        self.setUniformRowHeights(True)
        self.setColumnWidth(0, 110)
        self.setMinimumWidth(300)
        # a long file name loses its middle, not the end that tells files apart
        # ("med-58408-TD2…sp01-015.fits"); the tooltip has the full path
        self.setTextElideMode(Qt.ElideMiddle)
        self._mirroring = False
        self.currentItemChanged.connect(self._on_current_changed)
        state.file_added.connect(self._on_file_added)
        state.file_removed.connect(lambda index: self.takeTopLevelItem(index))
        state.selection_changed.connect(self._mirror_selection)
        state.result_changed.connect(self._on_result_changed)
        state.model_changed.connect(self._clear_result_marks)

    def _on_file_added(self, index: int) -> None:
        opened = self.state.files[index]
        top = QTreeWidgetItem([opened.name, "", "", ""])
        top.setToolTip(0, str(opened.path))
        for pair in opened.pairs:
            child = QTreeWidgetItem([pair.label, _snr(pair.snr_blue), _snr(pair.snr_red), ""])
            child.setToolTip(0, f"{pair.extname_blue} / {pair.extname_red}")
            for col in (1, 2, 3):
                child.setTextAlignment(col, Qt.AlignRight | Qt.AlignVCenter)
            top.addChild(child)
        self.addTopLevelItem(top)
        top.setFirstColumnSpanned(True)  # long file names must not hide the S/N columns
        top.setExpanded(True)
        for col in range(1, 4):
            self.resizeColumnToContents(col)

    def _on_current_changed(self, item, _previous) -> None:
        if self._mirroring or item is None:
            return
        file_index = self.indexOfTopLevelItem(item.parent() or item)
        pair_index = 0 if item.parent() is None else item.parent().indexOfChild(item)
        if item.parent() is None and item.childCount() == 0:
            return
        self.state.select(file_index, pair_index)

    def _mirror_selection(self) -> None:
        file_index, pair_index = self.state.current_file, self.state.current_pair
        if file_index is None or file_index >= self.topLevelItemCount():
            return
        top = self.topLevelItem(file_index)
        item = top.child(pair_index) if top.childCount() > pair_index else top
        self._mirroring = True
        try:
            self.setCurrentItem(item)
        finally:
            self.setColumnWidth(0, 110)
        self.setMinimumWidth(300)
        self._mirroring = False

    def _on_result_changed(self, file_index: int, pair_index: int) -> None:
        top = self.topLevelItem(file_index)
        if top is None or top.childCount() <= pair_index:
            return
        result = self.state.files[file_index].results.get(pair_index)
        text = "" if result is None else ("ok" if result.usable else "flagged")
        top.child(pair_index).setText(3, text)

    def _clear_result_marks(self) -> None:
        for i in range(self.topLevelItemCount()):
            top = self.topLevelItem(i)
            for j in range(top.childCount()):
                top.child(j).setText(3, "")

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key_Delete and self.state.current_file is not None:
            self.close_requested.emit(self.state.current_file)
            return
        super().keyPressEvent(event)


def _snr(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1f}"
