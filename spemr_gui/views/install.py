"""Installs the optional views (sub-model comparison, template, batch, training
wizard) into the main window; each is a separate module so the inspector stays small."""
from __future__ import annotations


def install_views(window) -> None:
    """Add every view's tab and menu entries to a MainWindow."""
    return None
