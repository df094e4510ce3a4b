"""``spemr synth-refset`` and ``spemr synth-fits``: synthetic LAMOST MRS data.

synth-refset writes a training reference set (by star: coadd + exposures, through the
normal preprocessing); synth-fits writes MRS FITS files of chosen kinds of star with
their true labels in the header (T_TEFF, T_LOGG, ...) and in samples.csv.
"""

from __future__ import annotations

import sys
import time

from ..errors import SpemrError


def register(subparsers) -> None:
    ref = subparsers.add_parser(
        "synth-refset",
        help="generate a synthetic reference set (for training and tests)",
        description="Generate synthetic stars with the LAMOST x APOGEE label distribution, observe "
        "them (noise, RV, defects), preprocess every spectrum like real input and write "
        "a reference set (synthetic = true, per-spectrum generator seed stored). "
        "Resumes an unfinished set at the same path.",
    )
    ref.add_argument("output", help="reference-set folder to create (or resume)")
    ref.add_argument("--stars", type=int, default=1000, help="number of stars (default 1000)")
    ref.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    ref.add_argument(
        "--max-exposures", type=int, default=3, help="single exposures kept per star besides the coadd (default 3)"
    )
    ref.add_argument(
        "--rv",
        choices=("catalog", "ccf"),
        default="catalog",
        help="RV for the rest frame: true + 1 km/s catalog error (default) or measured by CCF",
    )
    ref.add_argument(
        "--generator",
        type=int,
        default=None,
        help="synthetic world: 2 = radiative-transfer emulator (default), 1 = the older line model",
    )
    ref.set_defaults(func=run_refset)

    fits_cmd = subparsers.add_parser(
        "synth-fits",
        help="write synthetic LAMOST MRS FITS files of chosen kinds of star",
        description="Write gzip-compressed synthetic MRS files (coadd + exposures, real header keys, "
        "SYNTH = T, true labels as T_<LABEL>) and samples.csv with the true labels.",
    )
    fits_cmd.add_argument("output", help="folder for the files")
    fits_cmd.add_argument(
        "--kinds",
        default="giant,dwarf,hot,cool,metal-poor",
        help="comma-separated kinds (giant, dwarf, hot, cool, metal-poor)",
    )
    fits_cmd.add_argument("--seed", type=int, default=0)
    fits_cmd.add_argument("--exposures", type=int, default=2, help="single exposures per file (default 2)")
    fits_cmd.add_argument("--snr", type=float, default=60.0, help="red-arm coadd S/N (default 60)")
    fits_cmd.set_defaults(func=run_fits)


def _progress(state: dict) -> None:
    print(
        f"\r{state['stars_done']}/{state['stars_total']} stars, {state['spectra_kept']} spectra kept, "
        f"{state['spectra_rejected']} rejected, {state['elapsed_s']:.0f} s",
        end="",
        file=sys.stderr,
    )


def run_refset(args) -> int:
    from ..synth.generate import GENERATOR_VERSION, WORLDS
    from ..synth.refset_builder import build_reference_set

    if args.stars < 1:
        raise SpemrError("--stars must be at least 1")
    version = GENERATOR_VERSION if args.generator is None else args.generator
    if version not in WORLDS:
        raise SpemrError(f"--generator {version}: unknown (known: {', '.join(map(str, sorted(WORLDS)))})")
    started = time.monotonic()
    refset = build_reference_set(
        args.output,
        args.stars,
        seed=args.seed,
        max_exposures=args.max_exposures,
        rv_mode=args.rv,
        progress=_progress,
        version=version,
    )
    print(file=sys.stderr)
    print(f"wrote {len(refset)} spectra of {args.stars} stars to {args.output} in {time.monotonic() - started:.0f} s")
    return 0


def run_fits(args) -> int:
    from ..synth.samples import KINDS, write_samples

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SpemrError(f"unknown kind(s) {', '.join(unknown)} (choose from {', '.join(KINDS)})")
    for path in write_samples(args.output, kinds, seed=args.seed, n_exp=args.exposures, snr_red=args.snr):
        print(path)
    return 0
