"""The full FITS header of every HDU of the current file: a list of HDUs and the
header cards of the chosen one, as selectable monospace text with a find box.

Headers are read in a worker (never on the GUI thread); a result that lands after the
user moved to another file is dropped.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from .. import engine_calls
from ..workers import Task


class FitsHeaderView(QWidget):
    headers_loaded = Signal(str)  # path whose headers are now shown (tests wait on it)

    def __init__(self, state, runner, parent=None):
        super().__init__(parent)
        self.state = state
        self.runner = runner
        self.path: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.hdu_list = QListWidget()
        self.hdu_list.currentRowChanged.connect(self._show_hdu)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)  # read-only, still selectable and copyable
        self.text.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.find_edit = QLineEdit()
        self.find_edit.setPlaceholderText("find in header (Enter: next)")
        self.find_edit.returnPressed.connect(self.find_next)
        self.find_edit.textChanged.connect(lambda _text: self.find_next(from_start=True))
        find_button = QPushButton("Find next")
        find_button.clicked.connect(self.find_next)
        self.status_label = QLabel("")
        bar = QHBoxLayout()
        bar.addWidget(self.find_edit, 1)
        bar.addWidget(find_button)
        splitter = QSplitter(Qt.Vertical)
        splitter.addWidget(self.hdu_list)
        splitter.addWidget(self.text)
        splitter.setStretchFactor(1, 4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.status_label)
        layout.addWidget(splitter, 1)
        layout.addLayout(bar)
        state.selection_changed.connect(self.refresh)
        state.file_removed.connect(lambda _index: self.refresh())

    def refresh(self) -> None:
        opened = self.state.current
        path = None if opened is None else str(opened.path)
        if path == self.path:
            return
        self.path = path
        self.headers = []
        self.hdu_list.clear()
        self.text.setPlainText("")
        if path is None:
            self.status_label.setText("")
            return
        self.status_label.setText(f"reading the headers of {opened.name}…")
        task = Task(lambda progress, cancel: engine_calls.read_headers(path), "read headers")
        task.signals.result.connect(lambda headers, p=path: self._on_loaded(p, headers))
        task.signals.failed.connect(lambda message, p=path: self._on_failed(p, message))
        self.runner.start(task)

    def _on_loaded(self, path: str, headers) -> None:
        if path != self.path:
            return  # the user moved on
        self.headers = list(headers)
        self.status_label.setText(f"{len(self.headers)} HDUs — choose one to see all its cards")
        self.hdu_list.addItems([title for title, _text in self.headers])
        if self.headers:
            self.hdu_list.setCurrentRow(0)
        self.headers_loaded.emit(path)

    def _on_failed(self, path: str, message: str) -> None:
        if path == self.path:
            self.status_label.setText(message)

    def _show_hdu(self, row: int) -> None:
        self.text.setPlainText(self.headers[row][1] if 0 <= row < len(self.headers) else "")
        if self.find_edit.text():
            self.find_next(from_start=True)

    def find_next(self, from_start: bool = False) -> bool:
        """Select the next occurrence of the find text (wrapping round); False if none."""
        needle = self.find_edit.text()
        if not needle:
            return False
        if from_start:
            cursor = self.text.textCursor()
            cursor.movePosition(cursor.MoveOperation.Start)
            self.text.setTextCursor(cursor)
        found = self.text.find(needle)
        if not found:  # wrap round
            cursor = self.text.textCursor()
            cursor.movePosition(cursor.MoveOperation.Start)
            self.text.setTextCursor(cursor)
            found = self.text.find(needle)
        self.find_edit.setStyleSheet("" if found else "background: #ffd0d0;")
        return bool(found)
