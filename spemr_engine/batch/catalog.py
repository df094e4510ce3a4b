"""Survey-scale catalogs: label a folder, a glob, a file list or a whole data release.

``run_catalog`` is the engine's batch entry point (the CLI's ``spemr catalog`` and the
GUI call it). Reading and preprocessing run in worker processes (they are CPU-bound
and need no model); inference runs batched in the calling process on the chosen
device (one model in memory, large batches); results are committed in crash-safe
chunks by :mod:`spemr_engine.batch.catalog_store`. Memory stays bounded: at most a few tasks
are in flight, at most one inference batch is buffered, and at most one chunk of rows
waits to be written.

Every input gets rows: a file that cannot be read gets one row with ``flags`` =
``file_error`` and the reason in ``error``; a spectrum that cannot be measured gets
NaN labels and its quality flags. Nothing is dropped silently.

This module must stay importable without torch (worker processes import it); torch
arrives only through the lazily imported inference code in the main process.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Sequence

from . import catalog_rows
from .catalog_store import (
    RunFolder,
    TableSchema,
    atomic_write_binary,
    output_format,
    require_pyarrow,
    write_table,
)
from ..errors import Cancelled, SpemrError, display_name
from ..progress import ASSEMBLING, DONE, LABELLING, CatalogCallback, CatalogProgress
from ..run_manifest import RunManifest

FITS_NAME = re.compile(r"\.(fits|fit|fts)(\.gz|\.bz2|\.fz)?$", re.IGNORECASE)
GLOB_CHARS = re.compile(r"[*?\[]")
MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux: a longer line of a file list is not a path
EXPOSURE_CHOICES = ("coadd", "all")
DEFAULT_CHUNK_ROWS = 2000
DEFAULT_BATCH_SIZE = 256
COMMIT_INTERVAL_S = 30.0
# Below this many input files, starting worker processes (each imports numpy, scipy and
# astropy: seconds) costs more than it saves; workers=None then reads in-process.
SMALL_RUN_FILES = 48


# =============================================================== input discovery
def discover_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Input FITS paths from folders (recursive), globs and text lists, sorted, unique.

    A file whose name looks like FITS is an input; any other file is a list of paths,
    one per line (``#`` comments, relative paths taken from the list's folder). Paths
    a list names but that do not exist are kept: they get a ``file not found`` row.
    """
    if not inputs:
        raise SpemrError("catalog: no inputs given")
    found: set[str] = set()
    for item in inputs:
        found.update(_expand(str(item)))
    return sorted(found)


def _input_path(path: Path) -> str:
    """A FITS-named entry as an input. A FIFO, a device (a link to /dev/zero) or a broken
    link is kept, not resolved, so that its row names it and says why it cannot be read:
    skipping it silently hid it, and an explicit one was reported as missing."""
    return str(path.resolve()) if path.is_file() else os.path.abspath(path)


def _expand(item: str) -> list[str]:
    path = Path(item).expanduser()
    if path.is_dir():
        files = [_input_path(p) for p in path.rglob("*") if FITS_NAME.search(p.name) and not p.is_dir()]
        if not files:
            raise SpemrError(f"{item}: folder holds no FITS files (*.fits, *.fits.gz)")
        return files
    if path.is_file():
        return [str(path.resolve())] if FITS_NAME.search(path.name) else _read_list(path)
    if os.path.lexists(path) and FITS_NAME.search(path.name):
        return [_input_path(path)]  # a FIFO, device or broken link: its row says why it is not read
    if GLOB_CHARS.search(item):
        matches = [str(Path(m).resolve()) for m in glob.glob(str(path), recursive=True) if Path(m).is_file()]
        if not matches:
            raise SpemrError(f"{item}: no files match this pattern")
        return matches
    raise SpemrError(f"{item}: no such file or folder")


