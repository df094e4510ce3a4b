"""Model bundles (format versions 1 and 2): one folder per trained SPEMR model.

    manifest.json            format, version, architecture, labels, networks, members,
                             regions, grid, statistics, provenance, metrics
                             (version 2 only: region_statistics)
    weights.safetensors      m{k}.{NET}.{published RRNet key}          base networks
                             m{k}.{NET}.region.{R}.fc1.0.{weight,bias}  region fc1 heads
    statistics.safetensors   flux_mean, flux_std (per pixel)
    statistics.{R}.safetensors  version 2: flux_mean, flux_std of region R when it was
                             fine-tuned with its own standardisation (its reference subset's
                             statistics); its label_mean/label_std are in the manifest
    templates.npz            optional best-fit template library

A bundle is written as version 1 unless a region has its own statistics; version 2 is
version 1 plus ``region_statistics`` (region name -> the same entry as ``statistics``),
so a reader that only knows version 1 refuses it instead of ignoring the statistics.

Weights are safetensors (never pickle) and are read lazily through a memory map, so
loading a bundle only validates names and shapes; tensors are read when a network is
built. Every problem becomes a one-line ModelBundleError naming the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, NoReturn, Sequence, TypeAlias

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .. import __version__, config
from ..config import InputGrid, Region, RRNetConfig
from ..errors import ModelBundleError
from .fit_quality import MANIFEST_KEY as QUALITY_KEY, QualityThresholds
from .sigma_calibration import MANIFEST_KEY as SIGMA_KEY, SigmaCalibration
from ..io_utils import atomic_path, atomic_write_text, plain
from .rrnet import RRNet

FORMAT = "spemr-model"
VERSION = 1  # written when no region has its own statistics (unchanged format)
VERSION_REGION_STATISTICS = 2  # version 1 plus region_statistics
VERSIONS = (VERSION, VERSION_REGION_STATISTICS)
REGION_STATISTICS = "region_statistics"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
STATISTICS = "statistics.safetensors"
TEMPLATES = "templates.npz"
TRAINED_ON = ("synthetic", "real", "published", "random")
BASE = "base"
MAX_MANIFEST_BYTES = 2**20
# Trained RRNet weights are O(1); a weight this large only overflows float32 activations.
MAX_WEIGHT = 1e6
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_MEMBERS = 64


# ------------------------------------------------------------------ key names
def base_key(member: int, network: str, key: str) -> str:
    """Name of a base-network tensor: m{k}.{NET}.{published key}."""
    return f"m{member}.{network}.{key}"


def region_key(member: int, network: str, region: str, param: str) -> str:
    """Name of a region's fc1 tensor: m{k}.{NET}.region.{R}.fc1.0.{weight|bias}."""
    return f"m{member}.{network}.region.{region}.fc1.0.{param}"


