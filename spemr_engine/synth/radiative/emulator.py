"""A Payne-style emulator of the radiative-transfer grid (Ting et al. 2019).

A small fully connected network maps labels + vmic (`presets/rt_grid.json`
emulator_inputs), scaled to [-0.5, 0.5] by the training grid's range, to normalised rest-frame flux on the RT grid (`grid.rt_grid`):
before the rest of the line-spread function, macro-turbulence and rotation, so the
synthetic world's observation model still applies. Inputs outside the training range are
clipped to it: a network extrapolates badly, the edge spectrum is the honest fallback.

Training needs torch; evaluation is plain numpy, so the synthetic world and the fit-quality
measure do not load torch. Stored as `emulator.safetensors` + `emulator.json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import json as _json
from importlib import resources

from ...config import LABELS
from ...io_utils import atomic_write_text
from .grid import RtGrid, RtSpectra, rt_grid

FORMAT = "spemr-rt-emulator"
VERSION = 1
WEIGHTS = "emulator.safetensors"
MANIFEST = "emulator.json"
INPUTS: list[str] = _json.loads(resources.files("spemr_engine.presets").joinpath("rt_grid.json").read_text())[
    "emulator_inputs"
]
_LABEL_COLUMNS = [LABELS.index(name) for name in INPUTS[:-1]]


def inputs_of(labels: np.ndarray, vmic: np.ndarray) -> np.ndarray:
    """Emulator input columns (n, len(INPUTS)) from labels (n, 16) in config.LABELS order."""
    return np.column_stack([np.atleast_2d(labels)[:, _LABEL_COLUMNS], np.atleast_1d(vmic)]).astype(np.float64)


class EmulatorError(ValueError):
    """An emulator folder that cannot be used; the message names the folder."""


@dataclass
class Emulator:
    x_min: np.ndarray  # (17,)
    x_max: np.ndarray  # (17,)
    layers: list[tuple[np.ndarray, np.ndarray]]  # (W (out, in), b (out,)) per layer
    grid: RtGrid = field(default_factory=rt_grid)
    info: dict = field(default_factory=dict)

    def scaled_inputs(self, labels: np.ndarray, vmic: np.ndarray) -> np.ndarray:
        x = inputs_of(labels, vmic)
        x = np.clip(x, self.x_min, self.x_max)
        return (x - self.x_min) / (self.x_max - self.x_min) - 0.5

    def predict(self, labels: np.ndarray, vmic: np.ndarray) -> np.ndarray:
        """Normalised flux (n, grid.n_pixels) for labels (n, 16) and vmic (n,) [km/s]."""
        h = self.scaled_inputs(labels, vmic).astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = h / (1.0 + np.exp(-h))  # SiLU
        return h

    def outside_range(self, labels: np.ndarray, vmic: np.ndarray) -> np.ndarray:
        """True where any input lies outside the training grid's range (then clipped)."""
        x = inputs_of(labels, vmic)
        return np.any((x < self.x_min) | (x > self.x_max), axis=1)

    # ------------------------------------------------------------- storage
    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"x_min": self.x_min.astype(np.float64), "x_max": self.x_max.astype(np.float64)}
        for i, (w, b) in enumerate(self.layers):
            tensors[f"layer{i}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            tensors[f"layer{i}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        save_file(tensors, str(folder / WEIGHTS))
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "inputs": INPUTS,
            "activation": "silu",
            "n_layers": len(self.layers),
            "grid": self.grid.fingerprint(),
            **self.info,
        }
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1), suffix=".part")


