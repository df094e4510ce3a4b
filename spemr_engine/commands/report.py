"""``spemr report CAT -o report.html``: the paper's diagnostics for a catalog."""

from __future__ import annotations

from ..batch.report import FORMATS, default_isochrones, write_report


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="diagnostic plots for a catalog (HTML, PDF or PNG)",
        description="Read a catalog written by `spemr catalog` or `spemr predict` (CSV, Parquet or "
        "FITS) and write the paper's diagnostics: Kiel diagrams in S/N bins with "
        "isochrones, the predicted sigma against S/N beside the scatter of repeat "
        "observations of the same star, fit-quality and flag distributions, and which "
        'model made the catalog. Needs matplotlib (pip install "spemr[report]").',
    )
    parser.add_argument("catalog", help="catalog file (.csv, .parquet, .fits)")
    parser.add_argument(
        "-o", "--output", required=True, help="report file; with --format png, one OUTPUT_STEM-<figure>.png per figure"
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="html (default: one self-contained file), pdf, or png (default: from the output's suffix)",
    )
    parser.add_argument(
        "--isochrones",
        metavar="CSV",
        default=None,
        help="isochrones to overlay on the Kiel diagrams (teff*/logg* column pairs, "
        f"Teff in K or log10; default: {default_isochrones()} when it exists)",
    )
    parser.add_argument("--no-isochrones", action="store_true", help="draw no isochrones")
    parser.set_defaults(func=run)


def run(args) -> int:
    isochrones = args.isochrones
    if isochrones is None and not args.no_isochrones and default_isochrones().is_file():
        isochrones = default_isochrones()
    if args.no_isochrones:
        isochrones = None
    for path in write_report(args.catalog, args.output, args.format, isochrones):
        print(path)
    return 0
