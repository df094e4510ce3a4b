"""Importing published SP<k>/CA<k>/weight_best.pkl runs (state dicts written by the test)."""

import pickle

import numpy as np
import pytest
import torch

from spemr_engine import config
from spemr_engine.model.bundle import expected_shapes, load_bundle
from spemr_engine.cli import main
from spemr_engine.errors import InputFileError
from spemr_engine.model.inference import SpemrPredictor
from spemr_engine.model.published import import_published, infer_architecture, read_label_config
from spemr_engine.model.rrnet import RRNet

TINY = config.architecture("tiny")
# the published label_config order: FeH comes after MnH
PUBLISHED_ORDER = [
    "Teff",
    "Logg",
    "CH",
    "NH",
    "OH",
    "MgH",
    "AlH",
    "SiH",
    "SH",
    "KH",
    "CaH",
    "TiH",
    "CrH",
    "MnH",
    "FeH",
    "NiH",
]


BASE_MEAN = {"Teff": 5000.0, "Logg": 3.0}  # others -0.2: plausible training-set means


def _expected_mean(name: str) -> float:
    """label_mean written for `name`: plausible, plus 0.01 * its published position."""
    return BASE_MEAN.get(name, -0.2) + 0.01 * PUBLISHED_ORDER.index(name)


def _label_config(order=PUBLISHED_ORDER) -> dict:
    to_published = {label: published for published, label in config.published_to_label().items()}
    return {
        "label_list": [to_published[n] for n in order],
        "label_mean": np.array([_expected_mean(n) for n in order]),
        "label_std": np.array([1.0 + PUBLISHED_ORDER.index(n) for n in order]),
        "flux_mean": np.linspace(0.8, 1.0, 7200),
        "flux_std": np.full(7200, 0.07),
    }


def _write_label_config(run, data=None):
    (run / "label_config.pkl").write_bytes(pickle.dumps(data or _label_config()))


def _copy_run(run, target):
    for path in run.rglob("*"):
        if path.is_file():
            copy = target / path.relative_to(run)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(path.read_bytes())
    return target


def _write_net(path, net):
    path.mkdir(parents=True)
    torch.save(net.state_dict(), path / "weight_best.pkl")


@pytest.fixture(scope="module")
def published_run(tmp_path_factory):
    """Two members, SP and CA, base plus regions S1 and S3 (fc1 changed only)."""
    run = tmp_path_factory.mktemp("published") / "run"
    run.mkdir()
    _write_label_config(run)
    torch.manual_seed(0)
    nets = {}
    for k in (1, 2):  # published folders need not start at 0
        for name, size in (("SP", 3), ("CA", 13)):
            base = RRNet(TINY, size)
            _write_net(run / f"{name}{k}", base)
            nets[(k, name, "base")] = base
            for region in ("S1", "S3"):
                tuned = RRNet(TINY, size)
                tuned.load_state_dict(base.state_dict())
                torch.nn.init.normal_(tuned.fc1[0].weight, std=0.01)
                _write_net(run / region / f"{name}{k}", tuned)
                nets[(k, name, region)] = tuned
    return run, nets


@pytest.fixture(scope="module")
def imported(published_run, tmp_path_factory):
    run, _ = published_run
    return load_bundle(import_published(run, tmp_path_factory.mktemp("out") / "model"))


def test_import_maps_labels_by_name(imported):
    assert imported.trained_on == "published" and imported.labels == list(config.LABELS)
    assert imported.networks == {"SP": ("Teff", "Logg", "FeH"), "CA": TINY.networks["CA"]}
    position = {name: i for i, name in enumerate(PUBLISHED_ORDER)}
    np.testing.assert_array_equal(imported.label_mean, [_expected_mean(n) for n in config.LABELS])
    np.testing.assert_array_equal(imported.label_std, [1.0 + position[n] for n in config.LABELS])
    assert imported.label_mean[config.LABELS.index("FeH")] == pytest.approx(-0.2 + 0.14)
    np.testing.assert_allclose(imported.flux_mean, np.linspace(0.8, 1.0, 7200))


def test_import_keeps_every_network_and_region(imported, published_run):
    _, nets = published_run
    assert imported.members == 2 and [r.name for r in imported.regions] == ["S1", "S3"]
    assert imported.architecture.resblock_channels == TINY.resblock_channels
    assert imported.architecture.n_rnn_steps == TINY.n_rnn_steps
    x = torch.randn(2, 7200)
    with torch.inference_mode():
        for member, k in enumerate((1, 2)):
            for name in ("SP", "CA"):
                for sub in ("base", "S1", "S3"):
                    original = nets[(k, name, sub)].eval()
                    built = imported.build_network(member, name, region=sub)
                    for key, value in original.state_dict().items():
                        assert torch.equal(built.state_dict()[key], value), (k, name, sub, key)
                    if member == 0 and sub == "S1":  # weights are equal; one forward per network suffices
                        for a, b in zip(original(x), built(x)):
                            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_cli_import_published(published_run, tmp_path, capsys):
    run, _ = published_run
    assert main(["import-published", str(run), "-o", str(tmp_path / "m")]) == 0
    assert load_bundle(tmp_path / "m").provenance["command"].startswith("spemr import-published")


