"""``spemr predict FILE... -o OUT.csv``: label LAMOST MRS files with a SPEMR model.

One CSV row per spectrum (the coadd, or with --exposure all every exposure too) with the
published catalog columns first. A file that cannot be read costs one stderr line and a
``file_error`` row; the others are still processed and the exit code is 2 at the end.
For survey-scale runs (resumable, parallel) use ``spemr catalog``.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import api
from ..batch import catalog_rows
from ..errors import ModelBundleError, SpemrError, display_name
from ..model.fit_quality import calibration_note
from ..preprocessing.rv import load_rv_catalog, require_finite_rv

EXIT_SOME_FAILED = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="estimate stellar labels for LAMOST MRS files (CSV output)",
        description="Read LAMOST MRS files, preprocess each blue+red pair (RV by "
        "cross-correlation unless given), run the SPEMR model and write one CSV "
        "row per spectrum: obsid, filename, ra, dec, extname_blue, extname_red, "
        "snr_blue, snr_red, each label and its _err, then rv, flags, the winning "
        "sub-model per label and the model's provenance.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="med-*.fits or med-*.fits.gz files")
    parser.add_argument("-o", "--output", required=True, help="CSV file to write ('-' for stdout)")
    parser.add_argument(
        "--model", default=None, help=f"model folder (default: {api.default_model_path()}; env {api.MODEL_ENV})"
    )
    parser.add_argument(
        "--exposure",
        default="coadd",
        help="coadd (default), all (coadd + every single exposure) or one exposure's LMJM",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="where the networks run (auto: CUDA when available)",
    )
    parser.add_argument(
        "--rv",
        type=float,
        default=None,
        metavar="KMS",
        help="radial velocity for every file (default: RV catalog, else cross-correlation)",
    )
    parser.add_argument(
        "--rv-catalog",
        default=None,
        metavar="CSV",
        help="CSV with obsid or filename and rv (e.g. LAMOST rv_ku0) columns",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="spectra per network batch")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..model.inference import resolve_device

    resolve_device(args.device)  # options that cannot work stop the run before any file
    require_finite_rv(args.rv)
    output = _Output(args.output)
    output.check(args.files)  # a folder, an input file or an unwritable place fails before any work
    rv_catalog = load_rv_catalog(args.rv_catalog) if args.rv_catalog else None
    model = api.load_model(args.model)
    caveat = catalog_rows.model_caveat(model)
    if caveat:
        print(f"warning: {model.path}: {caveat}", file=sys.stderr)
    note = calibration_note(model)
    if note:
        print(f"note: {model.path}: {note}", file=sys.stderr)
    columns = api.catalog_columns(model.labels)
    failed = 0
    with output as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for path in args.files:
            for row in _file_rows(path, model, rv_catalog, args):
                failed += row.get("flags") == "file_error"
                writer.writerow(_csv_values(row))
            handle.flush()  # each file's rows are on disk as soon as they are done
    if failed:
        print(f"{failed} of {len(args.files)} files could not be analysed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else 0


def _file_rows(path: str, model, rv_catalog, args) -> list[dict]:
    """Rows of one file; a file that cannot be analysed becomes one file_error row."""
    try:
        analysis = api.analyse_file(
            path,
            model=model,
            exposure=args.exposure,
            rv=args.rv,
            rv_catalog=rv_catalog,
            device=args.device,
            batch_size=args.batch_size,
        )
        return analysis.rows()
    except ModelBundleError:
        raise  # the model, not this file, is broken: stop (rows written so far are kept)
    except SpemrError as error:
        print(str(error), file=sys.stderr)
        row = catalog_rows.failed_file(path, "file_error", str(error)).rows[0]
        row.update(api.label_values(catalog_rows.label_columns(model), None, None))
        row["model_trained_on"] = model.trained_on
        return [row]


def _csv_values(row: dict) -> dict:
    """Cells in the catalog's CSV convention (catalog_store.csv_cell)."""
    from ..batch.catalog_store import csv_cell

    return {key: csv_cell(value, column=key) for key, value in row.items()}


def _same_file(output: Path, name: str) -> bool:
    try:
        return output.exists() and os.path.samefile(output, name)
    except (OSError, ValueError):
        return False


class _Output:
    """stdout for '-', else the CSV file itself, written row by row: whatever stops the
    run (an error, Ctrl-C, kill -9), the rows of the files already done are in it."""

    def __init__(self, target: str):
        self.target = target
        self.path = None if target == "-" else Path(target)

    def check(self, inputs: Sequence[str] = ()) -> None:
        """Refuse a folder, one of the input files (opening it for writing would empty
        it before it is read), or a place that cannot be written, before any work."""
        if self.path is None:
            return
        if self.path.is_dir():
            raise SpemrError(f"{display_name(self.path)}: is a folder; -o needs a CSV file name")
        for name in inputs:
            if _same_file(self.path, name):
                raise SpemrError(
                    f"{display_name(self.path)}: is one of the input files; -o needs another CSV file name"
                )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            with open(self.path, "a", encoding="utf-8"):
                pass
            if not existed:
                self.path.unlink()
        except OSError as error:
            raise SpemrError(
                f"{display_name(self.path)}: cannot write the output here ({error.strerror or error})"
            ) from None

    def __enter__(self):
        if self.path is None:
            return sys.stdout
        try:
            self.handle = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as error:
            raise SpemrError(
                f"{display_name(self.path)}: cannot write the output ({error.strerror or error})"
            ) from None
        return self.handle

    def __exit__(self, kind, value, traceback) -> None:
        if self.path is None:
            sys.stdout.flush()
            return
        self.handle.close()