def expected_shapes(architecture: RRNetConfig, n_labels: int) -> dict[str, tuple[int, ...]]:
    """Published-layout state-dict shapes of one RRNet, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = RRNet(architecture, n_labels)
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


# ----------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Statistics:
    """Standardisation statistics: per pixel for flux, per label (bundle order) for labels."""

    flux_mean: np.ndarray
    flux_std: np.ndarray
    label_mean: np.ndarray
    label_std: np.ndarray
    source: str = "training set"

    @classmethod
    def coerce(cls, data: "Statistics | Mapping") -> "Statistics":
        if isinstance(data, Statistics):
            return data
        arrays = {
            name: np.asarray(data[name], dtype=np.float64)
            for name in ("flux_mean", "flux_std", "label_mean", "label_std")
        }
        return cls(**arrays, source=str(data.get("source", "training set")))


_PLACEHOLDER_LABELS = {"Teff": (5000.0, 700.0), "Logg": (3.0, 1.0)}  # others: (-0.2, 0.3) dex


def placeholder_statistics(labels: Sequence[str], n_pixels: int) -> Statistics:
    """Statistics for random-weight bundles: flat flux (mean 1, std 0.1) and labels centred
    on a typical LAMOST giant, so random predictions at least look like stellar numbers.
    Marked source="placeholder" so nothing uses the flat flux_mean as an RV template."""
    pairs = [_PLACEHOLDER_LABELS.get(name, (-0.2, 0.3)) for name in labels]
    return Statistics(
        flux_mean=np.ones(n_pixels),
        flux_std=np.full(n_pixels, 0.1),
        label_mean=np.array([p[0] for p in pairs]),
        label_std=np.array([p[1] for p in pairs]),
        source="placeholder",
    )


# --------------------------------------------------------------------- bundle
@dataclass
class ModelBundle:
    """A validated model folder. Networks are built on demand from the memory-mapped weights."""

    path: Path
    manifest: dict
    architecture: RRNetConfig
    labels: list[str]
    networks: dict[str, tuple[str, ...]]
    members: int
    regions: tuple[Region, ...]
    grid: InputGrid
    statistics: Statistics
    template_library_path: Path | None = None
    quality: "QualityThresholds | None" = None  # fit-quality thresholds (calibrate-quality)
    sigma_calibration: "SigmaCalibration | None" = None  # per-label sigma factors (calibrate-sigma)
    # regions fine-tuned with their own standardisation (absent: the base's statistics)
    region_statistics: dict[str, Statistics] = field(default_factory=dict)

    flux_mean = property(lambda self: self.statistics.flux_mean)
    flux_std = property(lambda self: self.statistics.flux_std)
    label_mean = property(lambda self: self.statistics.label_mean)
    label_std = property(lambda self: self.statistics.label_std)

    @property
    def provenance(self) -> dict:
        return dict(self.manifest.get("provenance", {}))

    @property
    def metrics(self) -> dict:
        return dict(self.manifest.get("metrics", {}))

    @property
    def trained_on(self) -> str:
        return str(self.provenance.get("trained_on", "unknown"))

    @property
    def trained_on_synthetic(self) -> bool:
        return self.trained_on == "synthetic"

    @property
    def submodels(self) -> list[str]:
        return [BASE, *(region.name for region in self.regions)]

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    def statistics_of(self, submodel: str) -> Statistics:
        """The standardisation a sub-model ("base" or a region) was trained with: the
        region's own statistics when the bundle holds them, else the base's."""
        return self.region_statistics.get(submodel, self.statistics)

    def label_indices(self, network: str) -> list[int]:
        """Positions in ``labels`` of the outputs of ``network``."""
        return [self.labels.index(name) for name in self.networks[network]]

    def base_state_dict(self, member: int, network: str) -> dict[str, torch.Tensor]:
        prefix = base_key(member, network, "")
        shapes = expected_shapes(self.architecture, len(self.networks[network]))
        return self._read({prefix + key: key for key in shapes})

    def region_state_dict(self, member: int, network: str, region: str) -> dict[str, torch.Tensor]:
        """State dict of the region's fc1 as an nn.Sequential (keys 0.weight, 0.bias)."""
        return self._read({region_key(member, network, region, p): f"0.{p}" for p in ("weight", "bias")})

    def build_network(
        self, member: int, network: str, region: str | None = None, device: str | torch.device = "cpu"
    ) -> RRNet:
        """The full RRNet of one member/network; ``region`` swaps in that region's fc1."""
        with torch.device("meta"):  # skip random initialisation: every weight is loaded
            net = RRNet(self.architecture, len(self.networks[network]))
        net.load_state_dict(self.base_state_dict(member, network), assign=True)
        if region is not None and region != BASE:
            net.fc1.load_state_dict(self.region_state_dict(member, network, region), assign=True)
        return net.to(device).eval()

    def build_region_fc1(self, member: int, network: str, region: str, device: str | torch.device = "cpu") -> nn.Module:
        """A region's fc1 alone (Linear + ReLU + Dropout), for RRNet.head(features, fc1=...)."""
        with torch.device("meta"):
            fc1 = RRNet(self.architecture, len(self.networks[network])).fc1
        fc1.load_state_dict(self.region_state_dict(member, network, region), assign=True)
        return fc1.to(device).eval()

    def _read(self, names: Mapping[str, str]) -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(self.weights_path), framework="pt", device="cpu") as handle:
                tensors = {full: handle.get_tensor(full).float() for full in names}
        except Exception as error:  # safetensors raises its own error types
            raise ModelBundleError(self.path, f"cannot read {WEIGHTS}: {error}") from None
        for full, tensor in tensors.items():
            if tensor.numel() and not bool(torch.isfinite(tensor).all()):
                raise ModelBundleError(self.path, f"{WEIGHTS}: tensor {full} has NaN or infinite values")
            if tensor.numel() and float(tensor.abs().max()) > MAX_WEIGHT:
                raise ModelBundleError(
                    self.path,
                    f"{WEIGHTS}: tensor {full} has values of "
                    f"{float(tensor.abs().max()):.3g} (over {MAX_WEIGHT:g}: "
                    "not a trained network's weights)",
                )
        return {names[full]: tensor for full, tensor in tensors.items()}