def test_label_list_order_does_not_move_outputs(published_run, imported, tmp_path):
    """label_config sorted alphabetically (names and values together) imports to the same
    model: SP and CA outputs keep the authors' fixed order, statistics go by name. Before,
    the SP outputs were taken as (FeH, Logg, Teff) and Teff moved."""
    run, _ = published_run
    permuted = _copy_run(run, tmp_path / "run")
    _write_label_config(permuted, _label_config(sorted(PUBLISHED_ORDER)))
    other = load_bundle(import_published(permuted, tmp_path / "m"))
    assert other.networks == {"SP": ("Teff", "Logg", "FeH"), "CA": config.architecture("paper").networks["CA"]}
    np.testing.assert_array_equal(other.label_mean, imported.label_mean)
    np.testing.assert_array_equal(other.label_std, imported.label_std)
    from spemr_engine.model.inference import SpemrPredictor

    x = np.random.default_rng(0).normal(1.0, 0.05, (2, 7200)).astype(np.float32)
    a, b = (SpemrPredictor(m, device="cpu").predict(x) for m in (imported, other))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.sigma, b.sigma)


def test_label_list_contradicting_its_values_is_refused(published_run, tmp_path, capsys):
    """Only the names sorted (values left in the published order): Teff would get the mean
    of another label. Refused with one line naming the file; the CLI exits 2."""
    run, _ = published_run
    broken = _copy_run(run, tmp_path / "run")
    data = _label_config()
    data["label_list"] = sorted(data["label_list"])
    _write_label_config(broken, data)
    with pytest.raises(InputFileError, match=r"label_config.pkl: label_list contradicts label_mean"):
        import_published(broken, tmp_path / "m")
    assert main(["import-published", str(broken), "-o", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label_config.pkl" in err and "Teff mean" in err


def test_region_that_changed_more_than_fc1_is_refused(published_run, tmp_path):
    run, nets = published_run
    bad = _copy_run(run, tmp_path / "run")
    state = torch.load(bad / "S3" / "CA2" / "weight_best.pkl", weights_only=True)
    state["rnn.weight_hh_l0"] += 0.1
    torch.save(state, bad / "S3" / "CA2" / "weight_best.pkl")
    with pytest.raises(InputFileError, match="differs from the base model in rnn.weight_hh_l0"):
        import_published(bad, tmp_path / "m")


def test_unsafe_or_broken_inputs_are_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputFileError, match="label_config.pkl: file not found"):
        import_published(run, tmp_path / "m")
    _write_label_config(run)
    with pytest.raises(InputFileError, match="no SP<k>/weight_best.pkl/CA<k>/weight_best.pkl found"):
        import_published(run, tmp_path / "m")
    for name in ("SP0", "CA0"):
        (run / name).mkdir()
        # a pickle that would run code: weights_only refuses it
        (run / name / "weight_best.pkl").write_bytes(pickle.dumps(print, protocol=2))
    with pytest.raises(InputFileError, match="cannot load weights"):
        import_published(run, tmp_path / "m")
    torch.save(RRNet(TINY, 5).state_dict(), run / "SP0" / "weight_best.pkl")
    torch.save(RRNet(TINY, 13).state_dict(), run / "CA0" / "weight_best.pkl")
    with pytest.raises(InputFileError, match=r"mu.weight has shape \[5, 16\], expected \[3, 16\]"):
        import_published(run, tmp_path / "m")


@pytest.mark.parametrize(
    "poison, expected",
    [
        (lambda v: v > 0, "has dtype bool; weights must be floating point"),
        (lambda v: torch.full_like(v, float("nan")), "has NaN or infinite values"),
        (lambda v: torch.full_like(v, 1e38), "not a trained network's weights"),
    ],
)
def test_bool_non_finite_or_absurd_published_weights_are_refused(published_run, tmp_path, capsys, poison, expected):
    """Bool weights ended in a traceback (Float did not match Bool) and NaN ones were
    blamed on the region sub-model: each is one line naming the file, and no bundle."""
    run, _ = published_run
    bad = _copy_run(run, tmp_path / "run")
    path = bad / "SP1" / "weight_best.pkl"
    state = torch.load(path, weights_only=True)
    torch.save({k: poison(v) for k, v in state.items()}, path)
    assert main(["import-published", str(bad), "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("weight_best.pkl: ") and expected in err[0]
    assert not (tmp_path / "m").exists()


def test_output_that_is_the_run_or_a_foreign_folder_is_refused_before_any_work(published_run, tmp_path, capsys):
    """`-o RUN` replaced the published run (weights, label_config) by the bundle, and -o
    naming any existing folder deleted what it held: both refused, nothing touched."""
    run, _ = published_run
    copy = _copy_run(run, tmp_path / "run")
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    for target, problem in (
        (copy, "is (or holds) the published run folder"),
        (tmp_path, "is (or holds) the published run folder"),
        (other, "exists and is not a spemr model folder"),
    ):
        assert main(["import-published", str(copy), "-o", str(target)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and problem in err[0]
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
    assert (other / "keep.txt").read_text() == "precious"
    # an existing bundle, or an empty folder, is still replaced
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "empty"):
        assert main(["import-published", str(copy), "-o", str(target)]) == 0
        load_bundle(target)


def test_paper_architecture_is_recognised_from_published_shapes():
    paper = config.architecture("paper")
    with torch.device("meta"):
        state = RRNet(paper, 3).state_dict()
    inferred = infer_architecture(state, paper)
    assert inferred == paper
    assert expected_shapes(inferred, 3)["fc1.0.weight"] == (256, 14400)


def test_real_published_label_config_maps_every_label(shared_label_config):
    names, statistics = read_label_config(shared_label_config)
    assert sorted(names) == sorted(config.LABELS) and names.index("FeH") > names.index("MnH")
    teff = statistics.label_mean[config.LABELS.index("Teff")]
    assert 5000 < teff < 5300  # reference doc: training-set mean Teff ~5160 K
    assert abs(statistics.label_mean[config.LABELS.index("FeH")] - (-0.16)) < 0.05
    assert statistics.flux_mean.shape == (7200,)


def test_region_label_config_equal_to_the_base_is_accepted(published_run, imported, tmp_path):
    run, _ = published_run
    copy = _copy_run(run, tmp_path / "run")
    _write_label_config(copy / "S1")  # the same statistics as the base
    other = load_bundle(import_published(copy, tmp_path / "m"))
    assert [r.name for r in other.regions] == ["S1", "S3"]
    np.testing.assert_array_equal(other.label_mean, imported.label_mean)


def _own_label_config() -> dict:
    """A region subset's own label_config (the authors' <refset>/S<k>/label_config.pkl):
    hotter and narrower in every label, other flux mean and std, its own label order."""
    data = _label_config()
    data["label_mean"] = data["label_mean"] + np.where(np.arange(16) == 0, 215.0, 0.05)
    data["label_std"] = data["label_std"] * 0.6
    data["flux_mean"] = np.linspace(0.85, 1.02, 7200)
    data["flux_std"] = np.full(7200, 0.05)
    return data


def _reference_prediction(nets, configs: dict, flux: np.ndarray):
    """The published method written out on the published state dicts, independent of
    spemr's inference: per sub-model, the authors' predict() -- clip to [-0.5, 2.5],
    (flux - flux_mean) / flux_std and (mu, var) * label_std (+ label_mean) with ONE
    label_config, the sub-model's own -- then eq. 1 over members and per label the
    region with the smallest variance. Returns sub_mean, sub_sigma (S, n, 16), mean, sigma."""
    names = [config.published_to_label()[n] for n in _label_config()["label_list"]]
    subs = ("base", "S1", "S3")
    sub_mean = np.full((len(subs), len(flux), 16), np.nan)
    sub_sigma = np.full_like(sub_mean, np.nan)
    for s, sub in enumerate(subs):
        data = configs[sub]
        x = np.clip(flux, -0.5, 2.5)
        x = torch.tensor((x - data["flux_mean"]) / data["flux_std"], dtype=torch.float32)
        for network, labels in (("SP", ("Teff", "Logg", "FeH")), ("CA", TINY.networks["CA"])):
            where = [names.index(label) for label in labels]
            std, mean = data["label_std"][where], data["label_mean"][where]
            mus, variances = [], []
            with torch.no_grad():
                for k in (1, 2):
                    mu, var = nets[(k, network, sub)].eval()(x)
                    mus.append(mu.double().numpy() * std + mean)
                    variances.append(var.double().numpy() * std**2)
            mu_bar = np.mean(mus, axis=0)
            var_bar = np.mean([m**2 + v for m, v in zip(mus, variances)], axis=0) - mu_bar**2
            columns = [config.LABELS.index(label) for label in labels]
            sub_mean[s][:, columns], sub_sigma[s][:, columns] = mu_bar, np.sqrt(var_bar)
    regions = sub_sigma[1:]
    best = np.argmin(regions, axis=0)
    pick = lambda a: np.take_along_axis(a, best[np.newaxis], axis=0)[0]  # noqa: E731
    return sub_mean, sub_sigma, pick(sub_mean[1:]), pick(regions)


def test_region_with_its_own_standardisation_is_honoured(published_run, imported, tmp_path, capsys):
    """The authors fine-tune each region with its subset's own label_config.pkl and predict
    with one label_config per sub-model for input and output alike. Region S3 brings its
    own: the bundle holds it (version 2), S3 runs on its own standardised input and its
    outputs are de-standardised with its own label statistics; the base and S1 keep the
    base's. Predictions equal the published method written out in torch."""
    run, nets = published_run
    copy = _copy_run(run, tmp_path / "run")
    own = _own_label_config()
    _write_label_config(copy / "S3", own)
    bundle = load_bundle(import_published(copy, tmp_path / "m"))
    assert bundle.manifest["version"] == 2 and list(bundle.region_statistics) == ["S3"]
    assert bundle.provenance["region_statistics"] == {"S3": "S3/label_config.pkl"}
    s3 = bundle.statistics_of("S3")
    np.testing.assert_array_equal(s3.flux_mean, own["flux_mean"])
    assert s3.label_mean[config.LABELS.index("Teff")] == pytest.approx(_expected_mean("Teff") + 215.0)
    assert s3.label_std[config.LABELS.index("FeH")] == pytest.approx(0.6 * (1 + PUBLISHED_ORDER.index("FeH")))
    assert bundle.statistics_of("S1") is bundle.statistics and bundle.statistics_of("base") is bundle.statistics
    assert main(["import-published", str(copy), "-o", str(tmp_path / "m2")]) == 0
    assert "regions with their own statistics: S3" in capsys.readouterr().out

    predictor = SpemrPredictor(bundle, device="cpu", batch_size=3)
    assert [group.submodels for group in predictor.groups] == [(0, 1), (2,)]  # base+S1 share one feature pass
    rng = np.random.default_rng(5)
    flux = 1.0 + 0.1 * rng.standard_normal((5, 7200))
    flux[0, :50] = 3.0  # clipped to 2.5 first, as the authors do
    prediction = predictor.predict(flux)

    base = _label_config()
    sub_mean, sub_sigma, mean, sigma = _reference_prediction(nets, {"base": base, "S1": base, "S3": own}, flux)
    np.testing.assert_allclose(np.moveaxis(prediction.sub_mean, 1, 0), sub_mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.moveaxis(prediction.sub_sigma, 1, 0), sub_sigma, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(prediction.mean, mean, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(prediction.sigma, sigma, rtol=2e-5, atol=1e-6)

    # the base and S1 are unchanged by S3's statistics; S3's are not the base-statistics ones
    before = SpemrPredictor(imported, device="cpu").predict(flux)
    np.testing.assert_allclose(prediction.sub_mean[:, :2], before.sub_mean[:, :2], rtol=1e-6, atol=1e-6)
    assert np.abs(prediction.sub_mean[:, 2, 0] - before.sub_mean[:, 2, 0]).min() > 10.0  # Teff, K


def test_region_with_only_its_own_label_statistics_shares_the_base_input(published_run, tmp_path):
    """Same flux statistics as the base, other label statistics: one feature pass for all,
    S3 de-standardised with its own label scale."""
    run, nets = published_run
    copy = _copy_run(run, tmp_path / "run")
    own = _own_label_config()
    own["flux_mean"], own["flux_std"] = _label_config()["flux_mean"], _label_config()["flux_std"]
    _write_label_config(copy / "S3", own)
    predictor = SpemrPredictor(load_bundle(import_published(copy, tmp_path / "m")), device="cpu")
    assert [group.submodels for group in predictor.groups] == [(0, 1, 2)]
    flux = 1.0 + 0.1 * np.random.default_rng(6).standard_normal((2, 7200))
    base = _label_config()
    sub_mean, _, mean, _ = _reference_prediction(nets, {"base": base, "S1": base, "S3": own}, flux)
    np.testing.assert_allclose(np.moveaxis(predictor.predict(flux).sub_mean, 1, 0), sub_mean, rtol=2e-5, atol=1e-6)


def test_region_label_config_that_is_not_a_label_config_is_refused(published_run, tmp_path, capsys):
    """A broken region label_config.pkl is one line naming it; nothing is written."""
    run, _ = published_run
    copy = _copy_run(run, tmp_path / "run")
    data = _own_label_config()
    data["label_std"] = data["label_std"].copy()
    data["label_std"][3] = 0.0
    _write_label_config(copy / "S3", data)
    with pytest.raises(InputFileError, match=r"^label_config.pkl: region S3: label_std is not positive"):
        import_published(copy, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert main(["import-published", str(copy), "-o", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "label_config.pkl: region S3" in err
    assert not (tmp_path / "m2").exists()
