"""Batch labelling through the Batch tab (engine run_catalog in a worker): a folder
with a corrupt file gives a flagged row while the rest complete; cancel, then a later
run resumes; the event loop keeps ticking during a batch (latency measured)."""

from __future__ import annotations

import os
import time

import pytest
from PySide6.QtCore import Qt, QTimer

from spemr_engine.config import assets_dir


@pytest.fixture
def batch_folder(tmp_path):
    """Two shipped samples (one in a sub-folder: the search is recursive) and one
    corrupt file."""
    samples = sorted((assets_dir() / "samples").glob("med-*.fits*"))[:2]
    assert len(samples) == 2, "assets/samples should ship sample spectra"
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    os.symlink(samples[0], folder / samples[0].name)
    os.symlink(samples[1], folder / "nested" / samples[1].name)
    (folder / "med-00000-broken_sp01-001.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    return folder, len(samples) + 1


@pytest.fixture
def batch_view(window, random_bundle, batch_folder, tmp_path):
    view = window.batch_view
    folder, _ = batch_folder
    view.add_inputs([str(folder)])
    view.model_path.setText(str(random_bundle))
    view.output.setText(str(tmp_path / "catalog.csv"))
    view.device.setCurrentText("cpu")
    window.tabs.setCurrentWidget(view)
    return view


class LoopLatency:
    """Records the largest gap between ticks of a 10 ms QTimer (UI responsiveness)."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.max_gap = 0.0

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()


def test_batch_flags_the_corrupt_file_and_completes_the_rest(qtbot, batch_view, batch_folder):
    _, n_files = batch_folder
    with LoopLatency() as latency:
        with qtbot.waitSignal(batch_view.run_finished, timeout=120000):
            assert batch_view.start() is not None
            # start() hands the run to a worker and returns at once: the GUI thread is free
            assert batch_view.is_running() and batch_view.progress.value() < n_files
    # The event-loop gap is printed, not asserted: a timing depends on the machine's load
    # (speed targets live in benchmarks/); the assertion above is the behaviour.
    print(f"\nbatch: max event-loop gap {latency.max_gap * 1000:.0f} ms")
    rows = batch_view.model.rows
    assert len(rows) == n_files
    broken = [r for r in rows if "broken" in str(r.get("source", ""))]
    assert len(broken) == 1 and "file_error" in broken[0]["flags"] and broken[0]["error"]
    good = [r for r in rows if r not in broken]
    assert all(r["Teff[K]"] is not None for r in good)
    assert batch_view.progress.value() == batch_view.progress.maximum() == n_files
    assert "RANDOM" in batch_view.caveat.text()
    # the Kiel diagram shows the labelled stars
    x, _y = batch_view.scatter.getData()
    assert len(x) == len(good)
    # sorting by Teff puts numbers in numeric order
    column = batch_view.model.columns.index("Teff[K]")
    batch_view.table.sortByColumn(column, Qt.AscendingOrder)
    values = [batch_view.proxy.index(i, column).data(Qt.UserRole) for i in range(len(good))]
    assert values == sorted(values)


def test_cancel_then_a_later_run_resumes(qtbot, batch_view, batch_folder, tmp_path):
    _, n_files = batch_folder
    failures = []
    batch_view.run_failed.connect(failures.append)
    with qtbot.waitSignal(batch_view.run_cancelled, timeout=120000):
        batch_view.start()
        batch_view.cancel()
    assert batch_view.start_button.isEnabled() and not batch_view.cancel_button.isEnabled()
    assert not (tmp_path / "catalog.csv").exists()
    summaries = []
    batch_view.run_finished.connect(summaries.append)
    assert batch_view.start() is not None
    qtbot.waitUntil(lambda: bool(summaries or failures), timeout=120000)
    assert failures == []
    summary = summaries[0]
    assert summary.n_inputs == n_files
    assert len(batch_view.model.rows) == n_files
    exported = batch_view.export(tmp_path / "exported.csv")
    assert len(exported.read_text().splitlines()) == n_files + 1
