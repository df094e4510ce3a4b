"""Start-up timing trace for ``benchmarks/startup.py`` (off unless SPEMR_GUI_TRACE is set).

With ``SPEMR_GUI_TRACE=FILE`` the app appends one JSON object per line to FILE:
``{"event": ..., "t": time.time(), ...}`` for

- ``shown``: window.show() returned;
- ``exposed``: the window system mapped the main window (first Expose with isExposed());
- ``model_ready`` / ``model_failed``: the background model load landed;
- ``file_opened``: the first file landed in the Files list;
- ``inference_start`` / ``inference_done``: one single-spectrum inference, started by the
  trace once the model and the first file are both in (``SPEMR_GUI_TRACE_INFER=N`` runs
  N of them, each on the next spectrum, then quits the app);
- ``stall``: the longest time the GUI thread did not run its event loop, sampled every
  20 ms from ``exposed`` until the model was ready (a window that is usable answers
  within ~100 ms).

Wall-clock ``time.time()`` so that the benchmark can subtract the moment it launched the
process (interpreter start and every import included).
"""

from __future__ import annotations

import json
import os
import time

from PySide6.QtCore import QEvent, QObject, QTimer


class StartupTrace(QObject):
    def __init__(self, window, path: str, inferences: int = 0):
        super().__init__(window)
        self.window = window
        self.path = path
        self.inferences_left = inferences
        self._exposed = False
        self._model = False
        self._file = False
        self._infer_t0 = 0.0
        self._last_tick = 0.0
        self.max_stall = 0.0
        self._ticker = QTimer(self)
        self._ticker.setInterval(20)
        self._ticker.timeout.connect(self._tick)
        window.model_loaded.connect(lambda _p: self._on_model("model_ready"))
        window.model_failed.connect(lambda message: self._on_model("model_failed", message))
        window.file_opened.connect(self._on_file)
        window.inference_finished.connect(self._on_inferred)
        window.inference_failed.connect(lambda message: self._on_inferred(-1, -1, message))

    def write(self, event: str, **extra) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"event": event, "t": time.time(), **extra}) + "\n")

    def shown(self) -> None:
        self.write("shown")
        handle = self.window.windowHandle()
        if handle is not None:
            handle.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if (
            not self._exposed
            and event.type() == QEvent.Expose
            and self.window.windowHandle() is not None
            and self.window.windowHandle().isExposed()
        ):
            self._exposed = True
            self.write("exposed")
            self._last_tick = time.perf_counter()
            self._ticker.start()
        return False

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_stall = max(self.max_stall, now - self._last_tick)
        self._last_tick = now

    def _on_model(self, event: str, message: str = "") -> None:
        if self._model:
            return
        self._model = True
        self._tick()
        self._ticker.stop()
        self.write("stall", seconds=round(self.max_stall, 3))
        self.write(event, **({"message": message} if message else {}))
        self._maybe_infer()

    def _on_file(self, index: int) -> None:
        if not self._file:
            self._file = True
            self.write("file_opened")
            self._maybe_infer()

    def _maybe_infer(self) -> None:
        if not (self._model and self._file and self.inferences_left > 0):
            return
        self._start_inference()

    def _start_inference(self) -> None:
        self._infer_t0 = time.time()
        busy = self.window.inference_task is not None and not self.window.inference_task.is_done()
        if busy:  # "run inference on open" already started it: time that one
            self.write("inference_start", auto=True)
            return
        self.write("inference_start")
        if self.window.run_inference() is None:
            self.write("inference_failed", message="could not start")
            self.inferences_left = 0
            self.window.close()

    def _on_inferred(self, _file: int, _pair: int, message: str = "") -> None:
        if self.inferences_left <= 0 or not self._infer_t0:
            return
        self.write(
            "inference_done" if not message else "inference_failed",
            seconds=round(time.time() - self._infer_t0, 3),
            message=message,
        )
        self.inferences_left -= 1
        if self.inferences_left > 0:
            state = self.window.state
            opened = state.current
            if opened is not None:  # the next spectrum of the file (or the same one again)
                pair = (state.current_pair + 1) % len(opened.pairs)
                opened.forget_computed(pair)
                state.select(state.current_file, pair)
            QTimer.singleShot(0, self._start_inference)
        else:
            self.write("done")
            QTimer.singleShot(0, self.window.close)


def install_from_environment(window):
    """A StartupTrace when SPEMR_GUI_TRACE is set, else None."""
    path = os.environ.get("SPEMR_GUI_TRACE")
    if not path:
        return None
    return StartupTrace(window, path, int(os.environ.get("SPEMR_GUI_TRACE_INFER", "0") or 0))