def _read_list(path: Path) -> list[str]:
    """Paths, one per line. Read as bytes: a path that is not UTF-8 (a file name's bytes)
    is kept as Python keeps such names (surrogateescape), so one odd name no longer
    refuses the whole list; NUL bytes (never in a path) or a line longer than PATH_MAX
    mean it is no list (a 50 MB line became one 'path' and took 1.6 GB)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SpemrError(
            f"{display_name(path)}: neither a FITS file nor a readable text list of paths ({error.strerror or error})"
        ) from None
    if b"\0" in data:
        raise SpemrError(f"{display_name(path)}: neither a FITS file nor a text list of paths (it holds NUL bytes)")
    entries = []
    for number, line in enumerate(data.decode("utf-8", "surrogateescape").splitlines(), start=1):
        if len(line) > MAX_PATH_LENGTH:
            raise SpemrError(
                f"{display_name(path)}: line {number} is {len(line)} characters long: "
                "not a path (a file list holds one path per line)"
            )
        entry = line.strip()
        if entry and not entry.startswith("#"):
            entries.append(entry)
    if not entries:
        raise SpemrError(f"{display_name(path)}: the file list is empty")
    return [str((path.parent / Path(e).expanduser()).resolve()) for e in entries]


# ================================================================ run control
class Control:
    """Progress, pause and cancel for one run (callables or threading.Event)."""

    def __init__(self, progress=None, cancel=None, pause=None):
        self._progress = progress
        self._cancel = cancel
        self._pause = pause

    @staticmethod
    def _asked(signal) -> bool:
        if signal is None:
            return False
        if isinstance(signal, threading.Event):
            return signal.is_set()
        return bool(signal())

    def cancelled(self) -> bool:
        return self._asked(self._cancel)

    def paused(self) -> bool:
        return self._asked(self._pause)

    def wait_while_paused(self, on_pause: Callable[[], None] | None = None) -> None:
        """Block while paused; cancel still works during a pause."""
        notified = False
        while self.paused() and not self.cancelled():
            if not notified and on_pause:
                on_pause()
                notified = True
            time.sleep(0.1)

    def report(self, event: CatalogProgress) -> None:
        if self._progress is not None:
            self._progress(event)


# ================================================================== summary
@dataclass
class CatalogSummary:
    """What a run did. ``nothing_to_do`` is True when the catalog was already finished."""

    output: str
    n_inputs: int
    n_files_done_now: int
    n_files_resumed: int
    n_rows: int
    flag_counts: dict[str, int]
    elapsed_s: float
    spectra_per_s: float
    model_trained_on: str
    nothing_to_do: bool = False
    columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(vars(self))

    def lines(self) -> list[str]:
        """Human summary for the CLI."""
        if self.nothing_to_do:
            return [f"{self.output}: already complete ({self.n_rows} rows); nothing to do"]
        flags = ", ".join(f"{k}: {v}" for k, v in sorted(self.flag_counts.items())) or "none"
        return [
            f"{self.output}: {self.n_rows} rows from {self.n_inputs} files "
            f"({self.n_files_done_now} labelled now, {self.n_files_resumed} resumed)",
            f"flags: {flags}",
            f"time: {self.elapsed_s:.1f} s, {self.spectra_per_s:.1f} spectra/s",
        ]


# ================================================================= the run
@dataclass
class _Settings:
    inputs: list[str]
    output: Path
    fmt: str
    exposures: str
    rv_catalog: str | None
    model_path: str
    device: str
    workers: int
    chunk_rows: int
    batch_size: int
    files_per_task: int
    threads: int | None


def run_catalog(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    model=None,
    exposures: str = "coadd",
    rv_catalog: str | os.PathLike | None = None,
    device: str = "auto",
    workers: int | None = None,
    resume: bool = False,
    chunk_size: int = DEFAULT_CHUNK_ROWS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    files_per_task: int = 4,
    progress: CatalogCallback | None = None,
    cancel=None,
    pause=None,
    cluster: str | None = None,
    overwrite: bool = False,
    threads: int | None = None,
) -> CatalogSummary:
    """Label every spectrum of ``inputs`` into ``output`` (.fits, .parquet or .csv).

    model: a bundle folder, a loaded ModelBundle, or None for the default model.
    workers: reading/preprocessing processes (0 = in this process; None: see
    default_workers, and 0 for fewer than SMALL_RUN_FILES inputs).
    threads: torch threads for inference in this process (None: every usable core; a
    resumed run keeps the interrupted run's value, because torch's float results depend
    on the thread count).
    resume: continue an interrupted run (the same inputs and settings).
    cluster: "dask://HOST:PORT" or "local:N" runs on Dask (see spemr_engine.batch.distributed).
    progress(event): a progress.CatalogProgress (phase "labelling" | "assembling" | "done",
    files and spectra done, rate, ETA, and while labelling the rows just labelled).
    pause: a callable or threading.Event; while set, no new work starts.
    Raises Cancelled (keeping what was committed) when ``cancel`` asks to stop.
    """
    if exposures not in EXPOSURE_CHOICES:
        raise SpemrError(f"catalog: --exposures must be one of {', '.join(EXPOSURE_CHOICES)}")
    output = Path(output).expanduser().resolve()
    fmt = output_format(output)
    if fmt == "parquet":
        require_pyarrow(output)
    bundle = resolve_model(model)
    found = discover_inputs(inputs)
    if str(output) in found:  # --overwrite replaced the spectrum with the catalog
        raise SpemrError(f"{display_name(output)}: is one of the input files; choose another output name")
    if workers is None:
        workers = 0 if len(found) < SMALL_RUN_FILES else default_workers(device)
    settings = _Settings(
        inputs=found,
        output=output,
        fmt=fmt,
        exposures=exposures,
        rv_catalog=str(Path(rv_catalog).resolve()) if rv_catalog else None,
        model_path=str(bundle.path),
        device=device,
        workers=max(0, int(workers)),
        chunk_rows=max(1, int(chunk_size)),
        batch_size=max(1, int(batch_size)),
        files_per_task=max(1, int(files_per_task)),
        threads=None if threads is None else max(1, int(threads)),
    )
    control = Control(progress, cancel, pause)
    columns = catalog_rows.columns(bundle)
    folder = RunFolder(output)
    manifest = RunManifest(folder.run_file, _content_settings(settings, bundle, columns), section="settings")
    if not overwrite and folder.is_finished(manifest):
        return _already_done(folder, settings, bundle, columns)
    _check_start(folder, output, resume, overwrite, manifest)
    folder.open()
    try:
        return _run(folder, settings, bundle, columns, manifest, control, resume, cluster)
    finally:
        folder.close()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: Slurm, taskset, containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers(device: str = "auto") -> int:
    """Reading/preprocessing processes when the caller does not say.

    On CPU about half the cores: preprocessing runs at ~50-110 spectra/s per core, the
    paper model at ~40 spectra/s per torch thread, so half the cores keep the model fed,
    and the model's threads take the rest (and any core a worker leaves idle). With CUDA
    the model needs no cores: all but one preprocess."""
    from ..model.inference import resolve_device

    cores = usable_cores()
    if resolve_device(device).type == "cuda":
        return max(1, cores - 1)
    return max(1, cores // 2)


def default_threads() -> int:
    """Torch threads for inference: every usable core. Measured on a dedicated 2-core
    machine (paper model, one worker): 2 threads gave 25 spectra/s end to end, 1 thread
    14, because the worker idles whenever it has prepared enough and the model then has
    both cores. (On a machine crowded by other jobs, fewer threads can be faster:
    pass ``threads``.)"""
    return usable_cores()


def resolve_model(model):
    """A ModelBundle from a path, a bundle, or the default model (imports torch lazily);
    ModelBundleError (one line) when there is none."""
    from ..api import load_model
    from ..model.bundle import ModelBundle

    return model if isinstance(model, ModelBundle) else load_model(model)


def _content_settings(settings: _Settings, bundle, columns: list[str]) -> dict:
    """Everything that changes the table's content, down to float rounding: the batch
    shape and the device change the last bits of torch's results (see Labeller); the
    number of workers and the chunking do not."""
    from ..model.inference import resolve_device

    listing = os.fsencode("\n".join(settings.inputs))  # names need not be UTF-8
    return {
        "inputs_sha256": hashlib.sha256(listing).hexdigest(),
        "n_inputs": len(settings.inputs),
        "format": settings.fmt,
        "exposures": settings.exposures,
        "columns": columns,
        "rv_catalog": _file_identity(settings.rv_catalog),
        "model": _model_identity(bundle),
        "batch_size": settings.batch_size,
        "device": resolve_device(settings.device).type,
    }


def _file_identity(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise SpemrError(f"{Path(path).name}: cannot read the RV catalog ({error.strerror or error})") from None


def _model_identity(bundle) -> dict:
    weights = bundle.weights_path
    try:
        stat = weights.stat()
        weights_id = [stat.st_size, stat.st_mtime_ns]
    except OSError:
        weights_id = None
    manifest = hashlib.sha256(repr(sorted(bundle.manifest.items())).encode()).hexdigest()
    return {"path": str(bundle.path), "manifest": manifest, "weights": weights_id}


def _check_start(folder: RunFolder, output: Path, resume: bool, overwrite: bool, manifest: RunManifest) -> None:
    """Refuse to mix runs: an interrupted run needs --resume, a foreign output --overwrite."""
    if folder.in_use():
        raise SpemrError(
            f"{output.name}: another spemr catalog run is writing it now "
            f"(its run folder {folder.root.name} is locked); wait for it to finish"
        )
    if overwrite:
        return
    changed = manifest.changes(folder.read_run())
    if changed is None:
        changed = ["no run record"]
    has_chunks = bool(folder.chunk_infos()) if folder.chunks_dir.exists() else False
    if resume and has_chunks and changed:
        raise SpemrError(
            f"{output.name}: cannot resume: the interrupted run used other "
            f"inputs or settings ({', '.join(changed)}; same inputs, --exposures, --model, "
            "--rv-catalog and --batch-size are needed; or start again with --overwrite)"
        )
    if not resume and has_chunks:
        raise SpemrError(
            f"{output.name}: an interrupted run exists in {folder.root.name}; "
            "continue it with --resume or start again with --overwrite"
        )
    if output.exists():
        raise SpemrError(f"{output.name}: exists (from another run); choose another name or pass --overwrite")


def _already_done(folder: RunFolder, settings: _Settings, bundle, columns) -> CatalogSummary:
    run = folder.read_run() or {}
    summary = run.get("summary", {})
    return CatalogSummary(
        output=str(settings.output),
        n_inputs=len(settings.inputs),
        n_files_done_now=0,
        n_files_resumed=len(settings.inputs),
        n_rows=int(summary.get("n_rows", 0)),
        flag_counts=dict(summary.get("flag_counts", {})),
        elapsed_s=0.0,
        spectra_per_s=0.0,
        model_trained_on=bundle.trained_on,
        nothing_to_do=True,
        columns=columns,
    )


def _run(
    folder: RunFolder,
    settings: _Settings,
    bundle,
    columns,
    manifest: RunManifest,
    control: Control,
    resume: bool,
    cluster: str | None,
) -> CatalogSummary:
    started = time.monotonic()
    record = manifest.record(
        state="running",
        output=str(settings.output),
        n_inputs=len(settings.inputs),
        model=settings.model_path,
        exposures=settings.exposures,
    )
    existing = folder.read_run()
    continuing = resume and manifest.changes(existing) == []
    existing = existing or {}
    recorded_threads = existing.get("inference_threads") if continuing else None
    if recorded_threads and settings.threads is not None and int(recorded_threads) != settings.threads:
        raise SpemrError(
            f"{settings.output.name}: cannot resume with --threads {settings.threads}: "
            f"the interrupted run used {recorded_threads}, and torch's float results "
            f"depend on it (resume with --threads {recorded_threads} or without "
            "--threads, or start again with --overwrite)"
        )
    if not continuing:
        folder.clear()
    if settings.threads is None:
        recorded = existing.get("inference_threads") if continuing else None
        settings.threads = int(recorded) if recorded else default_threads()
    record["inference_threads"] = settings.threads
    folder.write_run(record)
    done = folder.done_inputs() if resume else set()
    pending = [
        unit
        for unit in work_units(settings.inputs, settings.exposures, settings.batch_size)
        if not all(path in done for path in unit)
    ]
    n_resumed = len(settings.inputs) - sum(len(unit) for unit in pending)
    tracker = _Tracker(control, len(settings.inputs), n_resumed, started)
    committer = _Committer(folder, columns, settings.chunk_rows, tracker)
    if pending:
        results = _results(pending, settings, bundle, control, cluster)
        try:
            for groups, unit_complete in results:
                committer.add(groups, unit_complete)
                if control.cancelled():
                    break
            committer.flush()
        finally:
            results.close()
        if control.cancelled():
            raise Cancelled(
                f"{settings.output.name}: cancelled; {tracker.files_committed} of "
                f"{len(settings.inputs)} files committed (continue with --resume)"
            )
    return _assemble(folder, settings, bundle, columns, record, tracker, n_resumed)


def work_units(inputs: Sequence[str], exposures: str, batch_size: int) -> list[list[str]]:
    """Consecutive groups of the sorted inputs that are labelled and committed whole.

    Why: torch's float results for a spectrum depend on its batch's shape and on its
    place in the batch. Inside a unit the spectra fill fixed-size blocks in input order
    and the unit's last block is padded, so a unit comes out bit-identical however the
    run is split (resumed, cancelled, distributed). A unit is about four inference
    blocks, so padding wastes at most a quarter block of work per unit."""
    size = max(1, batch_size * (4 if exposures == "coadd" else 1))
    return [list(inputs[i : i + size]) for i in range(0, len(inputs), size)]


def _results(
    units: list[list[str]], settings: _Settings, bundle, control: Control, cluster: str | None
) -> Generator[tuple[dict[str, list[dict]], bool], None, None]:
    """(rows by input file, whether a unit just completed), unit after unit."""
    if cluster:
        from .distributed import dask_results

        return dask_results(units, settings, bundle, control, cluster)
    return _local_results(units, settings, bundle, control)


# ================================================================ local pipeline
def _local_results(
    units: list[list[str]], settings: _Settings, bundle, control: Control
) -> Generator[tuple[dict[str, list[dict]], bool], None, None]:
    """Workers read and preprocess; this process runs batched inference, in input order."""
    options = catalog_rows.PrepareOptions.from_settings(settings, bundle)
    tasks = [
        (unit[i : i + settings.files_per_task], i + settings.files_per_task >= len(unit))
        for unit in units
        for i in range(0, len(unit), settings.files_per_task)
    ]
    # While this process runs an inference block the workers keep preparing: enough
    # tasks in flight for about two blocks of spectra (memory: ~30 kB per spectrum).
    window = 2 * settings.workers + -(-2 * settings.batch_size // settings.files_per_task)
    prepared_stream = (
        _inline_prepared(tasks, options, control)
        if settings.workers == 0
        else _pool_prepared(tasks, options, settings.workers, window, control)
    )
    labeller = None
    previous_threads = _set_torch_threads(settings.threads)
    try:
        for prepared_files, ends_unit in prepared_stream:
            if labeller is None:  # built once workers are busy: model loading overlaps their start
                labeller = catalog_rows.Labeller(bundle, settings.device, settings.batch_size)
            for prepared in prepared_files:
                labeller.add(prepared)
            done = labeller.ready()
            if ends_unit:
                done.update(labeller.finish())
            if done or ends_unit:
                yield done, ends_unit
            if control.cancelled():
                return
    finally:
        prepared_stream.close()
        _set_torch_threads(previous_threads)


def _set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (process-wide; None or 0 leaves them); returns the previous count."""
    import torch

    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    return previous


