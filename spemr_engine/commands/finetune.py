"""``spemr finetune MODEL REFSET -o OUT``: (re-)fine-tune region fc1 heads of a bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import Region, default_regions, training_recipe
from ..errors import InputFileError


def register(subparsers) -> None:
    recipe = training_recipe()
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune region sub-models of an existing model",
        description="Fine-tune only fc1 of every member/network for the chosen regions on the training "
        "split of a reference set; other regions of the model are kept.",
    )
    parser.add_argument("model", help="model folder")
    parser.add_argument("refset", help="reference-set folder")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument(
        "--regions",
        nargs="+",
        metavar="NAME_OR_JSON",
        help="region names (S1..S4, default: the model's regions) or a JSON file with a list of region definitions",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=recipe.finetune_epochs,
        help="fine-tuning epochs (default: %(default)s; paper: 10)",
    )
    parser.add_argument(
        "--lr", type=float, default=recipe.finetune_lr, help="learning rate (default: %(default)s; paper: 1e-5)"
    )
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--seed", type=int, default=recipe.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="discard checkpoints")
    parser.set_defaults(func=run)


def parse_regions(items: list[str] | None, known: tuple[Region, ...]) -> tuple[Region, ...] | None:
    """Names of known regions, or JSON files holding region dicts (config.Region format)."""
    if not items:
        return None
    by_name = {r.name: r for r in (*default_regions(), *known)}
    regions = []
    for item in items:
        if item in by_name:
            regions.append(by_name[item])
        elif item.endswith(".json"):
            try:
                data = json.loads(Path(item).read_text())
                data = data.get("regions", data) if isinstance(data, dict) else data
                regions.extend(Region.from_dict(d) for d in data)
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise InputFileError(item, f"not a region definition file ({error})") from None
        else:
            raise InputFileError(item, f"unknown region (choose from {', '.join(by_name)} or a .json file)")
    return tuple(regions)


def run(args) -> int:
    from ..model.bundle import load_bundle
    from ..training.train import finetune_bundle, print_progress

    regions = parse_regions(args.regions, tuple(load_bundle(args.model).regions))
    path = finetune_bundle(
        args.model,
        args.refset,
        args.output,
        regions=regions,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=print_progress(),
        resume=args.resume,
        command=" ".join(["spemr", *sys.argv[1:]]),
    )
    print(path)
    return 0
