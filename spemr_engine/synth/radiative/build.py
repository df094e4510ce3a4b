"""Build a folder of RT-grid chunks star by star: resumable, parallel, crash-safe.

Layout of OUTDIR:
  rt_<k>.npz         finished chunks (grid.save_chunk; grid.load_directory reads them)
  pending/<name>.npz one finished star not yet in a chunk (float32 flux + its job)
  failed.json        stars that failed in the last run, with the reason (retried next run)
  .lock              held while a run writes the folder

Every file is written under a temporary name and renamed, so a kill leaves only whole
stars and whole chunks. A star is done when its name is in a chunk or in pending/; a
restart skips it and packs pending stars into chunks. Only full chunks are written while
stars are still running; the rest is packed when the run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import signal
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import SpemrError
from ...io_utils import atomic_write, atomic_write_text
from .grid import RtSpectra, save_chunk
from .jobs import GridJob

CHUNK_PATTERN = "rt_{:05d}.npz"


@dataclass
class StarResult:
    """What a worker returns for one task: the star's job and flux, or an error."""

    name: str
    job: GridJob | None = None
    flux: np.ndarray | None = None
    error: str | None = None
    cpu_s: float = 0.0


@dataclass
class BuildSummary:
    total: int
    already: int
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    chunks_written: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    stopped: bool = False


class GridFolder:
    """The chunk folder: what is done, pending stars, packing into chunks."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.pending = self.root / "pending"
        self._in_chunks: set[str] | None = None  # names in chunks, read once per run

    def in_chunks(self) -> set[str]:
        if self._in_chunks is None:
            self._in_chunks = set()
            for path in self.chunks():
                with np.load(path, allow_pickle=False) as d:
                    self._in_chunks.update(str(n) for n in d["names"])
        return self._in_chunks

    def chunks(self) -> list[Path]:
        return sorted(self.root.glob("rt_*.npz"))

    def done_labels(self) -> dict[str, np.ndarray]:
        """name -> labels of every finished star (chunks and pending)."""
        out: dict[str, np.ndarray] = {}
        for path in self.chunks():
            with np.load(path, allow_pickle=False) as d:
                out.update(zip((str(n) for n in d["names"]), d["labels"]))
        for path in sorted(self.pending.glob("*.npz")):
            with np.load(path, allow_pickle=False) as d:
                out[path.stem] = np.asarray(json.loads(str(d["job"]))["labels"], dtype=np.float64)
        return out

    def clean_partial(self) -> None:
        """Files a killed run left half-written (never mistaken for finished ones)."""
        for path in [*self.root.glob("*.part"), *self.pending.glob("*.part")]:
            path.unlink(missing_ok=True)

    def add(self, result: StarResult) -> None:
        if result.flux is None or result.job is None:
            raise ValueError(f"{result.name}: a failed star has no spectrum to add")
        flux, job = result.flux, result.job
        self.pending.mkdir(parents=True, exist_ok=True)
        path = self.pending / f"{result.name}.npz"
        atomic_write(
            path,
            lambda f: np.savez(f, flux=flux.astype(np.float32), job=json.dumps(job.to_dict())),
            binary=True,
            suffix=".part",
        )

    def pack(self, chunk: int, final: bool) -> int:
        """Pending stars into chunks of ``chunk`` (the rest too when ``final``); a chunk is
        renamed into place before its pending files go, and stars already in a chunk
        (a kill between the two) are dropped from pending. Returns chunks written."""
        in_chunks = self.in_chunks()
        files = sorted(self.pending.glob("*.npz"))
        for path in [p for p in files if p.stem in in_chunks]:
            path.unlink()
        files = [p for p in files if p.stem not in in_chunks]
        written = 0
        while len(files) >= chunk or (final and files):
            group, files = files[:chunk], files[chunk:]
            save_chunk(self.root / CHUNK_PATTERN.format(self._next_index()), _stack(group))
            in_chunks.update(p.stem for p in group)
            for path in group:
                path.unlink()
            written += 1
        if final and self.pending.is_dir() and not any(self.pending.iterdir()):
            self.pending.rmdir()
        return written

    def _next_index(self) -> int:
        numbers = [int(p.stem.split("_")[1]) for p in self.chunks()]
        return max(numbers, default=-1) + 1

    @contextlib.contextmanager
    def locked(self):
        """One writer per folder: a second run on it fails at once with one line."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SpemrError(f"{self.root}: another synth-grid run is writing this folder") from None
            yield


def _stack(paths: list[Path]) -> RtSpectra:
    flux, jobs = [], []
    for path in paths:
        with np.load(path, allow_pickle=False) as d:
            flux.append(d["flux"])
            jobs.append(GridJob.from_dict(json.loads(str(d["job"]))))
    vmic, vmac, vsini, resolution = (
        np.array([getattr(j, f) for j in jobs]) for f in ("vmic", "vmac", "vsini", "resolution")
    )
    return RtSpectra(
        np.stack(flux),
        np.stack([j.labels for j in jobs]),
        vmic,
        vmac,
        vsini,
        resolution,
        np.array([j.name for j in jobs], dtype=str),
    )


