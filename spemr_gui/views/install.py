"""Installs the views beyond the inspector (sub-model comparison, best-fit template,
batch, training wizard) into the main window and wires their background work, so the
main window stays an inspector and each view stays one module."""

from __future__ import annotations

from .. import engine_calls
from ..controller import Request
from ..workers import Task
from .batch import BatchView
from .comparison import ComparisonView
from .template_view import TemplateView
from .wizard import install_training_menu

TEMPLATES_TO_FIND = 10


def install_views(window) -> None:
    """Add every view's tab and menu entries to a MainWindow."""
    window.comparison_view = ComparisonView(window.state)
    window.add_tab(window.comparison_view, "S&ub-models")
    window.template_view = TemplateView(window.state)
    window.add_tab(window.template_view, "&Template")
    window.template_view.templates_requested.connect(lambda: request_templates(window))
    window.tabs.currentChanged.connect(lambda _index: _infer_if_needed(window))
    _install_batch(window)
    _install_wizard(window)


def _infer_if_needed(window) -> None:
    """The comparison and template tabs show a result: compute it when missing."""
    if window.tabs.currentWidget() not in (window.comparison_view, window.template_view):
        return
    busy = window.inference_task is not None and not window.inference_task.is_done()
    if window.state.current_result() is None and window.state.model is not None and not busy:
        window.run_inference()


def request_templates(window) -> Task | None:
    """Find the nearest templates of the current result in a worker."""
    result, model = window.state.current_result(), window.state.model
    view = window.template_view
    if result is None or not result.usable or model is None:
        return None
    request = Request.current(window.state)
    task = Task(
        lambda progress, cancel: engine_calls.find_templates(model, result.prediction, TEMPLATES_TO_FIND), "templates"
    )

    def landed(matches):
        if request is not None and request.is_current(window.state):  # else the user moved on
            view.set_matches(matches)
            window.templates_found.emit()

    task.signals.result.connect(landed)
    task.signals.failed.connect(lambda message: (view.set_matches(message), window.status(message, error=True)))
    return window.runner.start(task)


def _install_batch(window) -> None:
    window.batch_view = BatchView(window)
    window.add_tab(window.batch_view, "&Batch")


def _install_wizard(window) -> None:
    install_training_menu(window)
