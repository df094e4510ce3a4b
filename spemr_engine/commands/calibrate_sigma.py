"""``spemr calibrate-sigma MODEL REFSET``: per-label sigma factors from held-out spectra."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-sigma",
        help="scale a model's sigmas so 68.3%% of held-out errors fall within 1 sigma",
        description="Predict a held-out split of a reference set with the model's own sigmas and, "
        "per label, store the factor that puts 68.27%% of |error| within factor x sigma in the "
        "model's manifest; the predictor then applies it to every sigma of that label (fused "
        "and per sub-model). Means and fusion are unchanged. Fit-quality thresholds do not "
        "depend on it (member_spread uses the ensemble's own sigma), so either calibration may run first.",
    )
    parser.add_argument("model", help="model folder (its manifest.json is updated)")
    parser.add_argument("refset", help="reference-set folder with true labels (e.g. the one it was trained on)")
    parser.add_argument(
        "--split",
        default="valid",
        choices=["train", "valid", "test", "all"],
        help="spectra to use (by star, as in training; 'all' for a set the model never saw; default: valid)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the factors, do not write them")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..model.sigma_calibration import calibrate

    calibration, rows = calibrate(
        args.model,
        args.refset,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        write=not args.dry_run,
    )
    print(f"{calibration.split} split: {calibration.n_spectra} spectra; share of errors within 1 sigma")
    print(f"{'label':8} {'n':>6} {'before':>7} {'factor':>7} {'after':>7}")
    for row in rows:
        print(
            f"{row['label']:8} {row['n']:6d} {100 * row['within_before']:6.1f}% {row['scale']:7.3f} "
            f"{100 * row['within_after']:6.1f}%"
        )
    sys.stdout.flush()
    if not args.dry_run:
        print(f"factors written to {args.model}/manifest.json", file=sys.stderr)
    return 0