# ---------------------------------------------------------------------- load
def load_bundle(path: str | Path) -> ModelBundle:
    """Open and validate a model folder; raises ModelBundleError with the reason."""
    path = Path(path)
    manifest = _read_manifest(path)
    _validate_manifest(path, manifest)
    architecture, labels, networks = _parse_model(path, manifest)
    regions = _parse_regions(path, manifest)
    grid = _parse_grid(path, manifest, architecture)
    statistics = _read_statistics(path, manifest.get("statistics") or {}, labels, architecture.len_spectrum)
    region_statistics = {
        name: _read_statistics(
            path, entry, labels, architecture.len_spectrum, what=f"{REGION_STATISTICS}.{name}", default_file=None
        )
        for name, entry in manifest.get(REGION_STATISTICS, {}).items()
    }
    unknown = sorted(set(region_statistics) - {region.name for region in regions})
    if unknown:
        raise ModelBundleError(
            path, f"{MANIFEST}: {REGION_STATISTICS} names regions {unknown} the bundle does not have"
        )
    _check_weights(path, architecture, networks, regions)
    templates = path / TEMPLATES
    quality = manifest.get(QUALITY_KEY)
    sigma_entry = manifest.get(SIGMA_KEY)
    return ModelBundle(
        path=path,
        manifest=manifest,
        architecture=architecture,
        labels=labels,
        networks=networks,
        members=architecture.members,
        regions=regions,
        grid=grid,
        statistics=statistics,
        template_library_path=templates if templates.is_file() else None,
        quality=None if quality is None else QualityThresholds.from_manifest(path, quality),
        region_statistics=region_statistics,
        sigma_calibration=None if sigma_entry is None else SigmaCalibration.from_manifest(path, sigma_entry, labels),
    )


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise ModelBundleError(path, "no such model folder")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ModelBundleError(path, f"no {MANIFEST} (not a spemr model folder)")
    try:
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelBundleError(
                path, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES // 2**20} MB (a manifest is a few kB)"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelBundleError(path, f"{MANIFEST} is not valid JSON ({error})") from None
    except RecursionError:
        raise ModelBundleError(path, f"{MANIFEST} is nested too deeply to be a model manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelBundleError(path, f"{MANIFEST} does not describe a {FORMAT} bundle")
    version = manifest.get("version")
    if isinstance(version, bool) or version not in VERSIONS:
        raise ModelBundleError(
            path,
            f"unknown model bundle version {version!r} "
            f"(this spemr {__version__} reads versions {', '.join(map(str, VERSIONS))})",
        )
    return manifest


def bundle_file(path: Path, name, what: str) -> Path:
    """A file the manifest names: a plain file name inside the bundle folder (no
    folders, no "..", no absolute path, no link leading out of the folder)."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or Path(name).is_absolute()
    ):
        raise ModelBundleError(
            path, f"{MANIFEST}: {what} must be a file name inside the bundle folder, not {name!r:.80}"
        )
    file = path / name
    try:
        inside = file.resolve().parent == path.resolve()
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise ModelBundleError(path, f"{MANIFEST}: {what} {name!r:.80} leads outside the bundle folder")
    return file


def _validate_manifest(path: Path, manifest: dict) -> None:
    """Every value the loader uses, checked for type and range before use, so a tampered
    or broken manifest is one line naming the key (never a crash deeper in, or a
    message blaming the input files)."""

    def fail(key: str, value, wanted: str) -> NoReturn:
        raise ModelBundleError(path, f"{MANIFEST}: {key} = {json.dumps(value, default=str)[:60]} is not {wanted}")

    def integer(key: str, value, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            fail(key, value, f"an integer from {low} to {high}")

    def number(key: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and np.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not ok:
            fail(key, value, f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")

    def names(key: str, value, min_items: int = 1) -> None:
        if not isinstance(value, list) or len(value) < min_items or not all(isinstance(v, str) and v for v in value):
            fail(key, value, "a list of names")

    integer("members", manifest.get("members"), 1, MAX_MEMBERS)
    names("labels", manifest.get("labels"))
    networks = manifest.get("networks")
    if not isinstance(networks, dict) or not networks:
        fail("networks", networks, "a mapping of network name to labels")
    for name, labels in networks.items():
        names(f"networks.{name}", labels)
    arch = manifest.get("architecture")
    if not isinstance(arch, dict):
        fail("architecture", arch, "a mapping")
    from .rrnet import MODES

    if arch.get("mode") not in MODES:
        fail("architecture.mode", arch.get("mode"), f"one of {', '.join(MODES)}")
    channels = arch.get("resblock_channels")
    if not isinstance(channels, list) or not 1 <= len(channels) <= 12:
        fail("architecture.resblock_channels", channels, "a list of 1 to 12 channel counts")
    for i, value in enumerate(channels):
        integer(f"architecture.resblock_channels[{i}]", value, 1, 1024)
    integer("architecture.len_spectrum", arch.get("len_spectrum"), 2 ** len(channels), 10**6)
    integer("architecture.n_rnn_steps", arch.get("n_rnn_steps"), 1, 10**5)
    integer("architecture.fc1_width", arch.get("fc1_width"), 1, 10**5)
    integer("architecture.fc2_width", arch.get("fc2_width"), 1, 10**5)
    number("architecture.dropout", arch.get("dropout"), 0.0, 1.0, high_open=True)
    if "members" in arch:
        integer("architecture.members", arch.get("members"), 1, MAX_MEMBERS)
    if "networks" in arch and not isinstance(arch["networks"], dict):
        fail("architecture.networks", arch["networks"], "a mapping of network name to labels")
    if not isinstance(manifest.get("regions", []), list):
        fail("regions", manifest.get("regions"), "a list")
    if "grid" in manifest:
        grid = manifest["grid"]
        arms = grid.get("arms") if isinstance(grid, dict) else None
        if not isinstance(arms, list) or not 1 <= len(arms) <= 16 or not all(isinstance(a, dict) for a in arms):
            fail("grid.arms", arms, "a list of 1 to 16 arm grids")
        for i, arm in enumerate(arms):
            if not isinstance(arm.get("name"), str):
                fail(f"grid.arms[{i}].name", arm.get("name"), "a name")
            number(f"grid.arms[{i}].start", arm.get("start"), 0.0, 1e6, low_open=True)
            number(f"grid.arms[{i}].step", arm.get("step"), 0.0, 1e3, low_open=True)
            integer(f"grid.arms[{i}].n_pixels", arm.get("n_pixels"), 1, 10**6)

    def statistics_entry(key: str, entry, default_file: str | None) -> None:
        if not isinstance(entry, dict):
            fail(key, entry, "a mapping")
        for name in ("label_mean", "label_std"):
            values = entry.get(name)
            if not isinstance(values, list) or not all(
                not isinstance(v, bool) and isinstance(v, (int, float)) for v in values
            ):
                fail(f"{key}.{name}", values, "a list of numbers")
        if "source" in entry and not isinstance(entry["source"], str):
            fail(f"{key}.source", entry["source"], "a text")
        bundle_file(path, entry.get("file", default_file), f"{key}.file")

    statistics_entry("statistics", manifest.get("statistics"), STATISTICS)
    if REGION_STATISTICS in manifest:
        own = manifest[REGION_STATISTICS]
        if manifest.get("version") != VERSION_REGION_STATISTICS:
            fail(REGION_STATISTICS, own, f"allowed in a version {manifest.get('version')} manifest (needs version 2)")
        if not isinstance(own, dict) or not own:
            fail(REGION_STATISTICS, own, "a non-empty mapping of region name to statistics")
        files = [entry.get("file") if isinstance(entry, dict) else None for entry in own.values()]
        for name, entry in own.items():
            statistics_entry(f"{REGION_STATISTICS}.{name}", entry, None)
        named = [*files, manifest["statistics"].get("file", STATISTICS)]
        if len(set(named)) != len(named):
            fail(f"{REGION_STATISTICS} files", named, "one file per region, none shared with the base")
    elif manifest.get("version") == VERSION_REGION_STATISTICS:
        fail("version", 2, f"a version 2 manifest without {REGION_STATISTICS} (write version 1)")
    if "templates" in manifest:
        bundle_file(path, manifest["templates"], "templates")


def _parse_model(path: Path, manifest: dict) -> tuple[RRNetConfig, list[str], dict[str, tuple[str, ...]]]:
    try:
        networks = {str(k): tuple(str(x) for x in v) for k, v in manifest["networks"].items()}
        architecture = replace(
            RRNetConfig.from_dict(manifest["architecture"]), members=int(manifest["members"]), networks=networks
        )
        labels = [str(x) for x in manifest["labels"]]
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ModelBundleError(path, f"{MANIFEST}: bad or missing model description ({error!r})") from None
    _check_labels(path, labels, networks)
    if architecture.members < 1:
        raise ModelBundleError(path, f"{MANIFEST}: members must be at least 1")
    return architecture, labels, networks


def _check_labels(path: Path | str, labels: Sequence[str], networks: Mapping[str, Sequence[str]]) -> None:
    """Labels must be spemr label names, in spemr order, each predicted by exactly one network."""
    unknown = [name for name in labels if name not in config.LABELS]
    if unknown:
        raise ModelBundleError(path, f"labels {unknown} are not spemr labels ({', '.join(config.LABELS)})")
    if list(labels) != sorted(labels, key=config.LABELS.index) or len(set(labels)) != len(labels):
        raise ModelBundleError(path, f"labels {list(labels)} are not in spemr label order")
    predicted = [name for names in networks.values() for name in names]
    if sorted(predicted) != sorted(labels):
        raise ModelBundleError(path, f"network labels {dict(networks)} do not match the labels {list(labels)}")
    bad_names = [name for name in networks if not name or "." in name]
    if bad_names:
        raise ModelBundleError(path, f"bad network names {bad_names}")


def _parse_regions(path: Path, manifest: dict) -> tuple[Region, ...]:
    try:
        regions = tuple(Region.from_dict(d) for d in manifest.get("regions", []))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBundleError(path, f"{MANIFEST}: bad region definition ({error})") from None
    names = [region.name for region in regions]
    if len(set(names)) != len(names) or BASE in names or any("." in n or not n for n in names):
        raise ModelBundleError(
            path, f"{MANIFEST}: region names {names} must be unique, non-empty, without dots and not {BASE!r}"
        )
    return regions


def _parse_grid(path: Path, manifest: dict, architecture: RRNetConfig) -> InputGrid:
    try:
        grid = InputGrid.from_dict(manifest["grid"]) if "grid" in manifest else config.default_grid()
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBundleError(path, f"{MANIFEST}: bad input grid ({error!r})") from None
    if grid.n_pixels != architecture.len_spectrum:
        raise ModelBundleError(
            path, f"input grid has {grid.n_pixels} pixels but the network expects {architecture.len_spectrum}"
        )
    return grid


def _read_statistics(
    path: Path,
    entry: dict,
    labels: list[str],
    n_pixels: int,
    what: str = "statistics",
    default_file: str | None = STATISTICS,
) -> Statistics:
    file = bundle_file(path, entry.get("file", default_file), f"{what}.file")
    try:
        with safe_open(str(file), framework="numpy") as handle:
            flux = {name: handle.get_tensor(name).astype(np.float64) for name in ("flux_mean", "flux_std")}
        label_mean = np.asarray(entry["label_mean"], dtype=np.float64)
        label_std = np.asarray(entry["label_std"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelBundleError(path, f"{what} missing or malformed ({error!r})") from None
    except Exception as error:  # missing or corrupt safetensors file
        raise ModelBundleError(path, f"cannot read {file.name}: {error}") from None
    for name, array, size in (
        ("flux_mean", flux["flux_mean"], n_pixels),
        ("flux_std", flux["flux_std"], n_pixels),
        ("label_mean", label_mean, len(labels)),
        ("label_std", label_std, len(labels)),
    ):
        if array.shape != (size,):
            raise ModelBundleError(path, f"{what} {name} has shape {array.shape}, expected ({size},)")
        if not np.all(np.isfinite(array)):
            raise ModelBundleError(path, f"{what} {name} has non-finite values")
    if np.any(label_std <= 0):
        raise ModelBundleError(path, f"{what} label_std must be positive")
    return Statistics(
        flux["flux_mean"], flux["flux_std"], label_mean, label_std, source=str(entry.get("source", "training set"))
    )


def _check_weights(
    path: Path, architecture: RRNetConfig, networks: Mapping[str, Sequence[str]], regions: Sequence[Region]
) -> None:
    """Every expected tensor is present with the expected shape (read from the header only)."""
    weights = path / WEIGHTS
    if not weights.is_file():
        what = "no" if not os.path.lexists(weights) else "not a regular file:"
        raise ModelBundleError(path, f"{what} {WEIGHTS}")
    weights = bundle_file(path, WEIGHTS, "the weights")  # a link must not lead out of the bundle
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            shapes, dtypes = {}, {}
            for key in handle.keys():
                tensor = handle.get_slice(key)
                shapes[key], dtypes[key] = tuple(tensor.get_shape()), str(tensor.get_dtype())
    except Exception as error:
        raise ModelBundleError(path, f"{WEIGHTS} is corrupt or truncated ({error})") from None
    wrong = sorted(key for key, dtype in dtypes.items() if dtype.upper() not in _FLOAT_DTYPES)
    if wrong:
        raise ModelBundleError(
            path,
            f"{WEIGHTS}: tensor {wrong[0]} has dtype {dtypes[wrong[0]]}; "
            f"weights must be floating point ({', '.join(_FLOAT_DTYPES)})"
            + (f" ({len(wrong) - 1} more)" if len(wrong) > 1 else ""),
        )
    for network, names in networks.items():
        try:
            expected = expected_shapes(architecture, len(names))
        except (ValueError, RuntimeError) as error:
            raise ModelBundleError(path, f"{MANIFEST}: architecture cannot be built ({error})") from None
        fc1 = {p: expected[f"fc1.0.{p}"] for p in ("weight", "bias")}
        for member in range(architecture.members):
            wanted = {base_key(member, network, key): shape for key, shape in expected.items()}
            for region in regions:
                wanted.update({region_key(member, network, region.name, p): s for p, s in fc1.items()})
            _compare_shapes(path, wanted, shapes)


def _compare_shapes(path: Path, wanted: Mapping[str, tuple], found: Mapping[str, tuple]) -> None:
    for key, shape in wanted.items():
        if key not in found:
            raise ModelBundleError(path, f"{WEIGHTS} lacks tensor {key}")
        if found[key] != tuple(shape):
            raise ModelBundleError(
                path, f"{WEIGHTS}: tensor {key} has shape {list(found[key])}, expected {list(shape)}"
            )


# ---------------------------------------------------------------------- save
Weights: TypeAlias = "RRNet | nn.Module | Mapping[str, torch.Tensor]"


def save_bundle(
    path: str | Path,
    architecture: RRNetConfig | str,
    members: Sequence[Mapping[str, "RRNet | Mapping[str, torch.Tensor]"]],
    statistics: Statistics | Mapping,
    provenance: Mapping,
    *,
    region_heads: Sequence[Mapping[str, Mapping[str, Weights]]] | None = None,
    regions: Sequence[Region] | None = None,
    labels: Sequence[str] | None = None,
    metrics: Mapping | None = None,
    grid: InputGrid | None = None,
    templates: str | Path | None = None,
    region_statistics: Mapping[str, Statistics | Mapping] | None = None,
) -> Path:
    """Write a model folder and return its path (the folder is created or updated in place).

    members[k][NET]: the base RRNet of member k for network NET (module or state dict).
    region_heads[k][NET][R]: region R's fine-tuned fc1 — an nn.Sequential fc1, its
    state dict (0.weight/0.bias), or a whole RRNet whose fc1 is taken.
    regions defaults to config.default_regions() when region_heads is given, else none.
    region_statistics[R]: the standardisation region R was fine-tuned with, when it is
    not the base's (inference then gives R its own input and label scale); with any,
    the bundle is written as version 2, else as version 1.
    provenance["trained_on"] must be one of TRAINED_ON; date and spemr version are added.
    The written bundle is re-loaded and validated before returning.
    """
    path = Path(path)
    architecture = config.architecture(architecture) if isinstance(architecture, str) else architecture
    architecture = replace(architecture, members=len(members))
    networks = dict(architecture.networks)
    labels = (
        list(labels) if labels is not None else [n for n in config.LABELS if any(n in v for v in networks.values())]
    )
    _check_labels(path, labels, networks)
    if regions is None:
        regions = config.default_regions() if region_heads else ()
    provenance = _complete_provenance(path, provenance)
    statistics = Statistics.coerce(statistics)
    own = {name: Statistics.coerce(value) for name, value in (region_statistics or {}).items()}
    unknown = sorted(set(own) - {region.name for region in regions})
    if unknown:
        raise ModelBundleError(path, f"statistics given for regions {unknown} the bundle does not have")
    tensors = _collect_tensors(path, members, region_heads or [], networks, regions)

    path.mkdir(parents=True, exist_ok=True)
    (path / MANIFEST).unlink(missing_ok=True)  # a half-written folder must not look valid
    _atomic_save(tensors, path / WEIGHTS)
    _save_flux_statistics(statistics, path / STATISTICS)
    for name, value in own.items():
        _save_flux_statistics(value, path / region_statistics_file(name))
    if templates is not None:
        shutil.copyfile(templates, path / TEMPLATES)
    manifest = {
        "format": FORMAT,
        "version": VERSION_REGION_STATISTICS if own else VERSION,
        "architecture": architecture.to_dict(),
        "labels": labels,
        "networks": {k: list(v) for k, v in networks.items()},
        "members": architecture.members,
        "regions": [region.to_dict() for region in regions],
        "grid": (grid or config.default_grid()).to_dict(),
        "statistics": _statistics_entry(statistics, STATISTICS),
        **(
            {
                REGION_STATISTICS: {
                    name: _statistics_entry(value, region_statistics_file(name)) for name, value in own.items()
                }
            }
            if own
            else {}
        ),
        "provenance": plain(provenance),
        "metrics": plain(dict(metrics or {})),
    }
    if (path / TEMPLATES).is_file():
        manifest["templates"] = TEMPLATES
    _write_manifest(path, manifest)
    load_bundle(path)
    return path


def region_statistics_file(region: str) -> str:
    """File name of a region's own flux statistics inside the bundle."""
    return f"statistics.{region}.safetensors"


def _statistics_entry(statistics: Statistics, file: str) -> dict:
    return {
        "file": file,
        "source": statistics.source,
        "label_mean": [float(x) for x in statistics.label_mean],
        "label_std": [float(x) for x in statistics.label_std],
    }


def _save_flux_statistics(statistics: Statistics, target: Path) -> None:
    _atomic_save(
        {
            "flux_mean": torch.as_tensor(np.asarray(statistics.flux_mean, dtype=np.float64)),
            "flux_std": torch.as_tensor(np.asarray(statistics.flux_std, dtype=np.float64)),
        },
        target,
    )


def update_manifest(
    path: str | Path,
    *,
    provenance: Mapping | None = None,
    metrics: Mapping | None = None,
    quality: Mapping | None = None,
    sigma_calibration: Mapping | None = None,
) -> Path:
    """Replace a saved bundle's provenance, metrics, fit-quality thresholds and/or sigma
    calibration without rewriting its weights (a paper-size model is 1.7 GB), e.g. to add
    the evaluation or the calibrations made after saving it. Both calibrations are
    validated before writing."""
    path = Path(path)
    manifest = _read_manifest(path)
    if provenance is not None:
        manifest["provenance"] = plain(_complete_provenance(path, provenance))
    if metrics is not None:
        manifest["metrics"] = plain(dict(metrics))
    if quality is not None:
        quality = plain(dict(quality))
        QualityThresholds.from_manifest(path, quality)
        manifest[QUALITY_KEY] = quality
    if sigma_calibration is not None:
        sigma_calibration = plain(dict(sigma_calibration))
        SigmaCalibration.from_manifest(path, sigma_calibration, list(manifest.get("labels") or []))
        manifest[SIGMA_KEY] = sigma_calibration
    _write_manifest(path, manifest)
    return path


def _write_manifest(path: Path, manifest: dict) -> None:
    atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _complete_provenance(path: Path, provenance: Mapping) -> dict:
    out = dict(provenance)
    if out.get("trained_on") not in TRAINED_ON:
        raise ModelBundleError(
            path, f"provenance trained_on must be one of {TRAINED_ON}, not {out.get('trained_on')!r}"
        )
    out.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    out.setdefault("spemr_version", __version__)
    return out


def _collect_tensors(path: Path, members, region_heads, networks, regions) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    if region_heads and len(region_heads) != len(members):
        raise ModelBundleError(path, f"{len(region_heads)} region head sets for {len(members)} members")
    for member, nets in enumerate(members):
        for network in networks:
            if network not in nets:
                raise ModelBundleError(path, f"member {member} lacks network {network}")
            for key, value in _state_dict(nets[network]).items():
                tensors[base_key(member, network, key)] = value
            for region in regions:
                try:
                    head = region_heads[member][network][region.name]
                except (IndexError, KeyError):
                    raise ModelBundleError(
                        path, f"member {member} network {network} lacks the fc1 of region {region.name}"
                    ) from None
                for param, value in _fc1_state(head).items():
                    tensors[region_key(member, network, region.name, param)] = value
    return _unshare(tensors)


def _state_dict(weights) -> dict[str, torch.Tensor]:
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    return {key: torch.as_tensor(value).detach().to("cpu", torch.float32) for key, value in state.items()}


def _fc1_state(head) -> dict[str, torch.Tensor]:
    """weight/bias of a region fc1 given as nn.Sequential, RRNet, or either's state dict."""
    if isinstance(head, RRNet):
        head = head.fc1
    state = _state_dict(head)
    for prefix in ("0.", "fc1.0."):
        if f"{prefix}weight" in state and f"{prefix}bias" in state:
            return {p: state[prefix + p] for p in ("weight", "bias")}
    raise ValueError(f"not an fc1 head: keys {sorted(state)[:6]}")


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (e.g. a region fc1 copied by reference)."""
    seen: set[int] = set()
    out = {}
    for key, value in tensors.items():
        value = value.contiguous()
        pointer = value.untyped_storage().data_ptr()
        out[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    return out


def _atomic_save(tensors: dict[str, torch.Tensor], target: Path) -> None:
    with atomic_path(target) as temporary:
        save_file(tensors, str(temporary), metadata={"format": FORMAT, "version": str(VERSION)})


# ----------------------------------------------------------- random bundles
def create_random_bundle(
    path: str | Path,
    architecture: RRNetConfig | str = "tiny",
    seed: int = 0,
    regions: Sequence[Region] | None = None,
    statistics: Statistics | Mapping | None = None,
    region_statistics: Mapping[str, Statistics | Mapping] | None = None,
) -> Path:
    """A bundle of randomly initialised networks for tests, benchmarks and demos.

    Region heads are the base fc1 plus noise, so sub-models disagree a little and fusion
    has something to choose. The manifest says trained_on = "random": its numbers mean
    nothing. regions=None gives the default four regions; () gives a base-only bundle.
    region_statistics: regions' own standardisation (see save_bundle).
    """
    architecture = config.architecture(architecture) if isinstance(architecture, str) else architecture
    regions = config.default_regions() if regions is None else tuple(regions)
    labels = [n for n in config.LABELS if any(n in v for v in architecture.networks.values())]
    if statistics is None:
        statistics = placeholder_statistics(labels, architecture.len_spectrum)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        members, heads = [], []
        for _ in range(architecture.members):
            nets = {name: RRNet(architecture, len(names)) for name, names in architecture.networks.items()}
            members.append(nets)
            heads.append({name: {region.name: _perturbed_fc1(net) for region in regions} for name, net in nets.items()})
    return save_bundle(
        path,
        architecture,
        members,
        statistics,
        {"trained_on": "random", "seed": seed, "command": "create_random_bundle"},
        region_heads=heads,
        regions=regions,
        labels=labels,
        region_statistics=region_statistics,
    )


def _perturbed_fc1(net: RRNet) -> dict[str, torch.Tensor]:
    state = {key: value.detach().clone() for key, value in net.fc1.state_dict().items()}
    for value in state.values():
        value += 0.5 * value.std() * torch.randn_like(value)
    return state
