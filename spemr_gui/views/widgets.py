"""Small widgets shared by several views."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject
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


class RedrawWhenShown(QObject):
    """For a tab whose plots cost GUI time (~0.1-0.3 s) that a user on another tab
    would feel: ``changed()`` redraws now when the widget is on screen, else marks it
    stale and it redraws when next shown; ``on_show`` (optional) runs at every show.
    Returns from changed() whether it redrew."""

    def __init__(self, widget: QWidget, redraw: Callable[[], None], on_show: Callable[[], None] | None = None):
        super().__init__(widget)
        self.widget, self.redraw, self.on_show = widget, redraw, on_show
        self.stale = False
        widget.installEventFilter(self)

    def changed(self) -> bool:
        if self.widget.isVisible():
            self.stale = False
            self.redraw()
            return True
        self.stale = True
        return False

    def eventFilter(self, obj, event) -> bool:
        if obj is self.widget and event.type() == QEvent.Show:
            if self.stale:
                self.stale = False
                self.redraw()
            if self.on_show is not None:
                self.on_show()
        return False
