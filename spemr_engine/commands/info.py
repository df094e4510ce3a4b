"""``spemr info FILE``: what a LAMOST MRS file holds, as JSON (no model needed)."""

from __future__ import annotations

import json
import math

from ..io_utils import plain
from ..reading.lamost import Arm, ArmPair, MRSFile, read_mrs


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show a LAMOST MRS file's metadata and arm pairs as JSON",
        description="Read a LAMOST MRS file (.fits or .fits.gz) and print its header "
        "metadata, arm pairs (coadd and exposures), unpaired arms and warnings.",
    )
    parser.add_argument("file", help="LAMOST MRS file (med-*.fits or med-*.fits.gz)")
    parser.set_defaults(func=run)


def run(args) -> int:
    print(json.dumps(plain(describe(read_mrs(args.file))), indent=2, allow_nan=False))
    return 0


def describe(mrs: MRSFile) -> dict:
    """JSON-ready summary of a read file (also useful to the GUI and tests)."""
    return {
        "path": str(mrs.path),
        "meta": mrs.meta,
        "pairs": [_pair_summary(pair) for pair in mrs.pairs],
        "unpaired": [_arm_summary(arm) for arm in mrs.unpaired],
        "warnings": list(mrs.warnings),
    }


def _pair_summary(pair: ArmPair) -> dict:
    return {
        "label": pair.label,
        "lmjm": pair.lmjm,
        "extname_blue": pair.extname_blue,
        "extname_red": pair.extname_red,
        "snr_blue": _number(pair.snr_blue),
        "snr_red": _number(pair.snr_red),
        "exptime": pair.blue.exptime,
        "n_pixels_blue": pair.blue.n_pixels,
        "n_pixels_red": pair.red.n_pixels,
        "n_bad_blue": int(pair.blue.mask.sum()),
        "n_bad_red": int(pair.red.mask.sum()),
    }


def _arm_summary(arm: Arm) -> dict:
    return {
        "extname": arm.extname,
        "side": arm.side,
        "lmjm": arm.lmjm,
        "snr": _number(arm.snr),
        "exptime": arm.exptime,
        "n_pixels": arm.n_pixels,
    }


def _number(value: float) -> float | None:
    """JSON has no NaN: a missing S/N is written as null."""
    return None if value is None or math.isnan(value) else float(value)
