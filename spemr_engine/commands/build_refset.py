"""``spemr build-refset``: a reference set from real LAMOST MRS files and a label catalog."""

from __future__ import annotations

import sys

from ..progress import Count
from ..training.crossmatch import (
    DEFAULT_MATCH_RADIUS,
    EXPOSURE_CHOICES,
    SUMMARY_FILE,
    BuildOptions,
    build_reference_set,
    format_summary,
    parse_radius,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-refset",
        help="cross-match LAMOST MRS files with a label catalog into a reference set",
        description="Cross-match LAMOST MRS files with a label catalog (APOGEE DR17 allStar, a "
        "plain ra/dec/label table, or a --mapping of your own), apply the paper's cuts "
        "and write a reference set incrementally. Rerunning the same command resumes "
        "an interrupted build.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="FILES_OR_FOLDER",
        help="MRS files and/or folders searched recursively for *.fits[.gz]",
    )
    parser.add_argument("--labels", required=True, metavar="CATALOG", help="label catalog, FITS or CSV")
    parser.add_argument("-o", "--output", required=True, metavar="REFSET", help="reference-set folder")
    parser.add_argument(
        "--match-radius",
        default=DEFAULT_MATCH_RADIUS,
        help=f"sky match radius, e.g. 3arcsec or 0.05arcmin (default {DEFAULT_MATCH_RADIUS})",
    )
    parser.add_argument(
        "--min-snr", type=float, default=None, help="minimum S/N in each arm (default: the preprocessing preset, 10)"
    )
    parser.add_argument(
        "--exposures",
        choices=EXPOSURE_CHOICES,
        default="coadd",
        help="coadd only, or the coadd and every single exposure",
    )
    parser.add_argument(
        "--catalog-format", default="auto", help="catalog mapping name (default: detect from the columns)"
    )
    parser.add_argument(
        "--mapping",
        default=None,
        metavar="JSON",
        help="extra catalog mappings (same layout as presets/catalog_mappings.json)",
    )
    parser.add_argument(
        "--keep-ambiguous",
        action="store_true",
        help="use the nearest star even when the match is ambiguous (still reported)",
    )
    parser.add_argument(
        "--rv-catalog",
        default=None,
        metavar="CSV",
        help="radial velocities by obsid/filename (default: measured by cross-correlation)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=run)


def run(args) -> int:
    options = BuildOptions(
        match_radius_arcsec=parse_radius(args.match_radius),
        min_snr=args.min_snr,
        exposures=args.exposures,
        catalog_format=args.catalog_format,
        mapping_file=args.mapping,
        keep_ambiguous=args.keep_ambiguous,
        rv_catalog=args.rv_catalog,
    )
    progress = None if args.quiet else _progress_printer()
    summary = build_reference_set(args.inputs, args.labels, args.output, options, progress=progress)
    print(format_summary(summary))
    print(f"reference set written to {args.output} (summary: {args.output}/{SUMMARY_FILE})")
    return 0


def _progress_printer():
    state = {"last": None}

    def report(event: Count) -> None:
        bucket = (event.stage, event.done // max(event.total // 20, 1))
        if event.done == event.total or bucket != state["last"]:
            state["last"] = bucket
            kept = f", {event.kept} spectra kept" if event.kept is not None else ""
            print(f"{event.stage}: {event.done}/{event.total} files{kept}", file=sys.stderr)

    return report
