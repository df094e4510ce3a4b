"""``spemr import-published RUN_DIR -o MODEL_DIR``: published SPEMR/RRNet weights -> model bundle."""

from __future__ import annotations

import shlex


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-published",
        help="convert published SP<k>/CA<k>/weight_best.pkl weights into a model folder",
        description="Read RUN_DIR/label_config.pkl, RUN_DIR/SP<k>/weight_best.pkl and "
        "RUN_DIR/CA<k>/weight_best.pkl (base networks), and optionally "
        "RUN_DIR/<S1..S4>/SP<k>|CA<k>/weight_best.pkl (region sub-models, only "
        "fc1 may differ; a RUN_DIR/<S1..S4>/label_config.pkl that differs from the "
        "base's is the region's own standardisation: the region then runs on flux "
        "standardised with it and its outputs are read back with its label "
        "statistics), and write a spemr model folder. "
        "Output order: SP = Teff, Logg, FeH and CA = the authors' 13 abundances, "
        "as fixed in their code. Pickles are read "
        "safely (tensors and arrays only).",
    )
    parser.add_argument("run_dir", help="published run folder")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..model.published import import_published  # torch: only when this command runs

    command = f"spemr import-published {shlex.quote(args.run_dir)} -o {shlex.quote(args.output)}"
    path = import_published(args.run_dir, args.output, command=command)
    from ..model.bundle import load_bundle

    own = list(load_bundle(path).region_statistics)
    print(f"wrote model {path}" + (f" (regions with their own statistics: {', '.join(own)})" if own else ""))
    return 0