def check_same_stars(done: dict[str, np.ndarray], jobs: Iterable[GridJob], root: Path) -> None:
    """A folder belongs to one job list: a finished star whose name comes again with
    other labels means another --seed/--widen or job file was pointed at it."""
    for job in jobs:
        if job.name in done and not np.allclose(done[job.name], job.labels, rtol=0, atol=1e-9):
            raise SpemrError(
                f"{root}: star {job.name} there has other labels than in this job list "
                "(another seed, --widen or job file?); use a new folder"
            )


def lower_priority(target: int) -> None:
    """Raise this process's niceness to ``target`` (children inherit it); never lowers it."""
    current = os.nice(0)
    if target > current:
        os.nice(target - current)


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group: the parent handles it and stops the pool.
    # SIGTERM (pool.terminate) unwinds the worker, so the running Turbospectrum child is
    # killed and its scratch folder removed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum, frame):
    raise SystemExit(1)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def build(
    root: str | Path,
    tasks: list,
    work: Callable[..., StarResult],
    *,
    workers: int = 1,
    chunk: int = 50,
    progress: Callable[[BuildSummary], None] | None = None,
    done: set[str] | None = None,
) -> BuildSummary:
    """Run ``work(task)`` for every task (objects with a ``name``) not in ``done``, into
    chunks under ``root``. The caller holds ``GridFolder(root).locked()``."""
    folder = GridFolder(root)
    done = done or set()
    todo = [t for t in tasks if t.name not in done]
    summary = BuildSummary(total=len(tasks), already=len(tasks) - len(todo))
    started = time.monotonic()
    # `kill PID` stops like Ctrl-C (pool terminated, chunks packed); only the main thread may set it.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        with _results(work, todo, workers) as results:
            for result in results:
                _record(folder, summary, result)
                summary.chunks_written += folder.pack(chunk, final=False)
                summary.elapsed_s = time.monotonic() - started
                if progress:
                    progress(summary)
    except KeyboardInterrupt:
        summary.stopped = True
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    summary.chunks_written += folder.pack(chunk, final=not summary.stopped)
    summary.elapsed_s = time.monotonic() - started
    _write_failed(folder.root, summary.failed)
    return summary


def _record(folder: GridFolder, summary: BuildSummary, result: StarResult) -> None:
    summary.cpu_s += result.cpu_s
    if result.error:
        summary.failed[result.name] = result.error
    else:
        folder.add(result)
        summary.done += 1


@contextlib.contextmanager
def _results(work, todo, workers):
    """Results in completion order: in this process for one worker, else a pool that is
    terminated (workers unwound, scratch removed) when the run stops early."""
    if workers <= 1 or len(todo) <= 1:
        yield map(work, todo)
        return
    pool = multiprocessing.get_context("fork").Pool(min(workers, len(todo)), initializer=_worker_init)
    try:
        yield pool.imap_unordered(work, todo)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _write_failed(root: Path, failed: dict[str, str]) -> None:
    path = root / "failed.json"
    if failed:
        atomic_write_text(path, json.dumps(failed, indent=1), suffix=".part")
    else:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------ work functions
def synthesise_job(engine, job: GridJob) -> StarResult:
    """One star through Turbospectrum onto the RT grid. Failures (e.g. Turbospectrum
    stopping on a star) are returned, not raised, so one star never stops a run."""
    from .turbospectrum import synthesise

    try:
        teff, logg, feh, alpha_fe = (float(x) for x in job.atmosphere_params())
        spectrum = synthesise(engine, teff, logg, feh, alpha_fe, job.abundances(), job.vmic)
        return StarResult(job.name, job, spectrum.on_rt_grid(), cpu_s=spectrum.cpu_s)
    except (RuntimeError, ValueError, OSError) as error:
        return StarResult(job.name, error=f"{type(error).__name__}: {error}"[:400])


@dataclass(frozen=True)
class NpzStar:
    """One per-star npz of the reference tools (wave_air, norm, job JSON)."""

    name: str
    path: Path


def npz_stars(directory: str | Path) -> list[NpzStar]:
    """Finished per-star files of a folder (``*.npz``; half-written ``*.part`` are not)."""
    paths = sorted(Path(directory).glob("*.npz"))
    return [NpzStar(p.stem, p) for p in paths]


def import_npz(star: NpzStar) -> StarResult:
    """Read without pickles and put on the RT grid; the job's name is the star's name."""
    from .grid import from_turbospectrum

    try:
        with np.load(star.path, allow_pickle=False) as d:
            job = GridJob.from_dict({**json.loads(str(d["job"])), "name": star.name})
            flux = from_turbospectrum(d["wave_air"], d["norm"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        return StarResult(star.name, error=f"{star.path.name}: {type(error).__name__}: {error}"[:400])
    return StarResult(star.name, job, flux)
