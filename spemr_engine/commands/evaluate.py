"""``spemr evaluate MODEL REFSET``: MAE, bias, scatter and calibration per label and region."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on a reference set",
        description="Per label: MAE, bias, scatter and the fraction of |error| < sigma, for the base "
        "ensemble and fused SPEMR, overall and per region (membership by true labels).",
    )
    parser.add_argument("model", help="model folder")
    parser.add_argument("refset", help="reference-set folder")
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "valid", "test", "all"],
        help="spectra to use (splits by star, as in training; default: test)",
    )
    parser.add_argument("--markdown", metavar="OUT.md", help="write the report as markdown tables")
    parser.add_argument("--json", metavar="OUT.json", help="write the report as JSON")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.evaluate import evaluate, render_markdown

    report = evaluate(args.model, args.refset, split=args.split, device=args.device, batch_size=args.batch_size)
    text = render_markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    if not args.markdown and not args.json:
        print(text, end="")
    return 0
