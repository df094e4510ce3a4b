"""Tampered or broken model bundles: one ModelBundleError line naming the problem, before
anything is computed from them (issue 11, "Model bundles")."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from safetensors.torch import load_file, save_file

from spemr_engine import cli
from spemr_engine.model.bundle import Statistics, create_random_bundle, load_bundle
from spemr_engine.errors import ModelBundleError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = sorted((REPO / "assets" / "samples").glob("med-*.fits.gz"))[0]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=1)


@pytest.fixture
def bundle(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "copy"))


def _edit(bundle: Path, change) -> Path:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(manifest):
        target = manifest
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _refused(bundle: Path) -> str:
    with pytest.raises(ModelBundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(bundle))
    return message


@pytest.mark.parametrize(
    "change, expected",
    [
        (_set("members", 1.5), "members = 1.5 is not an integer from 1"),
        (_set("members", True), "members = true is not an integer"),
        (_set("architecture", "fc1_width", 15.5), "architecture.fc1_width = 15.5 is not an integer"),
        (_set("architecture", "mode", "bogus"), 'architecture.mode = "bogus" is not one of'),
        (_set("architecture", "n_rnn_steps", 0), "architecture.n_rnn_steps = 0 is not an integer from 1"),
        (_set("architecture", "resblock_channels", []), "resblock_channels = [] is not a list of 1 to 12"),
        (_set("architecture", "len_spectrum", "7200"), 'len_spectrum = "7200" is not an integer'),
        (_set("architecture", "dropout", float("nan")), "architecture.dropout = NaN is not a number in [0, 1)"),
        (_set("architecture", "n_rnn_steps", 7), "architecture cannot be built"),
        (_set("grid", "arms", 0, "step", 0), "grid.arms[0].step = 0 is not a number in (0, 1000]"),
        (_set("grid", "arms", 1, "step", -0.1), "grid.arms[1].step = -0.1 is not a number"),
        (_set("grid", "arms", 0, "n_pixels", "3600"), 'grid.arms[0].n_pixels = "3600" is not an integer'),
        (_set("statistics", "file", "../../../../etc/passwd"), "statistics.file must be a file name inside"),
        (_set("statistics", "file", "/etc/passwd"), "statistics.file must be a file name inside"),
        (_set("templates", "../templates.npz"), "templates must be a file name inside"),
    ],
)
def test_manifest_values_are_validated(bundle, change, expected):
    message = _refused(_edit(bundle, change))
    assert expected.split(" = ")[0] in message
    assert expected.split(" = ")[-1].split(" is ")[-1] in message


def test_members_1e400_written_as_json_infinity(bundle):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.replace('"members": 2', '"members": 1e400'))
    assert "members = Infinity is not an integer" in _refused(bundle)


def test_deeply_nested_manifest(bundle):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[:-2] + ', "x": ' + "[" * 100000 + "]" * 100000 + "}\n")
    assert "nested too deeply" in _refused(bundle)


def test_statistics_file_linking_out_of_the_bundle(bundle, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(bundle / "statistics.safetensors", outside)
    (bundle / "link.safetensors").symlink_to(outside)
    _edit(bundle, _set("statistics", "file", "link.safetensors"))
    assert "leads outside the bundle folder" in _refused(bundle)


def test_weights_linking_out_of_the_bundle_or_not_a_file(bundle, tmp_path):
    """The weights follow the same rule as every file the manifest names: a link must not
    lead out of the bundle; a FIFO is 'not a regular file', not 'no weights'."""
    weights = bundle / "weights.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(weights, outside)
    weights.symlink_to(outside)
    assert "the weights 'weights.safetensors' leads outside the bundle folder" in _refused(bundle)
    weights.unlink()
    os.mkfifo(weights)
    assert _refused(bundle).endswith("not a regular file: weights.safetensors")
    weights.unlink()
    assert _refused(bundle).endswith("no weights.safetensors")


def _rewrite_weights(bundle: Path, change) -> None:
    tensors = load_file(str(bundle / "weights.safetensors"))
    key = sorted(k for k in tensors if k.endswith("fc1.0.weight"))[0]
    tensors[key] = change(tensors[key])
    save_file(tensors, str(bundle / "weights.safetensors"))


def test_bool_weights_are_refused(bundle):
    _rewrite_weights(bundle, lambda t: t > 0)
    assert "has dtype BOOL; weights must be floating point" in _refused(bundle)


@pytest.mark.parametrize(
    "value, expected",
    [(float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"), (1e38, "not a trained network's weights")],
)
def test_non_finite_or_absurd_weights_refuse_before_labelling(bundle, tmp_path, capsys, value, expected):
    def poison(tensor):
        tensor = tensor.clone()
        tensor[0, 0] = value
        return tensor

    _rewrite_weights(bundle, poison)
    out = tmp_path / "out.csv"
    assert cli.main(["predict", str(SAMPLE), "--model", str(bundle), "-o", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("warning: ", "note: "))]
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith(str(bundle))


def test_failed_import_published_leaves_no_bundle(tmp_path):
    """The import fails at its last step (validating the written bundle: NaN in
    flux_std): nothing at the output path, no half-written folder beside it."""
    import pickle

    from test_published import TINY, _label_config, _write_net
    from spemr_engine.model.published import import_published
    from spemr_engine.model.rrnet import RRNet

    run = tmp_path / "run"
    run.mkdir()
    data = _label_config()
    data["flux_std"][100] = np.nan
    (run / "label_config.pkl").write_bytes(pickle.dumps(data))
    torch.manual_seed(0)
    for name, size in (("SP", 3), ("CA", 13)):
        _write_net(run / f"{name}0", RRNet(TINY, size))
    out = tmp_path / "models" / "imported"
    with pytest.raises(ModelBundleError, match="flux_std has non-finite values"):
        import_published(run, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []
    data["flux_std"][100] = 0.07
    (run / "label_config.pkl").write_bytes(pickle.dumps(data))
    assert load_bundle(import_published(run, out)).members == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["imported"]


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _paths(value, prefix=()):
    """Every key path inside a manifest."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_tampered_manifest_value_loads_or_is_one_line(pristine, tmp_path, data):
    bundle = tmp_path / "fuzzed"
    if not bundle.exists():
        shutil.copytree(pristine, bundle)
    manifest = json.loads((pristine / "manifest.json").read_text())
    where = data.draw(st.sampled_from([p for p in _paths(manifest) if p]), label="key")
    value = data.draw(_JSON, label="value")
    target = manifest
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    try:
        load_bundle(bundle)
    except ModelBundleError as error:
        assert "\n" not in str(error)


