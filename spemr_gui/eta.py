"""Time left in a training run, from the engine's progress events (Qt-free).

The run is members x networks jobs of pre-training (``epochs`` each) and, per job,
one fine-tuning per region (``finetune_epochs`` each). The pace of each stage is the
measured wall time of its finished epochs (validation included); until a fine-tuning
epoch has finished, a fine-tuning epoch is assumed to cost a pre-training one (they
run on a region's subset and train fc1 only, so the first estimate is on the high
side). A resumed run counts only what it sees done, so its first estimate is high too.
"""

from __future__ import annotations

import time
from typing import Callable

from spemr_engine.progress import TrainingProgress


class TrainingEta:
    def __init__(
        self,
        members: int,
        networks: int,
        regions: int,
        epochs: int,
        finetune_epochs: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.jobs = members * networks
        self.total = {"pretrain": self.jobs * epochs, "finetune": self.jobs * regions * finetune_epochs}
        self.clock = clock
        self.started = clock()
        self.last_end = self.started
        self.done: dict[tuple, int] = {}  # job -> epochs finished
        self.seconds = {"pretrain": [], "finetune": []}  # wall time of finished epochs
        self.current: tuple | None = None  # (stage, fraction of its epoch done)

    def update(self, event: TrainingProgress) -> None:
        stage = event.stage
        if stage not in self.total:
            return
        job, epoch = event.job, event.epoch
        now = self.clock()
        if event.epoch_finished:
            if epoch > self.done.get(job, 0):
                self.seconds[stage].append(now - self.last_end)
            self.done[job] = max(self.done.get(job, 0), epoch)
            self.last_end = now
            self.current = None
        else:
            self.done[job] = max(self.done.get(job, 0), epoch - 1)
            n_steps = max(event.n_steps, 1)
            self.current = (stage, min(event.step / n_steps, 1.0))

    def _epoch_seconds(self, stage: str) -> float | None:
        measured = self.seconds[stage] or self.seconds["pretrain"]
        if measured:
            return sum(measured[-5:]) / len(measured[-5:])
        if self.current is not None and self.current[1] > 0:  # within the first epoch
            return (self.clock() - self.last_end) / self.current[1]
        return None

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float | None:
        """Seconds left (None until the pace can be measured)."""
        left = 0.0
        for stage, total in self.total.items():
            done = sum(n for job, n in self.done.items() if job[0] == stage)
            epochs_left = max(total - done, 0)
            if self.current is not None and self.current[0] == stage and epochs_left:
                epochs_left -= self.current[1]
            if epochs_left <= 0:
                continue
            pace = self._epoch_seconds(stage)
            if pace is None:
                return None
            left += epochs_left * pace
        return left

    def elapsed_text(self) -> str:
        return f"elapsed {_duration(self.elapsed())}"

    def text(self) -> str:
        left = self.remaining()
        estimate = "estimating the time left…" if left is None else f"about {_duration(left)} left"
        return f"{self.elapsed_text()} · {estimate} (then a short evaluation)"


def _duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
