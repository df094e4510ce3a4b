"""``spemr calibrate-quality MODEL REFSET``: fit-quality thresholds from held-out spectra."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-quality",
        help="set a model's poor_fit thresholds from held-out reference spectra",
        description="Compute fit_chi2 (observed normalised flux against the model spectrum at the "
        "predicted labels) and member_spread (ensemble disagreement) on held-out spectra "
        "of a synthetic reference set (rebuilt from their seeds, with their inverse "
        "variance) and store their percentile (default 99th) in the model's manifest. "
        "Predictions above either threshold are then flagged poor_fit and their sigmas "
        "inflated.",
    )
    parser.add_argument("model", help="model folder (its manifest.json is updated)")
    parser.add_argument("refset", help="synthetic reference-set folder (spemr synth-refset)")
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test", "all"],
        help="spectra to use (by star, as in training; 'all' for a set the model never saw; default: test)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=None,
        help="percentile stored as each threshold (default: presets/fit_quality.json, 99)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the thresholds, do not write them")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..progress import Count
    from ..model.quality_calibration import calibrate

    def progress(event: Count) -> None:
        print(f"\r{event.done}/{event.total} spectra", end="", file=sys.stderr, flush=True)

    entry = calibrate(
        args.model,
        args.refset,
        split=args.split,
        percentile=args.percentile,
        device=args.device,
        batch_size=args.batch_size,
        write=not args.dry_run,
        progress=progress,
    )
    print(file=sys.stderr)
    print(json.dumps(entry, indent=1))
    if not args.dry_run:
        print(f"thresholds written to {args.model}/manifest.json", file=sys.stderr)
    return 0