def _inline_prepared(tasks, options, control: Control):
    for paths, ends_unit in tasks:
        control.wait_while_paused()
        if control.cancelled():
            return
        yield catalog_rows.prepare_batch(paths, options), ends_unit


def _pool_prepared(tasks, options, workers: int, window: int, control: Control):
    """Tasks through a process pool, results in submission order, a bounded number in
    flight (bounded memory; the order keeps inference blocks deterministic).

    If a worker process dies (out of memory, a crash in a C library) the pool breaks and
    every task in flight fails; those tasks are re-run one at a time in a fresh pool,
    so the one that kills its worker again is identified and gets worker_crashed rows."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # never fork a process holding torch
    queue = deque((paths, ends, False) for paths, ends in tasks)
    in_flight: deque = deque()

    def new_pool():
        return ProcessPoolExecutor(workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),))

    pool = new_pool()
    try:
        while queue or in_flight:
            control.wait_while_paused()
            if control.cancelled():
                return
            _fill_window(pool, queue, in_flight, window, control, options)
            future, paths, ends, solo = in_flight[0]
            try:
                result = future.result(timeout=0.5)
            except FutureTimeout:
                continue
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool()
                if solo:
                    in_flight.popleft()
                    yield (
                        [
                            catalog_rows.failed_file(p, "worker_crashed", "the worker process died reading this file")
                            for p in paths
                        ],
                        ends,
                    )
                for _, p, e, _ in reversed(in_flight):
                    queue.appendleft((p, e, True))
                in_flight.clear()
                continue
            in_flight.popleft()
            yield result, ends
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def exit_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """Pool initializer: a worker ends itself once its parent is gone (kill -9 of the
    run left the workers, and through them the resource tracker, orphaned for good).

    On Linux the kernel kills the worker the moment its parent dies (PR_SET_PDEATHSIG:
    measured 0.1-0.3 s from kill -9 of a `spemr catalog` run to no worker and no
    resource tracker left, against 2-3 s with the watch alone). The signal is tied to
    the parent *thread* that started the worker, which is the thread running the pool
    (ProcessPoolExecutor starts workers from submit). Elsewhere, and in case the parent
    died before the signal was armed, a thread polls the parent id every ``interval_s``."""
    import threading

    _kill_with_parent()
    if os.getppid() != parent:  # died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="spemr-exit-with-parent", daemon=True).start()


def _kill_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _fill_window(pool, queue: deque, in_flight: deque, window: int, control: Control, options):
    """Submit queued tasks up to the window; a task re-run after a crash runs alone."""
    while queue and len(in_flight) < window and not control.paused():
        paths, ends, solo = queue[0]
        if solo and in_flight:
            return
        queue.popleft()
        in_flight.append((pool.submit(catalog_rows.prepare_batch, paths, options), paths, ends, solo))
        if solo:
            return


# ================================================================ committing
class _Tracker:
    """Counts and throughput for progress callbacks and the summary."""

    def __init__(self, control: Control, n_inputs: int, n_resumed: int, started: float):
        self.control = control
        self.n_inputs = n_inputs
        self.n_resumed = n_resumed
        self.started = started
        self.files_done = n_resumed
        self.files_committed = n_resumed
        self.spectra_done_now = 0

    def labelled(self, groups: dict[str, list[dict]]) -> None:
        """Report newly labelled files; their rows ride along for live views (the GUI)."""
        rows = [row for file_rows in groups.values() for row in file_rows]
        self.files_done += len(groups)
        self.spectra_done_now += sum(row.get("spectrum") != "file" for row in rows)
        self.control.report(self.snapshot(LABELLING, rows))

    def committed(self, n_files: int) -> None:
        self.files_committed += n_files

    def rate(self) -> float:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return self.spectra_done_now / elapsed

    def snapshot(self, phase: str, rows: list[dict] | None = None) -> CatalogProgress:
        elapsed = time.monotonic() - self.started
        files_now = self.files_done - self.n_resumed
        left = self.n_inputs - self.files_done
        eta = (elapsed / files_now * left) if files_now else None
        return CatalogProgress(
            phase=phase,
            files_done=self.files_done,
            files_total=self.n_inputs,
            files_resumed=self.n_resumed,
            files_committed=self.files_committed,
            spectra_done=self.spectra_done_now,
            elapsed_s=elapsed,
            spectra_per_s=self.rate(),
            eta_s=eta,
            rows=rows or [],
        )


class _Committer:
    """Buffers labelled rows and commits chunks of whole work units, every
    ``chunk_rows`` rows or COMMIT_INTERVAL_S seconds, so a crash loses little work.
    Rows of an unfinished unit are never committed (see work_units)."""

    def __init__(self, folder: RunFolder, columns, chunk_rows: int, tracker: _Tracker):
        self.folder = folder
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.tracker = tracker
        self.ready: dict[str, list[dict]] = {}  # rows of completed units
        self.unit: dict[str, list[dict]] = {}  # rows of the unit in progress
        self.n_ready_rows = 0
        self.last_commit = time.monotonic()

    def add(self, groups: dict[str, list[dict]], unit_complete: bool) -> None:
        self.unit.update(groups)
        self.tracker.labelled(groups)
        if not unit_complete:
            return
        self.n_ready_rows += sum(len(rows) for rows in self.unit.values())
        self.ready.update(self.unit)
        self.unit = {}
        overdue = time.monotonic() - self.last_commit > COMMIT_INTERVAL_S
        if self.n_ready_rows >= self.chunk_rows or overdue:
            self.flush()

    def flush(self) -> None:
        """Commit the completed units (the unit in progress waits)."""
        if not self.ready:
            return
        self.folder.commit(self.columns, self.ready)
        self.tracker.committed(len(self.ready))
        self.ready, self.n_ready_rows = {}, 0
        self.last_commit = time.monotonic()


# ================================================================= assembly
def _assemble(
    folder: RunFolder, settings: _Settings, bundle, columns, record: dict, tracker: _Tracker, n_resumed: int
) -> CatalogSummary:
    """Stream every chunk, in input order, into the final table, then tidy up."""
    tracker.control.report(tracker.snapshot(ASSEMBLING))
    infos = folder.chunk_infos()
    schema = TableSchema.merge(columns, infos)
    flags: dict[str, int] = {}
    for info in infos:
        for flag, count in info.flags.items():
            flags[flag] = flags.get(flag, 0) + count
    metadata = catalog_rows.table_metadata(bundle)
    rows = folder.ordered_rows(settings.inputs, infos)
    atomic_write_binary(
        settings.output,
        lambda tmp: write_table(tmp, settings.fmt, schema, rows, metadata),
        what=f"{settings.output.name}: cannot write the catalog; the committed "
        f"chunks in {folder.root.name} are kept (re-run with --resume)",
    )
    elapsed = time.monotonic() - tracker.started
    summary = CatalogSummary(
        output=str(settings.output),
        n_inputs=len(settings.inputs),
        n_files_done_now=len(settings.inputs) - n_resumed,
        n_files_resumed=n_resumed,
        n_rows=schema.n_rows,
        flag_counts=flags,
        elapsed_s=elapsed,
        spectra_per_s=tracker.spectra_done_now / max(elapsed, 1e-9),
        model_trained_on=bundle.trained_on,
        columns=columns,
    )
    record.update(
        state="finished",
        output_size=settings.output.stat().st_size,
        summary={"n_rows": summary.n_rows, "flag_counts": flags},
    )
    folder.write_run(record)
    folder.remove_chunks()
    tracker.control.report(tracker.snapshot(DONE))
    return summary
