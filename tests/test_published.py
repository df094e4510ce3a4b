"""Importing published SP<k>/CA<k>/weight_best.pkl runs (state dicts written by the test)."""

import pickle

import numpy as np
import pytest
import torch

from spemr_engine import config
from spemr_engine.bundle import expected_shapes, load_bundle
from spemr_engine.cli import main
from spemr_engine.errors import InputFileError
from spemr_engine.published import import_published, infer_architecture, read_label_config
from spemr_engine.rrnet import RRNet

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
    from spemr_engine.inference import SpemrPredictor

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


@pytest.mark.parametrize("change", ["label_mean", "flux_std"])
def test_region_with_its_own_standardisation_is_refused_not_ignored(published_run, tmp_path, capsys, change):
    """The authors fine-tune each region with its subset's own label_config.pkl. A bundle
    has one standardisation, so a region whose statistics differ is refused with one line
    naming the file and the region; nothing is written."""
    run, _ = published_run
    copy = _copy_run(run, tmp_path / "run")
    data = _label_config()
    if change == "label_mean":
        data["label_mean"] = data["label_mean"].copy()
        data["label_mean"][0] += 215.0  # Teff: the region's subset is hotter
    else:
        data["flux_std"] = data["flux_std"] * 1.1
    _write_label_config(copy / "S3", data)
    expected = "Teff" if change == "label_mean" else "flux_std"
    with pytest.raises(
        InputFileError,
        match=rf"label_config.pkl: region S3 was standardised with its own "
        rf"statistics \(.*{expected}",
    ):
        import_published(copy, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert main(["import-published", str(copy), "-o", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "S3" in err and "label_config.pkl" in err
    assert not (tmp_path / "m2").exists()
