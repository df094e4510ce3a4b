"""Evaluation: metric definitions, region membership by true labels, split, renderer, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refset_testdata import make_refset
from spemr_engine import cli
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.config import default_regions
from spemr_engine.training.evaluate import evaluate, label_metrics, predict_refset, render_markdown
from spemr_engine.model.inference import SpemrPredictor
from spemr_engine.training.refset import split_by_star


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    refset = make_refset(folder / "rs", n_stars=40, repeats=2, seed=1)
    stats = {k: np.asarray(v) for k, v in refset.statistics.items()}
    stats["flux_std"] = np.where(stats["flux_std"] > 0, stats["flux_std"], 1.0)
    model = create_random_bundle(folder / "model", "tiny", seed=2, statistics=stats)
    return refset, load_bundle(model)


def test_label_metrics_follow_their_definitions():
    true = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    pred = np.array([0.5, 0.5, 2.0, 5.0, 1.0])
    sigma = np.array([1.0, 0.1, 1.0, 1.5, 1.0])
    m = label_metrics(true, pred, sigma)
    residual = np.array([0.5, -0.5, 0.0, 2.0])
    assert m["n"] == 4
    assert m["mae"] == pytest.approx(0.75) and m["bias"] == pytest.approx(0.5)
    assert m["scatter"] == pytest.approx(residual.std())
    assert m["within_1sigma"] == pytest.approx(0.5)  # 0.5<1, 0.5>0.1, 0<1, 2>1.5
    assert m["within_2sigma"] == pytest.approx(0.75)
    assert label_metrics(np.array([np.nan]), np.array([1.0]), np.array([1.0])) == {"n": 0}


def test_report_uses_true_labels_for_regions_and_the_inference_engine(setup):
    refset, model = setup
    report = evaluate(model, refset, split="all", device="cpu")
    assert report["n_spectra"] == len(refset) and report["split"] == "all"
    predicted = SpemrPredictor(model, device="cpu").predict(np.asarray(refset.flux))
    truth = refset.labels.astype(np.float64)
    teff_mae = np.mean(np.abs(predicted.mean[:, 0] - truth[:, 0]))
    assert report["overall"]["spemr"]["Teff"]["mae"] == pytest.approx(teff_mae, rel=1e-6)
    base_mae = np.mean(np.abs(predicted.sub_mean[:, 0, 0] - truth[:, 0]))
    assert report["overall"]["base"]["Teff"]["mae"] == pytest.approx(base_mae, rel=1e-6)
    for region in default_regions():
        inside = region.contains(truth, refset.label_names)
        assert report["regions"][region.name]["n_spectra"] == int(inside.sum()) > 0
        own = predicted.submodels.index(region.name)
        own_mae = np.mean(np.abs(predicted.sub_mean[inside, own, 2] - truth[inside, 2]))
        assert report["regions"][region.name]["own"]["FeH"]["mae"] == pytest.approx(own_mae, rel=1e-6)
    json.dumps(report, allow_nan=False)


def test_named_split_is_the_by_star_test_split_and_indices_are_checked(setup):
    refset, model = setup
    report = evaluate(model, refset, split="test", device="cpu")
    assert report["n_spectra"] == len(split_by_star(refset.star_id, seed=0).test)
    chosen = np.array([3, 0, 7])
    predicted = predict_refset(model, refset, chosen, device="cpu")
    direct = SpemrPredictor(model, device="cpu").predict(np.asarray(refset.flux[[3, 0, 7]]))
    np.testing.assert_allclose(predicted["mean"], direct.mean, rtol=1e-6)
    with pytest.raises(Exception, match="outside"):
        evaluate(model, refset, split=[len(refset)], device="cpu")


def test_markdown_has_a_row_per_label_and_a_table_per_region(setup):
    refset, model = setup
    text = render_markdown(evaluate(model, refset, split="all", device="cpu"))
    assert "## Overall" in text and all(f"## Region {r.name}" in text for r in default_regions())
    overall = text.split("## Overall")[1].split("## Region")[0]
    assert sum(line.startswith("| ") and "[" in line for line in overall.splitlines()) == 16


def test_evaluate_cli_writes_markdown_and_json(setup, tmp_path, capsys):
    refset, model = setup
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    code = cli.main(
        [
            "evaluate",
            str(model.path),
            str(refset.path),
            "--split",
            "all",
            "--device",
            "cpu",
            "--markdown",
            str(md),
            "--json",
            str(js),
        ]
    )
    assert code == 0
    assert json.loads(js.read_text())["n_spectra"] == len(refset)
    assert "| Teff [K] |" in md.read_text()
    assert cli.main(["evaluate", str(tmp_path / "nope"), str(refset.path)]) == 2
    assert "no such model folder" in capsys.readouterr().err
