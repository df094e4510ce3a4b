"""``spemr import-refset DIR -o REFSET``: convert the published training-data layout."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-refset",
        help="import a published training set (train/valid/test_flux.pkl, *_label.csv)",
        description="Convert {train,valid,test}_flux.pkl + *_label.csv (ASPCAP_* columns) + "
        "label_config.pkl into a streaming reference set, keeping the published split. "
        "Pickles are read with a restricted unpickler (numpy arrays and plain containers only). "
        "Re-running after an interruption resumes.",
    )
    parser.add_argument("source", help="folder with the published files")
    parser.add_argument("-o", "--output", required=True, help="reference-set folder to write")
    parser.add_argument("--synthetic", action="store_true", help="mark the set as synthetic spectra")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..progress import Count
    from ..training.refset import import_published

    def show(event: Count) -> None:
        # Whole lines only, so an error message that follows stays on its own line.
        print(f"{event.split}: {event.done}/{event.total} spectra", file=sys.stderr, flush=True)

    refset = import_published(args.source, args.output, synthetic=args.synthetic, progress=show)
    print(f"{args.output}: {len(refset)} spectra, {len(set(refset.star_id))} stars")
    return 0
