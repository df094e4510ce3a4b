"""Every failure since the app started, with its time, file and reason: the status bar
shows only the latest message, and the next one overwrites it (issue 12, item 7)."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

COLUMNS = ("time", "file", "reason")


def split_message(message: str) -> tuple[str, str]:
    """Engine errors read "<file name>: <problem>" (spemr_engine.errors); other messages
    have no file."""
    head, sep, tail = message.partition(": ")
    if sep and head and " " not in head.strip() and len(head) < 200:
        return head.strip(), tail.strip()
    return "", message.strip()


class LogView(QTableWidget):
    changed = Signal(int)  # number of entries

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setWordWrap(True)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.Interactive)
        header.setSectionResizeMode(2, QHeaderView.Stretch)
        self.setColumnWidth(1, 120)
        self.entries: list[tuple[str, str, str]] = []

    def add(self, message: str, file: str | None = None) -> None:
        name, reason = split_message(message)
        if file:
            name = file
        stamp = time.strftime("%H:%M:%S")
        self.entries.append((stamp, name, reason))
        row = self.rowCount()
        self.insertRow(row)
        for col, text in enumerate((stamp, name, reason)):
            item = QTableWidgetItem(text)
            item.setToolTip(message)
            item.setTextAlignment(Qt.AlignLeft | Qt.AlignTop)
            self.setItem(row, col, item)
        self.resizeRowToContents(row)
        self.scrollToBottom()
        self.changed.emit(len(self.entries))
