"""``spemr catalog INPUT... -o CATALOG.(fits|parquet|csv)``: label a folder, a glob, a file
list or a data release into one catalog, resumably (see spemr_engine.batch.catalog)."""

from __future__ import annotations

import sys
import time

from ..batch import catalog
from ..batch.catalog_rows import FAILED_FILE_FLAGS, model_caveat
from ..model.fit_quality import calibration_note
from ..errors import Cancelled
from ..progress import LABELLING, CatalogProgress


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "catalog",
        help="label many MRS files into one catalog (resumable, parallel)",
        description="Label every spectrum of the inputs into one catalog table: one row per "
        "spectrum with the published catalog columns, the winning sub-model per "
        "label, the RV used and quality flags. Files that fail get a row too. "
        "Interrupted runs continue with --resume.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a folder (searched recursively), a glob such as 'data/*.fits.gz' "
        "(quote it), a FITS file, or a text file listing paths",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="CATALOG", help="output table: .fits, .parquet or .csv"
    )
    parser.add_argument(
        "--exposures",
        choices=catalog.EXPOSURE_CHOICES,
        default="coadd",
        help="coadd only (default) or the coadd and every single exposure",
    )
    parser.add_argument(
        "--rv-catalog",
        metavar="CSV",
        help="radial velocities by obsid/filename (columns obsid or filename, "
        "and rv, rv_kms or rv_ku0); files not in it are measured by CCF",
    )
    parser.add_argument("--model", metavar="DIR", help="model bundle folder (default: the shipped model)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="reading/preprocessing processes (default: half the usable cores on CPU, "
        "all but one with CUDA, none for small runs; 0 = in this process)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for inference (default: every usable core; a resumed run keeps the first run's value)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=catalog.DEFAULT_BATCH_SIZE, metavar="N", help="spectra per inference batch"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=catalog.DEFAULT_CHUNK_ROWS,
        metavar="N",
        help="commit results about every N rows (smaller: less lost on a crash)",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run (same inputs and settings)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing catalog or an interrupted run's work"
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on Dask: dask://HOST:PORT (a running scheduler) or local:N "
        "(N local worker processes); needs pip install 'spemr[cluster]'",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    bundle = catalog.resolve_model(args.model)
    caveat = model_caveat(bundle)
    if caveat:
        print(f"caveat: {caveat} (column model_trained_on = {bundle.trained_on!r})", file=sys.stderr)
    note = calibration_note(bundle)
    if note:
        print(f"note: {note}", file=sys.stderr)
    bar = None if args.quiet else ProgressBar(sys.stderr)
    try:
        summary = catalog.run_catalog(
            args.inputs,
            args.output,
            model=bundle,
            exposures=args.exposures,
            rv_catalog=args.rv_catalog,
            device=args.device,
            workers=args.workers,
            resume=args.resume,
            batch_size=args.batch_size,
            chunk_size=args.chunk_rows,
            cluster=args.cluster,
            overwrite=args.overwrite,
            threads=args.threads,
            progress=bar,
        )
    except Cancelled as stopped:
        if bar:
            bar.close()
        print(str(stopped), file=sys.stderr)
        return 130
    if bar:
        bar.close()
    for line in summary.lines():
        print(line)
    # Like predict: the table is complete, but a script must see that inputs were lost.
    failed = sum(summary.flag_counts.get(flag, 0) for flag in FAILED_FILE_FLAGS)
    if failed:
        print(
            f"{failed} of {summary.n_inputs} input files could not be labelled "
            f"(rows flagged {'/'.join(FAILED_FILE_FLAGS)}; the reason is in the error column)",
            file=sys.stderr,
        )
        return 2
    return 0


class ProgressBar:
    """A plain-text progress bar on a stream: redrawn in place on a terminal, one line
    every few seconds otherwise (log files stay readable)."""

    def __init__(self, stream, width: int = 30, log_interval_s: float = 10.0):
        self.stream = stream
        self.width = width
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.log_interval_s = log_interval_s
        self.last_log = 0.0
        self.drawn = False

    def __call__(self, event: CatalogProgress) -> None:
        text = self.format(event)
        if self.tty:
            self.stream.write("\r" + text)
            self.drawn = True
        elif event.phase != LABELLING or time.monotonic() - self.last_log >= self.log_interval_s:
            self.stream.write(text + "\n")
            self.last_log = time.monotonic()
        self.stream.flush()

    def format(self, event: CatalogProgress) -> str:
        total = max(event.files_total, 1)
        done = event.files_done
        filled = int(self.width * done / total)
        bar = "#" * filled + "." * (self.width - filled)
        eta_text = "--:--" if event.eta_s is None else _clock(event.eta_s)
        return (
            f"[{bar}] {done}/{total} files  {event.spectra_done} spectra  "
            f"{event.spectra_per_s:.1f} spectra/s  ETA {eta_text}  {event.phase}"
        )

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