def load(folder: str | Path) -> Emulator:
    """Read and validate an emulator folder (every problem is one EmulatorError line)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tensors = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, RuntimeError) as error:
        raise EmulatorError(f"{folder}: not a readable emulator ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise EmulatorError(f"{folder}: not a {FORMAT} v{VERSION} folder")
    if manifest.get("inputs") != INPUTS:
        raise EmulatorError(f"{folder}: inputs are not {', '.join(INPUTS)}")
    grid = rt_grid()
    if manifest.get("grid") != json.loads(json.dumps(grid.fingerprint())):
        raise EmulatorError(f"{folder}: made for another RT grid")
    n_layers = manifest.get("n_layers")
    if not isinstance(n_layers, int) or not 1 <= n_layers <= 8:
        raise EmulatorError(f"{folder}: bad n_layers {n_layers!r}")
    layers, width = [], len(INPUTS)
    for i in range(n_layers):
        w, b = tensors.get(f"layer{i}.weight"), tensors.get(f"layer{i}.bias")
        if (
            w is None
            or b is None
            or w.dtype != np.float32
            or b.dtype != np.float32
            or w.ndim != 2
            or w.shape[1] != width
            or b.shape != (w.shape[0],)
        ):
            raise EmulatorError(f"{folder}: layer {i} missing or of the wrong shape/dtype")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise EmulatorError(f"{folder}: layer {i} has non-finite weights")
        layers.append((w, b))
        width = w.shape[0]
    if width != grid.n_pixels:
        raise EmulatorError(f"{folder}: output has {width} pixels, the RT grid {grid.n_pixels}")
    x_min, x_max = tensors.get("x_min"), tensors.get("x_max")
    if (
        x_min is None
        or x_max is None
        or x_min.shape != (len(INPUTS),)
        or x_max.shape != (len(INPUTS),)
        or not np.all(np.isfinite(x_min))
        or not np.all(x_max > x_min)
    ):
        raise EmulatorError(f"{folder}: bad input range")
    info = {
        k: v for k, v in manifest.items() if k not in ("format", "version", "inputs", "activation", "n_layers", "grid")
    }
    return Emulator(x_min, x_max, layers, grid, info)


# ------------------------------------------------------------------ training
@dataclass(frozen=True)
class EmulatorSettings:
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    lr_final: float = 2e-5
    holdout: float = 0.1
    seed: int = 0
    threads: int = 2


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout): a seeded random permutation, so the split is reproducible."""
    order = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * fraction))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def train(
    spectra: RtSpectra, settings: EmulatorSettings = EmulatorSettings(), progress: Callable[[dict], None] | None = None
) -> tuple[Emulator, dict]:
    """Fit the emulator on part of the grid; returns it and its accuracy on the held-out part."""
    import torch
    from torch import nn

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    train_idx, hold_idx = split_holdout(len(spectra), settings.holdout, settings.seed)
    inputs = inputs_of(spectra.labels, spectra.vmic)
    x_min, x_max = inputs[train_idx].min(axis=0), inputs[train_idx].max(axis=0)
    x_max = np.where(x_max > x_min, x_max, x_min + 1e-3)
    emulator = Emulator(x_min, x_max, [], rt_grid(), {})
    x = torch.tensor(emulator.scaled_inputs(spectra.labels, spectra.vmic), dtype=torch.float32)
    y = torch.tensor(spectra.flux, dtype=torch.float32)
    sizes = (len(INPUTS),) + tuple(settings.hidden) + (y.shape[1],)
    modules: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        modules.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            modules.append(nn.SiLU())
    net = nn.Sequential(*modules)
    output_layer = modules[-1]
    assert isinstance(output_layer, nn.Linear)
    with torch.no_grad():
        output_layer.bias.copy_(y[train_idx].mean(dim=0))
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    steps_per_epoch = max(1, int(np.ceil(len(train_idx) / settings.batch_size)))
    total = settings.epochs * steps_per_epoch
    gamma = (settings.lr_final / settings.lr) ** (1.0 / max(total, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma)
    generator = torch.Generator().manual_seed(settings.seed)
    train_t = torch.tensor(train_idx)
    started = time.monotonic()
    for epoch in range(settings.epochs):
        order = train_t[torch.randperm(len(train_t), generator=generator)]
        for start in range(0, len(order), settings.batch_size):
            batch = order[start : start + settings.batch_size]
            loss = torch.mean((net(x[batch]) - y[batch]) ** 2)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
        if progress and (epoch % 50 == 0 or epoch == settings.epochs - 1):
            progress(
                {
                    "epoch": epoch + 1,
                    "epochs": settings.epochs,
                    "loss": float(loss.detach()),
                    "elapsed_s": time.monotonic() - started,
                }
            )
    linears = [m for m in net if isinstance(m, nn.Linear)]
    emulator.layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in linears]
    metrics = accuracy(emulator, spectra.take(hold_idx))
    emulator.info = {
        "training": {
            "n_grid": len(spectra),
            "n_train": int(len(train_idx)),
            "n_holdout": int(len(hold_idx)),
            "settings": vars_of(settings),
            "train_seconds": round(time.monotonic() - started, 1),
            "holdout_names": [str(n) for n in spectra.names[hold_idx]],
        },
        "holdout_accuracy": metrics,
    }
    return emulator, metrics


def vars_of(settings: EmulatorSettings) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}


def accuracy(emulator: Emulator, spectra: RtSpectra) -> dict:
    """Absolute flux error per window: median and 99th percentile over all pixels and stars."""
    if len(spectra) == 0:
        return {}
    error = np.abs(emulator.predict(spectra.labels, spectra.vmic) - spectra.flux)
    out: dict = {"n_spectra": len(spectra)}
    for name, part in emulator.grid.arm_slices().items():
        e = error[:, part]
        out[name] = {
            "median_abs": float(np.median(e)),
            "p99_abs": float(np.percentile(e, 99)),
            "max_abs": float(e.max()),
            "worst_star_p99": float(np.percentile(e, 99, axis=1).max()),
        }
    return out
