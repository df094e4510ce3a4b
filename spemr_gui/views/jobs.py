"""Qt side of :mod:`spemr_gui.process_job`: a timer polls the job process and turns
its messages into signals on the GUI thread."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from ..process_job import ProcessJob

POLL_MS = 100


class JobRunner(QObject):
    progress = Signal(object)  # a spemr_engine.progress event
    done = Signal(object)
    cancelled = Signal(str)
    failed = Signal(str)  # an engine error, or the process crashed

    def __init__(self, target: str, kwargs: dict, parent=None):
        super().__init__(parent)
        self.job = ProcessJob(target, kwargs)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)

    def start(self) -> "JobRunner":
        self.job.start()
        self.timer.start()
        return self

    def cancel(self) -> None:
        self.job.cancel()

    def is_running(self) -> bool:
        return self.timer.isActive()

    def stop(self, wait_s: float = 10.0) -> None:
        """Cancel, give the job time to checkpoint, then make sure it is gone."""
        if not self.is_running():
            return
        self.job.cancel()
        self.job.join(wait_s)
        self.job.kill()
        self.timer.stop()

    def _poll(self) -> None:
        for message in self.job.poll():
            if message.kind == "progress":
                self.progress.emit(message.payload)
                continue
            self.timer.stop()
            self.job.join(2)
            if message.kind == "done":
                self.done.emit(message.payload)
            elif message.kind == "cancelled":
                self.cancelled.emit(str(message.payload))
            else:
                self.failed.emit(str(message.payload))
            return
