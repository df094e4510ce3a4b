"""Background work for the GUI: anything that may take more than ~100 ms runs here.

A :class:`Task` wraps a plain function ``fn(progress, cancel)`` and runs it on a
thread pool. ``progress(event)`` may be called from the worker thread (it becomes a
queued Qt signal); ``cancel()`` returns True once the user asked to stop, which the
engine's long jobs poll (they raise ``spemr_engine.errors.Cancelled``). Results and
errors come back as signals on the GUI thread, so views never touch worker threads.
"""

from __future__ import annotations

import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from spemr_engine.errors import Cancelled, SpemrError

TaskFunction = Callable[[Callable[[Any], None], Callable[[], bool]], Any]  # fn(progress, cancel)


class TaskSignals(QObject):
    """Signals of one task (a QRunnable cannot carry signals itself)."""

    progress = Signal(object)  # a spemr_engine.progress event
    result = Signal(object)  # whatever the function returned
    failed = Signal(str)  # one-line message for the user
    cancelled = Signal()
    finished = Signal()  # always last, after result/failed/cancelled


class Task(QRunnable):
    """One unit of background work; cancel() is cooperative (the engine polls it)."""

    def __init__(self, fn: TaskFunction, name: str = "task"):
        super().__init__()
        self.setAutoDelete(False)  # Python keeps the reference (see TaskRunner)
        self.fn = fn
        self.name = name
        self.signals = TaskSignals()
        self._cancel = threading.Event()
        self._done = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def is_done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def run(self) -> None:  # worker thread
        try:
            self._run()
        except RuntimeError as error:  # the app closed under us: its signal objects are gone
            if "deleted" not in str(error):
                raise
        finally:
            self._done.set()

    def _run(self) -> None:
        if self._cancel.is_set():  # cancelled while it waited in the pool's queue
            self.signals.cancelled.emit()
            self._done.set()
            self.signals.finished.emit()
            return
        try:
            value = self.fn(self.signals.progress.emit, self._cancel.is_set)
        except Cancelled:
            self.signals.cancelled.emit()
        except SpemrError as error:
            self.signals.failed.emit(one_line(str(error)))
        except Exception as error:  # a bug must not take the app down: show it
            if "Signal source has been deleted" in str(error):
                raise
            traceback.print_exc()
            self.signals.failed.emit(one_line(f"{self.name}: {type(error).__name__}: {error}"))
        else:
            if self._cancel.is_set():
                self.signals.cancelled.emit()
            else:
                self.signals.result.emit(value)
        self._done.set()
        self.signals.finished.emit()


def one_line(text: str, limit: int = 300) -> str:
    """Messages for the status bar are one line (tracebacks go to stderr)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class TaskRunner(QObject):
    """Starts tasks on its own pool and keeps them alive until they finish."""

    busy_changed = Signal(bool)

    def __init__(self, max_threads: int = 2, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max_threads)
        self._active: set[Task] = set()

    def start(self, task: Task) -> Task:
        self._active.add(task)
        task.signals.finished.connect(lambda t=task: self._forget(t))
        self.pool.start(task)
        if len(self._active) == 1:
            self.busy_changed.emit(True)
        return task

    def _forget(self, task: Task) -> None:
        self._active.discard(task)
        if not self._active:
            self.busy_changed.emit(False)

    @property
    def active(self) -> list[Task]:
        return list(self._active)

    def cancel_all(self) -> None:
        for task in list(self._active):
            task.cancel()

    def wait_all(self, timeout_ms: int = 30000) -> bool:
        """Block until every task is done (used when closing the app)."""
        return self.pool.waitForDone(timeout_ms)
