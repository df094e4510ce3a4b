"""Small widgets shared by several views."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget


def path_row(edit: QLineEdit, pick) -> QWidget:
    """A path field with a "…" button that calls ``pick`` to choose the path."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("…")
    button.setMaximumWidth(30)
    button.clicked.connect(pick)
    layout.addWidget(button)
    return box
