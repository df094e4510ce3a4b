"""``spemr train REFSET -o MODEL_DIR``: pre-train an ensemble, fine-tune regions, save a bundle."""

from __future__ import annotations

import sys

from ..config import architecture_names, preset_epochs, training_recipe


def register(subparsers) -> None:
    recipe = training_recipe()
    parser = subparsers.add_parser(
        "train",
        help="train a SPEMR model on a reference set",
        description="Pre-train RRNet ensemble members on a reference set (split 7:1:2 by star), "
        "fine-tune fc1 for each region, evaluate on the test split and save a model bundle. "
        "An interrupted run (Ctrl-C) resumes from its checkpoints when started again.",
    )
    parser.add_argument("refset", help="reference-set folder")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument(
        "--config",
        default=recipe.architecture,
        choices=architecture_names(),
        help="architecture preset (default: %(default)s)",
    )
    parser.add_argument("--members", type=int, help="ensemble members (default: the preset's)")
    special = [name for name in architecture_names() if preset_epochs(name) != (recipe.epochs, recipe.finetune_epochs)]

    def default_text(which: int, recipe_value: int) -> str:  # "30; tiny: 3" (presets/training.json)
        return "; ".join([str(recipe_value)] + [f"{name}: {preset_epochs(name)[which]}" for name in special])

    parser.add_argument(
        "--epochs",
        type=int,
        help=f"pre-training epochs (default: the preset's, {default_text(0, recipe.epochs)}; paper: 30)",
    )
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        help=f"fine-tuning epochs per region (default: the preset's, "
        f"{default_text(1, recipe.finetune_epochs)}; paper: 10)",
    )
    parser.add_argument(
        "--lr", type=float, default=recipe.lr, help="pre-training learning rate (default: %(default)s; paper: 1e-4)"
    )
    parser.add_argument(
        "--finetune-lr",
        type=float,
        default=recipe.finetune_lr,
        help="fine-tuning learning rate (default: %(default)s; paper: 1e-5)",
    )
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument(
        "--step-size",
        type=int,
        default=recipe.step_size,
        help="StepLR step in epochs (default: %(default)s; paper: 10)",
    )
    parser.add_argument(
        "--gamma", type=float, default=recipe.gamma, help="StepLR factor (default: %(default)s; paper: 0.1)"
    )
    parser.add_argument("--seed", type=int, default=recipe.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="continue from checkpoints of the same run (default)",
    )
    resume.add_argument("--no-resume", dest="resume", action="store_false", help="discard checkpoints, start over")
    parser.set_defaults(func=run)


def epochs_of(args) -> tuple[int, int]:
    """(epochs, finetune_epochs): those given, else the preset's (tiny: a quick trial run),
    read from presets/training.json as the GUI's training wizard reads them."""
    epochs, finetune_epochs = preset_epochs(args.config)
    return (
        epochs if args.epochs is None else args.epochs,
        finetune_epochs if args.finetune_epochs is None else args.finetune_epochs,
    )


def run(args) -> int:
    from ..training.train import print_progress, train_model

    epochs, finetune_epochs = epochs_of(args)
    path = train_model(
        args.refset,
        args.output,
        architecture=args.config,
        members=args.members,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        lr=args.lr,
        finetune_lr=args.finetune_lr,
        batch_size=args.batch_size,
        step_size=args.step_size,
        gamma=args.gamma,
        seed=args.seed,
        device=args.device,
        progress=print_progress(),
        resume=args.resume,
        command=" ".join(["spemr", *sys.argv[1:]]),
    )
    print(path)
    return 0
