"""Run an engine job in a separate process (multiprocessing, spawn), so cancelling is
clean and a crash in the job (a segfault, running out of memory) cannot take the app
down. Used for training (and the other long reference-set jobs of the wizard).

The child imports ``module:function`` and calls it with the given keyword arguments
plus ``progress`` (events are sent back through a queue, step events throttled) and
``cancel`` (a multiprocessing Event the engine polls). Qt-free: the GUI polls
:meth:`ProcessJob.poll` from a timer.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue as queue_module
import time
import traceback
from dataclasses import dataclass
from typing import Any

STEP_EVENT_INTERVAL_S = 0.1  # at most ~10 step events per second reach the GUI


@dataclass
class JobMessage:
    kind: str  # "progress" | "done" | "cancelled" | "error" | "crashed"
    payload: Any


class ProcessJob:
    def __init__(self, target: str, kwargs: dict, pass_cancel: bool = True):
        self.target = target
        self.kwargs = dict(kwargs)
        self.pass_cancel = pass_cancel
        context = multiprocessing.get_context("spawn")
        self.queue = context.Queue()
        self.cancel_event = context.Event()
        self.process = context.Process(
            target=_child,
            name=f"spemr-job-{target}",
            args=(target, self.kwargs, self.queue, self.cancel_event, pass_cancel),
            daemon=True,
        )
        self.finished = False

    def start(self) -> "ProcessJob":
        self.process.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop at its next check (the engine checkpoints first)."""
        self.cancel_event.set()

    def kill(self) -> None:
        """Last resort (the job ignored cancel): terminate the process."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def poll(self, max_messages: int = 500) -> list[JobMessage]:
        """Messages that arrived since the last poll; a "crashed" message when the
        process died without saying how it ended."""
        messages = []
        for _ in range(max_messages):
            try:
                kind, payload = self.queue.get_nowait()
            except queue_module.Empty:
                break
            messages.append(JobMessage(kind, payload))
            if kind in ("done", "cancelled", "error"):
                self.finished = True
        if not self.finished and not self.process.is_alive() and self.process.exitcode is not None:
            messages += self._drain_after_exit()
        return messages

    def _drain_after_exit(self) -> list[JobMessage]:
        """The process ended: read what it still sent, else report a crash."""
        messages = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not self.finished:
            try:
                kind, payload = self.queue.get(timeout=0.05)
            except queue_module.Empty:
                continue
            messages.append(JobMessage(kind, payload))
            self.finished = kind in ("done", "cancelled", "error")
        if not self.finished:
            self.finished = True
            messages.append(
                JobMessage("crashed", f"the job process died (exit code {self.process.exitcode}) without finishing")
            )
        return messages

    def join(self, timeout: float | None = None) -> None:
        self.process.join(timeout)


def _child(target: str, kwargs: dict, queue, cancel_event, pass_cancel: bool) -> None:
    """Runs in the job process."""
    from spemr_engine.errors import Cancelled, SpemrError

    last_step = [0.0]

    def progress(event) -> None:
        """Forward a progress event (progress.Event: plain values, it pickles); synth's
        dict becomes a Count here, so the app only ever sees typed events."""
        from spemr_engine.progress import TrainingProgress, from_synthesis

        if isinstance(event, dict):
            event = from_synthesis(event)
        is_step = isinstance(event, TrainingProgress) and not event.epoch_finished
        now = time.monotonic()
        if is_step and now - last_step[0] < STEP_EVENT_INTERVAL_S:
            return
        last_step[0] = now
        queue.put(("progress", event))

    module_name, function_name = target.split(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        extra = {"progress": progress}
        if pass_cancel:
            extra["cancel"] = cancel_event.is_set
        result = function(**kwargs, **extra)
        queue.put(("done", _plain(result)))
    except Cancelled as error:
        queue.put(("cancelled", str(error)))
    except SpemrError as error:
        queue.put(("error", str(error)))
    except BaseException as error:  # report, never hang the GUI waiting
        traceback.print_exc()
        queue.put(("error", f"{type(error).__name__}: {error}"))


def _plain(value):
    """Something picklable without engine classes (paths become strings, NaN stays)."""
    from spemr_engine.io_utils import plain

    return plain(value, for_json=False)
