"""The project's constants, read from the JSON presets: one place each for grid,
preprocessing parameters, labels, regions and architectures."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


@lru_cache(maxsize=None)
def _preset(name: str) -> dict:
    text = resources.files("spemr_engine.presets").joinpath(f"{name}.json").read_text()
    return json.loads(text)


# ---------------------------------------------------------------- input grid
@dataclass(frozen=True)
class ArmGrid:
    name: str
    start: float
    step: float
    n_pixels: int

    @property
    def wave(self) -> np.ndarray:
        # start + step * i avoids arange's floating drift at the last pixel.
        return self.start + self.step * np.arange(self.n_pixels, dtype=np.float64)

    @property
    def stop(self) -> float:
        return self.start + self.step * (self.n_pixels - 1)


@dataclass(frozen=True)
class InputGrid:
    arms: tuple[ArmGrid, ...]

    @property
    def wave(self) -> np.ndarray:
        return np.concatenate([arm.wave for arm in self.arms])

    @property
    def n_pixels(self) -> int:
        return sum(arm.n_pixels for arm in self.arms)

    def arm_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for arm in self.arms:
            out[arm.name] = slice(start, start + arm.n_pixels)
            start += arm.n_pixels
        return out

    def to_dict(self) -> dict:
        return {"arms": [vars(a).copy() for a in self.arms]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "InputGrid":
        return cls(tuple(ArmGrid(**{k: a[k] for k in ("name", "start", "step", "n_pixels")}) for a in data["arms"]))


def default_grid() -> InputGrid:
    return InputGrid.from_dict(_preset("grid"))


# ---------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class PreprocessConfig:
    speed_of_light_kms: float
    median_filter_width: int
    outlier_sigma_low: float
    outlier_sigma_high: float
    continuum_poly_order: int
    continuum_max_iterations: int
    clip_min: float
    clip_max: float
    augment_after_epoch: int
    augment_pixel_fraction: float
    augment_noise_sigma: float
    reject_min_snr: float
    reject_max_bad_pixels: int
    reject_max_bad_run: int


def preprocess_config() -> PreprocessConfig:
    data = {k: v for k, v in _preset("preprocessing").items() if not k.startswith("_")}
    return PreprocessConfig(**data)


# ------------------------------------------------------------------ labels
@dataclass(frozen=True)
class LabelInfo:
    name: str
    catalog: str
    published: str
    unit: str
    display: str


def label_infos() -> tuple[LabelInfo, ...]:
    return tuple(LabelInfo(**d) for d in _preset("labels")["labels"])


LABELS: tuple[str, ...] = tuple(info.name for info in label_infos())


def catalog_label_names() -> list[str]:
    """Column names of the published catalog, in catalog order."""
    return [info.catalog for info in label_infos()]


def plausible_training_mean() -> dict[str, tuple[float, float]]:
    """label -> (low, high): where a training set's mean of that label can lie."""
    ranges = _preset("labels")["plausible_training_mean"]
    return {name: tuple(ranges.get(name, ranges["*"])) for name in LABELS}


def published_to_label() -> dict[str, str]:
    """Map published label_config names (e.g. ASPCAP_Teff[K]) to our label names."""
    return {info.published: info.name for info in label_infos()}


# ----------------------------------------------------------------- regions
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}


