"""``spemr train-emulator``: fit the radiative-transfer emulator on RT grid chunks."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SpemrError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-emulator",
        help="train the Payne-style emulator of the radiative-transfer grid",
        description="Fit a small network from labels + vmic to normalised rest-frame flux on the RT grid "
        "(spemr_engine/presets/rt_grid.json) from grid chunks written by `spemr synth-grid`; "
        "a seeded part of the grid is held out and the accuracy on it is printed and stored.",
    )
    parser.add_argument(
        "grid",
        nargs="+",
        help="RT grid chunk files (.npz), folders of them, or grids in the "
        "reference tools' format (e.g. ../shared/data/turbospectrum_grid/grid.npz)",
    )
    parser.add_argument("-o", "--output", required=True, help="emulator folder to write")
    parser.add_argument("--hidden", default="256,256", help="hidden layer widths (default 256,256)")
    parser.add_argument("--epochs", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--holdout", type=float, default=0.1, help="fraction of the grid held out (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.set_defaults(func=run)


def _chunk_paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise SpemrError(f"{path}: no RT grid chunks (*.npz) in this folder")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise SpemrError(f"{path}: no such file or folder")
    return paths


def run(args) -> int:
    from ..synth.radiative import emulator as emu
    from ..synth.radiative.grid import load_any

    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        raise SpemrError(f"--hidden {args.hidden!r}: give widths like 256,256") from None
    if not hidden or any(h < 1 or h > 4096 for h in hidden) or args.epochs < 1 or not 0 < args.holdout < 0.9:
        raise SpemrError("--hidden widths must be 1-4096, --epochs >= 1, --holdout in (0, 0.9)")
    try:
        spectra = load_any(_chunk_paths(args.grid))
    except (OSError, ValueError, KeyError) as error:
        raise SpemrError(f"RT grid: {error}") from None
    print(f"{len(spectra)} grid spectra, {spectra.flux.shape[1]} pixels", file=sys.stderr)
    settings = emu.EmulatorSettings(
        hidden=hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        holdout=args.holdout,
        seed=args.seed,
        threads=args.threads,
    )
    report = lambda p: print(
        f"epoch {p['epoch']}/{p['epochs']} loss {p['loss']:.3g} ({p['elapsed_s']:.0f} s)", file=sys.stderr, flush=True
    )
    emulator, metrics = emu.train(spectra, settings, progress=report)
    emulator.save(args.output)
    for arm in ("blue", "red"):
        m = metrics[arm]
        print(
            f"{arm}: held-out median |error| {m['median_abs']:.4f}, 99th percentile {m['p99_abs']:.4f}, "
            f"max {m['max_abs']:.3f} ({metrics['n_spectra']} spectra)"
        )
    print(f"wrote {args.output}")
    return 0
