"""`spemr preprocess FILE -o OUT.npz`: one MRS file to the SPEMR input grid.

Writes wave (7200,), flux (n, 7200) continuum-normalised, mask, rv, rv_err, rv_source,
usable, reason, extname_blue, extname_red, snr_blue, snr_red and the other quality flags,
one row per selected arm pair, plus the model folder used, and prints one summary line
per spectrum. The preprocessing is the one `spemr predict` and the app use for the same
model (grid, RV template): the usable rows of flux are exactly the model's input."""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import InputFileError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preprocess",
        help="rest frame, resample and continuum-normalise one MRS file",
        description="Turn a LAMOST MRS file into the 7200-pixel SPEMR input (.npz).",
    )
    parser.add_argument("file", type=Path, help="LAMOST MRS file (med-*.fits or .fits.gz)")
    parser.add_argument("--exposure", default="coadd", help="coadd (default), all, or one exposure's LMJM")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--rv",
        type=float,
        metavar="KMS",
        help="stellar radial velocity in km/s (default: measured by cross-correlation)",
    )
    source.add_argument(
        "--rv-catalog", type=Path, metavar="CSV", help="CSV with obsid and/or filename and rv (e.g. rv_ku0) columns"
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="model folder whose input to prepare (grid and RV template; default: "
        "$SPEMR_MODEL or the shipped default model), as `spemr predict --model`",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.npz", help="where to write the arrays")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import api
    from ..reading.lamost import read_mrs

    from ..preprocessing.rv import require_finite_rv

    require_finite_rv(args.rv)
    _check_output(args.output, args.file)
    mrs = read_mrs(args.file)
    pairs = mrs.select(args.exposure)
    rv = _rv_for(args, mrs)
    model = api.load_model(args.model)
    spectra = api.preprocess_for_model(pairs, model, rv=rv)
    arrays = spectra.arrays()
    arrays["model"] = np.asarray(str(model.path))
    arrays["obsid"] = np.asarray(mrs.meta.get("obsid") or -1, dtype=np.int64)
    arrays["filename"] = np.asarray(str(mrs.meta.get("filename") or args.file.name))
    _write_npz(args.output, arrays)
    for i in range(len(spectra)):
        flags = spectra.quality
        print(
            f"{args.file.name} {spectra.extname_blue[i]}/{spectra.extname_red[i]}: "
            f"rv {spectra.rv[i]:.2f} +- {spectra.rv_err[i]:.2f} km/s ({spectra.rv_source[i]}), "
            f"S/N {flags.snr_blue[i]:.1f}/{flags.snr_red[i]:.1f}, "
            f"{'usable' if flags.usable[i] else 'NOT usable: ' + flags.reason[i]}"
        )
    print(f"wrote {len(spectra)} spectra to {args.output}")
    return 0


def _rv_for(args: argparse.Namespace, mrs):
    """--rv, or the catalog's value for this file, or None (measure)."""
    if args.rv is not None:
        return args.rv
    if args.rv_catalog is None:
        return None
    from ..preprocessing.rv import load_rv_catalog

    found = load_rv_catalog(args.rv_catalog).lookup(mrs.meta.get("obsid"), mrs.meta.get("filename") or args.file.name)
    if found is None:
        print(
            f"{args.file.name}: not in {args.rv_catalog.name}; measuring the RV by cross-correlation", file=sys.stderr
        )
        return None
    return found[0]


def _check_output(output: Path, source: Path) -> None:
    """Before any work: -o must not be a folder, nor the input file itself (it was
    overwritten with the .npz, the spectrum lost)."""
    if output.is_dir():
        raise InputFileError(output, "is a folder; -o needs an .npz file name")
    try:
        same = output.exists() and os.path.samefile(output, source)
    except (OSError, ValueError):
        same = False
    if same:
        raise InputFileError(output, "is the input file; -o needs another (.npz) file name")


def _write_npz(path: Path, arrays: dict) -> None:
    """Write to exactly `path` (np.savez would append .npz to other names)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.write_bytes(buffer.getvalue())
    except OSError as error:
        raise InputFileError(path, f"cannot write output ({error.strerror or error})") from None
