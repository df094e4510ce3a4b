"""Training: learning, determinism, cancel/resume, fc1-only fine-tuning, masked labels, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from refset_testdata import make_refset
from spemr_engine import cli
from spemr_engine.model.bundle import load_bundle
from spemr_engine.config import LABELS, architecture, default_regions
from spemr_engine.errors import Cancelled, SpemrError
from spemr_engine.progress import Evaluating, Saved, TrainingProgress
from spemr_engine.training.refset import split_by_star
from spemr_engine.model.rrnet import RRNet, gaussian_nll
from spemr_engine.training.train import (
    CHECKPOINT_DIR,
    FINETUNE,
    PRETRAIN,
    TrainSettings,
    _Checkpoints,
    _Data,
    _Job,
    _Normaliser,
    run_job,
    train_model,
    usable_statistics,
)

FAST = dict(architecture="tiny", members=1, lr=1e-3, finetune_lr=1e-3, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def refset(tmp_path_factory):
    return make_refset(tmp_path_factory.mktemp("train") / "rs", n_stars=60, repeats=2)


def _weights(path):
    return load_file(str(path / "weights.safetensors"))


def test_short_training_lowers_validation_loss_and_saves_a_bundle(refset, tmp_path):
    events = []
    path = train_model(refset, tmp_path / "model", epochs=4, finetune_epochs=1, seed=0, progress=events.append, **FAST)
    training = [e for e in events if isinstance(e, TrainingProgress) and e.stage == PRETRAIN]
    for network in ("SP", "CA"):
        val = [e.val_loss for e in training if e.network == network and e.epoch_finished]
        assert len(val) == 4 and val[-1] < val[0], (network, val)
    epoch_end = next(e for e in training if e.epoch_finished)
    assert set(epoch_end.val_mae) == {"Teff", "Logg", "FeH"} and epoch_end.val_mae["Teff"] > 10  # kelvin
    bundle = load_bundle(path)
    steps = [e for e in training if not e.epoch_finished]
    assert steps[0].step == 1 and steps[0].n_steps == -(-bundle.provenance["n_train"] // 16)
    assert isinstance(events[-2], Evaluating) and events[-1] == Saved(str(path), events[-1].seconds)
    assert bundle.trained_on_synthetic and bundle.members == 1
    assert [r.name for r in bundle.regions] == ["S1", "S2", "S3", "S4"]
    assert bundle.provenance["n_test"] > 0 and bundle.provenance["split"]["by"] == "star"
    assert bundle.metrics["overall"]["spemr"]["Teff"]["n"] == bundle.provenance["n_test"]
    assert not (path / CHECKPOINT_DIR).exists()


def test_resuming_checkpoints_of_other_settings_names_them(refset, tmp_path):
    run = dict(finetune_epochs=1, regions=default_regions()[:1], **FAST)
    with pytest.raises(Cancelled):
        train_model(refset, tmp_path / "model", epochs=2, seed=3, cancel=lambda: True, **run)
    with pytest.raises(SpemrError, match=r"other settings \(settings\.epochs, settings\.seed\); train without resume"):
        train_model(refset, tmp_path / "model", epochs=3, seed=4, **run)


def test_cancel_then_resume_finishes_with_the_same_weights_as_one_run(refset, tmp_path):
    run = dict(epochs=2, finetune_epochs=1, regions=default_regions()[:2], **FAST)
    reference = train_model(refset, tmp_path / "once", seed=3, **run)
    steps = []
    with pytest.raises(Cancelled):
        train_model(refset, tmp_path / "twice", seed=3, progress=steps.append, cancel=lambda: len(steps) >= 7, **run)
    assert any(p.suffix == ".pt" for p in (tmp_path / "twice" / CHECKPOINT_DIR).iterdir())
    assert not (tmp_path / "twice" / "manifest.json").exists()
    resumed = train_model(refset, tmp_path / "twice", seed=3, **run)
    first, second = _weights(reference), _weights(resumed)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    other = _weights(train_model(refset, tmp_path / "other", seed=4, **run))
    assert not torch.equal(first["m0.SP.fc1.0.weight"], other["m0.SP.fc1.0.weight"])


def _job(refset, stage, model, labels=("Teff", "Logg", "FeH"), epochs=2):
    stats = usable_statistics(refset.statistics)
    normaliser = _Normaliser(stats["flux_mean"], stats["flux_std"], stats["label_mean"], stats["label_std"])
    columns = [LABELS.index(n) for n in labels]
    data = _Data(refset, normaliser, columns, torch.device("cpu"), 16)
    split = split_by_star(refset.star_id, seed=0)
    return _Job(
        stage,
        0,
        "SP",
        "S1" if stage == FINETUNE else None,
        model,
        split.train,
        split.valid,
        epochs,
        1e-2,
        data,
        list(labels),
    )


def test_finetuning_changes_only_fc1(refset, tmp_path):
    torch.manual_seed(0)
    model = RRNet(architecture("tiny"), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    job = _job(refset, FINETUNE, model)
    state = run_job(job, TrainSettings(seed=0), _Checkpoints(tmp_path / "ck"), None, lambda: False)
    changed = {k for k in before if not torch.equal(before[k], state[k])}
    assert changed == {"fc1.0.weight", "fc1.0.bias"}


def test_masked_labels_do_not_contribute_to_loss_or_gradients(tmp_path):
    refset = make_refset(tmp_path / "rs", n_stars=30, repeats=1, nan_label="FeH")
    torch.manual_seed(1)
    model = RRNet(architecture("tiny"), 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run_job(
        _job(refset, PRETRAIN, model, epochs=1),
        TrainSettings(seed=0),
        _Checkpoints(tmp_path / "ck"),
        None,
        lambda: False,
    )
    after = model.state_dict()
    feh = 2  # FeH's output row: never taught
    for key in ("mu.weight", "mu.bias", "sigma.0.weight", "sigma.0.bias"):
        assert torch.equal(after[key][feh], before[key][feh]), key
        assert not torch.equal(after[key][0], before[key][0]), key
    # The loss itself: a masked entry's value is irrelevant and the mean runs over known labels.
    mean = torch.randn(4, 3, requires_grad=True)
    var = torch.rand(4, 3) + 0.5
    target = torch.randn(4, 3)
    target[1, 2] = float("nan")
    loss = gaussian_nll(mean, var, target)
    loss.backward()
    assert mean.grad[1, 2] == 0
    known = ~torch.isnan(target)
    expected = (0.5 * torch.log(var) + (target - mean) ** 2 / (2 * var) + 5)[known].mean()
    assert torch.allclose(loss, expected)


def test_train_cli_writes_a_loadable_bundle(refset, tmp_path, capsys):
    out = tmp_path / "cli-model"
    code = cli.main(
        [
            "train",
            str(refset.path),
            "-o",
            str(out),
            "--config",
            "tiny",
            "--members",
            "1",
            "--batch-size",
            "32",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "pretrain" in captured.err and "saved" in captured.err
    bundle = load_bundle(out)
    settings = bundle.provenance["settings"]
    assert bundle.provenance["command"].startswith("spemr")
    assert (settings["epochs"], settings["finetune_epochs"]) == (3, 1)  # tiny is quick (presets/training.json)
    assert cli.main(["train", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "not a reference set" in capsys.readouterr().err


def test_finetune_cli_retunes_only_the_chosen_regions(refset, tmp_path):
    from spemr_engine.model.bundle import create_random_bundle

    stats = usable_statistics(refset.statistics)
    # S2 (kept) and S3 (re-tuned) were fine-tuned with their own statistics
    own = {k: np.asarray(v) * 1.01 for k, v in stats.items()}
    source = create_random_bundle(
        tmp_path / "base", "tiny", seed=5, statistics=stats, region_statistics={"S2": own, "S3": own}
    )
    out = tmp_path / "tuned"
    code = cli.main(
        [
            "finetune",
            str(source),
            str(refset.path),
            "-o",
            str(out),
            "--regions",
            "S1",
            "S3",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--batch-size",
            "16",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    before, after = _weights(source), _weights(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".region.S1." in k or ".region.S3." in k for k in changed)
    tuned = load_bundle(out)
    assert tuned.provenance["finetuned"]["regions"] == ["S1", "S3"]
    assert [r.name for r in tuned.regions] == ["S1", "S2", "S3", "S4"]
    # a kept region keeps its own statistics; a re-tuned one learnt with the base's
    assert list(tuned.region_statistics) == ["S2"]
    np.testing.assert_array_equal(
        tuned.statistics_of("S2").flux_mean, load_bundle(source).statistics_of("S2").flux_mean
    )


def test_training_inputs_match_the_inference_standardisation(refset):
    from spemr_engine.preprocessing.preprocess import standardise

    stats = usable_statistics(refset.statistics)
    normaliser = _Normaliser(stats["flux_mean"], stats["flux_std"], stats["label_mean"], stats["label_std"])
    flux = np.array(refset.flux[:4])
    flux[0, 5], flux[1, 6] = 7.0, -3.0  # clipped the same way
    flux[2, 7] = np.nan  # a bad pixel becomes the mean (0)
    got = normaliser.flux_on(torch.device("cpu"))(torch.from_numpy(flux)).numpy()
    expected = standardise(flux, stats["flux_mean"], stats["flux_std"])
    assert got[2, 7] == 0.0
    expected[2, 7] = 0.0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_training_recipe_is_read_from_one_preset_everywhere():
    """presets/training.json holds the paper's recipe; the settings, train_model,
    finetune_bundle and the train/finetune commands all default to it."""
    import inspect

    from spemr_engine.commands.train import epochs_of

    from spemr_engine.config import training_recipe
    from spemr_engine.training.train import finetune_bundle, train_model

    recipe = training_recipe()
    assert (
        recipe.architecture,
        recipe.epochs,
        recipe.finetune_epochs,
        recipe.lr,
        recipe.finetune_lr,
        recipe.batch_size,
        recipe.step_size,
        recipe.gamma,
        recipe.seed,
        recipe.split_fractions,
    ) == ("small", 30, 10, 1e-4, 1e-5, 256, 10, 0.1, 0, (0.7, 0.1, 0.2))
    settings = TrainSettings()
    assert settings.to_dict() == {
        k: (list(v) if k == "split_fractions" else v) for k, v in vars(recipe).items() if k != "architecture"
    }
    train_defaults = {k: p.default for k, p in inspect.signature(train_model).parameters.items()}
    for name in (
        "architecture",
        "epochs",
        "finetune_epochs",
        "lr",
        "finetune_lr",
        "batch_size",
        "step_size",
        "gamma",
        "seed",
        "split_fractions",
    ):
        assert train_defaults[name] == getattr(recipe, name), name
    tune_defaults = {k: p.default for k, p in inspect.signature(finetune_bundle).parameters.items()}
    assert (tune_defaults["epochs"], tune_defaults["lr"], tune_defaults["batch_size"]) == (
        recipe.finetune_epochs,
        recipe.finetune_lr,
        recipe.batch_size,
    )
    train_args = cli.build_parser(["train"]).parse_args(["train", "REFSET", "-o", "OUT"])
    assert (
        train_args.config,
        *epochs_of(train_args),
        train_args.lr,
        train_args.finetune_lr,
        train_args.batch_size,
        train_args.step_size,
        train_args.gamma,
        train_args.seed,
    ) == (
        recipe.architecture,
        recipe.epochs,
        recipe.finetune_epochs,
        recipe.lr,
        recipe.finetune_lr,
        recipe.batch_size,
        recipe.step_size,
        recipe.gamma,
        recipe.seed,
    )
    tune_args = cli.build_parser(["finetune"]).parse_args(["finetune", "MODEL", "REFSET", "-o", "OUT"])
    assert (tune_args.epochs, tune_args.lr, tune_args.batch_size, tune_args.seed) == (
        recipe.finetune_epochs,
        recipe.finetune_lr,
        recipe.batch_size,
        recipe.seed,
    )


def test_spemr_train_tiny_is_the_quick_preset_of_presets_training_json():
    """`spemr train --config tiny` runs the tiny preset's epochs (a quick trial run, as in
    the GUI wizard), read from presets/training.json; --epochs/--finetune-epochs win."""
    from spemr_engine.commands.train import epochs_of
    from spemr_engine.config import preset_epochs, training_recipe

    parser = cli.build_parser(["train"])
    tiny = parser.parse_args(["train", "REFSET", "-o", "OUT", "--config", "tiny"])
    assert epochs_of(tiny) == preset_epochs("tiny") == (3, 1)
    assert preset_epochs("tiny") != (training_recipe().epochs, training_recipe().finetune_epochs)
    given = parser.parse_args(["train", "REFSET", "-o", "OUT", "--config", "tiny", "--epochs", "5"])
    assert epochs_of(given) == (5, 1)
    paper = parser.parse_args(["train", "REFSET", "-o", "OUT", "--config", "paper", "--finetune-epochs", "0"])
    assert epochs_of(paper) == (training_recipe().epochs, 0)