# ----------------------------------------------------- regions' own statistics (version 2)
@pytest.fixture(scope="module")
def pristine_v2(tmp_path_factory):
    own = Statistics(np.linspace(0.85, 1.05, 7200), np.full(7200, 0.05), np.zeros(16), np.ones(16), source="S2")
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "v2", "tiny", seed=1, region_statistics={"S2": own})


@pytest.fixture
def bundle_v2(pristine_v2, tmp_path):
    return Path(shutil.copytree(pristine_v2, tmp_path / "copy"))


@pytest.mark.parametrize(
    "change, expected",
    [
        (_set("region_statistics", "S2", "file", "../../etc/passwd"), "region_statistics.S2.file must be a file name"),
        (_set("region_statistics", "S2", "file", "/etc/passwd"), "region_statistics.S2.file must be a file name"),
        (_set("region_statistics", "S2", "file", None), "region_statistics.S2.file must be a file name"),
        (_set("region_statistics", "S2", "file", "absent.safetensors"), "cannot read absent.safetensors"),
        (_set("region_statistics", "S2", "file", "statistics.safetensors"), "one file per region"),
        (_set("region_statistics", "S2", "label_std", [1.0] * 15), "region_statistics.S2 label_std has shape (15,)"),
        (_set("region_statistics", "S2", "label_std", [0.0] * 16), "region_statistics.S2 label_std must be positive"),
        (_set("region_statistics", "S2", "label_mean", "0"), 'region_statistics.S2.label_mean = "0" is not a list'),
        (_set("region_statistics", "S2", "source", 5), "region_statistics.S2.source = 5 is not a text"),
        (_set("region_statistics", "S2", 7), "region_statistics.S2 = 7 is not a mapping"),
        (_set("region_statistics", {}), "region_statistics = {} is not a non-empty mapping"),
        (_set("region_statistics", "S9", {}), "region_statistics.S9.label_mean"),
        (_set("version", 1), "region_statistics"),
        (lambda m: m.pop("region_statistics"), "version = 2 is not a version 2 manifest without region_statistics"),
        (_set("version", 3), "unknown model bundle version 3"),
    ],
)
def test_region_statistics_are_validated(bundle_v2, change, expected):
    assert expected in _refused(_edit(bundle_v2, change))


def test_region_statistics_for_an_unknown_region_are_refused(bundle_v2):
    def rename(manifest):
        manifest["region_statistics"]["S9"] = manifest["region_statistics"].pop("S2")

    assert "region_statistics names regions ['S9'] the bundle does not have" in _refused(_edit(bundle_v2, rename))


def test_region_statistics_file_linking_out_of_the_bundle(bundle_v2, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(bundle_v2 / "statistics.S2.safetensors", outside)
    (bundle_v2 / "statistics.S2.safetensors").symlink_to(outside)
    assert "leads outside the bundle folder" in _refused(bundle_v2)


def test_non_finite_region_flux_statistics_are_refused(bundle_v2):
    tensors = load_file(str(bundle_v2 / "statistics.S2.safetensors"))
    tensors["flux_std"][10] = float("nan")
    save_file(tensors, str(bundle_v2 / "statistics.S2.safetensors"))
    assert "region_statistics.S2 flux_std has non-finite values" in _refused(bundle_v2)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_tampered_version_2_manifest_value_loads_or_is_one_line(pristine_v2, tmp_path, data):
    bundle = tmp_path / "fuzzed"
    if not bundle.exists():
        shutil.copytree(pristine_v2, bundle)
    manifest = json.loads((pristine_v2 / "manifest.json").read_text())
    paths = [p for p in _paths(manifest) if p and p[0] in ("region_statistics", "version", "regions")]
    where = data.draw(st.sampled_from(paths), label="key")
    value = data.draw(_JSON, label="value")
    target = manifest
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    try:
        load_bundle(bundle)
    except ModelBundleError as error:
        assert "\n" not in str(error)
