"""``spemr build-templates``: put a best-fit template library into a model bundle."""

from __future__ import annotations

from pathlib import Path

from ..config import training_recipe
from ..errors import SpemrError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-templates",
        help="build the best-fit template library (templates.npz) of a model",
        description="Collect the training spectra of a reference set (one per star, the training "
        "split by default, as split in training) into a template library inside a model "
        "bundle folder. Synthetic sets store generator seeds (templates are rebuilt on "
        "demand, a few bytes each); real sets store float16 fluxes.",
    )
    parser.add_argument("refset", help="reference-set folder the model was trained on")
    parser.add_argument("-o", "--output", required=True, help="model bundle folder (templates.npz goes there)")
    parser.add_argument("--split", choices=("train", "valid", "test", "all"), default="train")
    parser.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the by-star split (default: the one in the bundle's manifest, else 0)",
    )
    parser.add_argument("--max", type=int, default=None, help="keep at most this many entries")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..training.refset import ReferenceSet
    from ..model.templates import TemplateLibrary

    output = Path(args.output)
    if not output.is_dir():
        raise SpemrError(f"{output}: not a folder (give the model bundle folder)")
    refset = ReferenceSet.open(args.refset)
    indices = None
    if args.split != "all":
        split = _bundle_split(output)
        seed = args.split_seed if args.split_seed is not None else int(split.get("seed", 0))
        fractions = tuple(split.get("fractions", training_recipe().split_fractions))
        indices = refset.split_by_star(fractions, seed=seed)[args.split]
    library = TemplateLibrary.from_refset(refset, max_entries=args.max, indices=indices)
    path = library.save(output)
    print(f"wrote {path}: {len(library)} templates ({library.kind}), {path.stat().st_size / 1e6:.2f} MB")
    return 0


def _bundle_split(folder: Path) -> dict:
    """The by-star split a bundle was trained with (provenance.split), if it says."""
    import json

    manifest = folder / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        return dict(json.loads(manifest.read_text()).get("provenance", {}).get("split") or {})
    except ValueError:
        return {}
