"""Model bundle format v1: round trip, published key layout, and clear errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from spemr_engine import config
from spemr_engine.model.bundle import Statistics, create_random_bundle, expected_shapes, load_bundle, save_bundle
from spemr_engine.errors import ModelBundleError
from spemr_engine.model.rrnet import RRNet


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "model", "tiny", seed=3)


def _copy(src, dst):
    dst.mkdir()
    for item in src.iterdir():
        (dst / item.name).write_bytes(item.read_bytes())
    return dst


def test_random_bundle_manifest_and_files(random_bundle):
    bundle = load_bundle(random_bundle)
    assert sorted(p.name for p in random_bundle.iterdir()) == [
        "manifest.json",
        "statistics.safetensors",
        "weights.safetensors",
    ]
    assert bundle.manifest["format"] == "spemr-model" and bundle.manifest["version"] == 1
    assert bundle.trained_on == "random" and not bundle.trained_on_synthetic
    assert bundle.labels == list(config.LABELS)
    assert [r.name for r in bundle.regions] == [r.name for r in config.default_regions()]
    assert bundle.submodels == ["base", "S1", "S2", "S3", "S4"]
    assert bundle.members == config.architecture("tiny").members
    assert bundle.flux_mean.shape == (7200,) and bundle.label_std.shape == (16,)
    assert bundle.label_indices("SP") == [0, 1, 2]
    assert bundle.template_library_path is None


def test_saved_weights_come_back_unchanged(tmp_path):
    arch = config.architecture("tiny")
    torch.manual_seed(0)
    members = [{name: RRNet(arch, len(labels)) for name, labels in arch.networks.items()}]
    region_net = RRNet(arch, 3)
    heads = [{"SP": {"S1": region_net}, "CA": {"S1": members[0]["CA"].fc1.state_dict()}}]
    stats = Statistics(np.linspace(0.9, 1.1, 7200), np.full(7200, 0.05), np.arange(16.0), np.arange(1.0, 17.0))
    save_bundle(
        tmp_path / "m",
        arch,
        members,
        stats,
        {"trained_on": "synthetic", "seed": 1},
        region_heads=heads,
        regions=[config.default_regions()[0]],
        metrics={"mae": {"Teff": 1}},
    )
    bundle = load_bundle(tmp_path / "m")
    assert bundle.trained_on_synthetic and bundle.members == 1 and bundle.metrics == {"mae": {"Teff": 1}}
    np.testing.assert_array_equal(bundle.label_std, np.arange(1.0, 17.0))
    np.testing.assert_allclose(bundle.flux_mean, np.linspace(0.9, 1.1, 7200))
    built = bundle.build_network(0, "SP")
    for key, value in members[0]["SP"].state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    swapped = bundle.build_network(0, "SP", region="S1")
    assert torch.equal(swapped.fc1[0].weight, region_net.fc1[0].weight)
    assert torch.equal(swapped.rnn.weight_hh_l0, members[0]["SP"].rnn.weight_hh_l0)
    fc1 = bundle.build_region_fc1(0, "CA", "S1")
    assert torch.equal(fc1[0].bias, members[0]["CA"].fc1[0].bias)


def test_paper_architecture_has_the_published_keys_and_shapes():
    shapes = expected_shapes(config.architecture("paper"), 3)
    assert shapes["fc1.0.weight"] == (256, 14400)
    assert shapes["rnn.weight_hh_l0"] == (2880, 2880)
    assert shapes["rnn.weight_ih_l0"] == (2880, 2880)
    assert shapes["fc2.0.weight"] == (128, 256)
    assert shapes["mu.weight"] == (3, 128) and shapes["sigma.0.weight"] == (3, 128)
    assert shapes["ResBlock_list.2.0.downsample.0.weight"] == (16, 8, 1)
    assert shapes["ResBlock_list.0.0.ResBlock.2.weight"] == (4, 4, 3)
    assert 20.0e6 < sum(int(np.prod(s)) for s in shapes.values()) < 20.6e6


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def _edit_weights(path, edit):
    tensors = load_file(str(path / "weights.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "weights.safetensors"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: _edit_manifest(p, version=7), "unknown model bundle version 7"),
        (lambda p: _edit_manifest(p, format="something-else"), "does not describe"),
        (lambda p: _edit_manifest(p, labels=["Teff", "Logg", "FeH"]), "do not match the labels"),
        (lambda p: _edit_manifest(p, labels=["Logg", "Teff", *config.LABELS[2:]]), "not in spemr label order"),
        (lambda p: _edit_manifest(p, labels=["ASPCAP_Teff[K]", *config.LABELS[1:]]), "not spemr labels"),
        (lambda p: _edit_weights(p, lambda t: t.pop("m1.CA.rnn.weight_hh_l0")), "lacks tensor m1.CA.rnn.weight_hh_l0"),
        (lambda p: _edit_weights(p, lambda t: t.pop("m0.SP.region.S3.fc1.0.bias")), "lacks tensor m0.SP.region.S3"),
        (
            lambda p: _edit_weights(p, lambda t: t.update({"m0.SP.mu.weight": torch.zeros(4, 16)})),
            "m0.SP.mu.weight has shape [4, 16], expected [3, 16]",
        ),
        (
            lambda p: (p / "weights.safetensors").write_bytes((p / "weights.safetensors").read_bytes()[:5000]),
            "corrupt or truncated",
        ),
        (lambda p: (p / "weights.safetensors").write_bytes(b"\x00" * 64), "corrupt or truncated"),
        (lambda p: (p / "statistics.safetensors").unlink(), "statistics.safetensors"),
        (
            lambda p: _edit_manifest(
                p, statistics={"file": "statistics.safetensors", "label_mean": [0.0] * 15, "label_std": [1.0] * 15}
            ),
            "label_mean has shape (15,)",
        ),
    ],
)
def test_damaged_bundles_give_one_clear_error(random_bundle, tmp_path, damage, message):
    copy = _copy(random_bundle, tmp_path / "copy")
    damage(copy)
    with pytest.raises(ModelBundleError) as caught:
        load_bundle(copy)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and str(copy) in str(caught.value)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelBundleError, match="no such model folder"):
        load_bundle(tmp_path / "nowhere")


def test_save_refuses_unknown_provenance(tmp_path):
    with pytest.raises(ModelBundleError, match="trained_on"):
        save_bundle(tmp_path / "m", "tiny", [], Statistics(*[np.zeros(1)] * 4), {"trained_on": "magic"})


def test_base_only_bundle_has_no_regions(tmp_path):
    bundle = load_bundle(create_random_bundle(tmp_path / "m", regions=()))
    assert bundle.regions == () and bundle.submodels == ["base"]


def test_metrics_with_nan_and_numpy_values_are_stored_as_json(tmp_path):
    arch = config.architecture("tiny")
    members = [{name: RRNet(arch, len(labels)) for name, labels in arch.networks.items()}]
    save_bundle(
        tmp_path / "m",
        arch,
        members,
        Statistics(np.ones(7200), np.ones(7200), np.zeros(16), np.ones(16)),
        {"trained_on": "real", "refset": tmp_path},
        metrics={"mae": {"Teff": np.float32(40.5), "NH": float("nan")}, "n": np.int64(3)},
    )
    bundle = load_bundle(tmp_path / "m")
    assert bundle.metrics == {"mae": {"Teff": 40.5, "NH": None}, "n": 3}
    assert bundle.provenance["refset"] == str(tmp_path) and bundle.regions == ()


def test_update_manifest_changes_metrics_not_weights(tmp_path):
    from spemr_engine.model.bundle import WEIGHTS, update_manifest

    path = create_random_bundle(tmp_path / "m", architecture="tiny", seed=1)
    weights_before = (path / WEIGHTS).read_bytes()
    inode_before = (path / WEIGHTS).stat().st_ino
    update_manifest(path, metrics={"overall": {"Teff": {"mae": 42.0}}})
    bundle = load_bundle(path)
    assert bundle.metrics == {"overall": {"Teff": {"mae": 42.0}}}
    assert (path / WEIGHTS).stat().st_ino == inode_before
    assert (path / WEIGHTS).read_bytes() == weights_before
    with pytest.raises(ModelBundleError, match="trained_on"):
        update_manifest(path, provenance={"trained_on": "guesswork"})


def _own_statistics(shift: float) -> Statistics:
    return Statistics(
        np.linspace(0.85, 1.05, 7200),
        np.full(7200, 0.05),
        np.arange(16.0) + shift,
        np.arange(1.0, 17.0) * 0.5,
        source="subset S2",
    )


def test_region_statistics_round_trip_as_version_2(tmp_path):
    """A region with its own standardisation makes a version 2 bundle: its flux statistics
    in their own file, its label statistics in the manifest; the others read the base's."""
    own = _own_statistics(3.0)
    path = create_random_bundle(tmp_path / "m", "tiny", seed=2, region_statistics={"S2": own})
    bundle = load_bundle(path)
    assert bundle.manifest["version"] == 2
    assert (path / "statistics.S2.safetensors").is_file()
    assert bundle.manifest["region_statistics"]["S2"]["file"] == "statistics.S2.safetensors"
    assert list(bundle.region_statistics) == ["S2"]
    got = bundle.statistics_of("S2")
    for name in ("flux_mean", "flux_std", "label_mean", "label_std"):
        np.testing.assert_array_equal(getattr(got, name), getattr(own, name))
    assert got.source == "subset S2"
    assert bundle.statistics_of("S1") is bundle.statistics and bundle.statistics_of("base") is bundle.statistics


def test_bundle_without_region_statistics_is_written_as_before(random_bundle):
    manifest = load_bundle(random_bundle).manifest
    assert manifest["version"] == 1 and "region_statistics" not in manifest
    assert load_bundle(random_bundle).region_statistics == {}


def test_statistics_for_a_region_the_bundle_lacks_are_refused(tmp_path):
    with pytest.raises(ModelBundleError, match=r"statistics given for regions \['S9'\]"):
        create_random_bundle(tmp_path / "m", "tiny", region_statistics={"S9": _own_statistics(0.0)})