@dataclass(frozen=True)
class Region:
    """A named part of label space: any_of is a list of clauses, each a list of
    (label, op, value) conditions that must all hold."""

    name: str
    any_of: tuple[tuple[tuple[str, str, float], ...], ...]
    description: str = ""

    def contains(self, labels: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
        """Boolean membership for an (n, n_labels) label array; NaN labels never match."""
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        index = {name: i for i, name in enumerate(label_names)}
        member = np.zeros(len(labels), dtype=bool)
        for clause in self.any_of:
            ok = np.ones(len(labels), dtype=bool)
            for label, op, value in clause:
                with np.errstate(invalid="ignore"):
                    ok &= _OPS[op](labels[:, index[label]], value)
            member |= ok
        return member

    def outside_sigma(self, labels: np.ndarray, sigma: np.ndarray, label_names: Sequence[str]) -> np.ndarray:
        """How far (n, n_labels) labels with 1-sigma errors lie outside the region, in
        sigma: per clause the largest violation of its conditions (0 when it holds), then
        the smallest over clauses. NaN where a needed label or sigma is not finite."""
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
        index = {name: i for i, name in enumerate(label_names)}
        best = np.full(len(labels), np.inf)
        for clause in self.any_of:
            worst = np.zeros(len(labels))
            for label, op, value in clause:
                x, s = labels[:, index[label]], sigma[:, index[label]]
                gap = {">=": value - x, ">": value - x, "<=": x - value, "<": x - value, "==": np.abs(x - value)}.get(
                    op, np.zeros_like(x)
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    worst = np.maximum(worst, np.where(gap > 0, gap / np.where(s > 0, s, np.nan), 0.0))
                worst = np.where(np.isfinite(x) & np.isfinite(s), worst, np.nan)
            best = np.fmin(best, worst)
        return np.where(np.isinf(best), np.nan, best)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "any_of": [[list(c) for c in clause] for clause in self.any_of],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Region":
        for clause in data["any_of"]:
            for _label, op, _value in clause:
                if op not in _OPS:
                    raise ValueError(f"region {data['name']}: unknown operator {op!r}")
        any_of = tuple(tuple((str(l), str(o), float(v)) for l, o, v in clause) for clause in data["any_of"])
        return cls(name=str(data["name"]), any_of=any_of, description=str(data.get("description", "")))


def default_regions() -> tuple[Region, ...]:
    return tuple(Region.from_dict(d) for d in _preset("regions")["regions"])


@dataclass(frozen=True)
class FitQualityConfig:
    spread_labels: tuple[str, ...]
    percentile: float
    region_sigma: float


def fit_quality_config() -> FitQualityConfig:
    data = _preset("fit_quality")
    return FitQualityConfig(
        spread_labels=tuple(str(x) for x in data["spread_labels"]),
        percentile=float(data["percentile"]),
        region_sigma=float(data["region_sigma"]),
    )


# ------------------------------------------------------------ architectures
@dataclass(frozen=True)
class RRNetConfig:
    mode: str
    resblock_channels: tuple[int, ...]
    n_rnn_steps: int
    len_spectrum: int
    fc1_width: int
    fc2_width: int
    dropout: float
    members: int
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d["resblock_channels"] = list(self.resblock_channels)
        d["networks"] = {k: list(v) for k, v in self.networks.items()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> "RRNetConfig":
        d = {k: v for k, v in data.items() if not k.startswith("_")}
        d["resblock_channels"] = tuple(int(c) for c in d["resblock_channels"])
        d["networks"] = {k: tuple(v) for k, v in d["networks"].items()}
        return cls(**d)


def architecture(name: str) -> RRNetConfig:
    presets = _preset("architectures")
    if name not in presets or name.startswith("_"):
        choices = ", ".join(k for k in presets if not k.startswith("_"))
        raise ValueError(f"unknown architecture {name!r} (choose from {choices})")
    return RRNetConfig.from_dict(presets[name])


def architecture_names() -> list[str]:
    return [k for k in _preset("architectures") if not k.startswith("_")]


# ---------------------------------------------------------- training recipe
@dataclass(frozen=True)
class TrainingRecipe:
    """Defaults of a training run (presets/training.json): the one place the recipe's
    numbers are written; TrainSettings, train_model, finetune_bundle, the train and
    finetune commands and the GUI wizard all read them from here."""

    architecture: str
    epochs: int
    finetune_epochs: int
    lr: float
    finetune_lr: float
    batch_size: int
    step_size: int
    gamma: float
    seed: int
    split_fractions: tuple[float, float, float]


@lru_cache(maxsize=None)
def training_recipe() -> TrainingRecipe:
    data = {k: v for k, v in _preset("training").items() if not k.startswith("_") and k != "preset_epochs"}
    fractions = tuple(float(f) for f in data.pop("split_fractions"))
    if len(fractions) != 3:
        raise ValueError("presets/training.json: split_fractions needs three numbers (train, valid, test)")
    return TrainingRecipe(split_fractions=(fractions[0], fractions[1], fractions[2]), **data)


def preset_epochs(architecture: str) -> tuple[int, int]:
    """(epochs, finetune_epochs) an architecture preset runs with in `spemr train --config`
    and starts with in the GUI training wizard: its presets/training.json preset_epochs
    entry (tiny: a quick trial run),
    else the recipe's."""
    entry = _preset("training").get("preset_epochs", {}).get(architecture)
    if entry is not None:
        return int(entry[0]), int(entry[1])
    recipe = training_recipe()
    return recipe.epochs, recipe.finetune_epochs


# ------------------------------------------------------------------- paths
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def packaged_assets_dir() -> Path | None:
    """`spemr_engine/_assets` in an installed wheel (setup.py copies the repository's
    `assets/` there); None in a source checkout or an editable install."""
    root = resources.files("spemr_engine").joinpath("_assets")
    # A wheel is installed unzipped, so this is a real folder: the model and the samples
    # are opened by path (safetensors, astropy, memory maps).
    path = Path(str(root))
    return path if path.is_dir() else None


def assets_dir() -> Path:
    """Shipped assets (default model, emulator, samples, line lists): SPEMR_ASSETS, else
    the ones packaged with an installed wheel, else the repository's `assets/`."""
    import os

    override = os.environ.get("SPEMR_ASSETS")
    if override:
        return Path(override)
    return packaged_assets_dir() or repo_root() / "assets"
