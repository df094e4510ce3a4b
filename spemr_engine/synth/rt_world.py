"""Generator version 2: the synthetic world with radiative-transfer lines.

Atomic and hydrogen lines come from the emulator of the Turbospectrum grid (already
broadened to R = 20,000, `radiative.grid`), so line strengths follow model atmospheres
rather than a one-layer curve of growth. What LTE radiative transfer without molecules gets
wrong here is kept empirical and stated in `presets/synthetic_world.json`: molecular bands
(version 1's pseudo-line bands) and a deeper H-alpha core. Outside the emulator's range
(only the edges of the raw arms, outside the model grid) version 1's atomic lines fill in.
The rest of the LSF, macro-turbulence and rotation are applied as in version 1.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from ..config import assets_dir
from . import spectrum as sp
from .radiative import emulator as emu
from .radiative.grid import RtGrid, rt_grid


@lru_cache(maxsize=1)
def world_settings() -> dict:
    return json.loads(resources.files("spemr_engine.presets").joinpath("synthetic_world.json").read_text())


@lru_cache(maxsize=1)
def default_emulator() -> emu.Emulator:
    """The shipped emulator (assets/emulator); a clear error where it is missing."""
    folder = assets_dir() / world_settings()["emulator"]
    return emu.load(folder)


def sample_halpha_core(rng: np.random.Generator) -> float:
    """A star's H-alpha core strength relative to the calibrated one (log-normal, median 1):
    activity makes real cores differ, and a model must not read Teff off the core alone."""
    return float(np.exp(rng.normal(0.0, world_settings()["halpha_core"]["log_scatter"])))


@lru_cache(maxsize=1)
def emulator_id() -> str:
    """Short content hash of the shipped emulator's weights: world 2 is that emulator."""
    import hashlib

    folder = assets_dir() / world_settings()["emulator"]
    digest = hashlib.sha256()
    with open(folder / emu.WEIGHTS, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def halpha_core_absorption(arm: sp.FineArm, labels: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
    """Extra H-alpha core optical depth (n, arm.n): what LTE misses (chromosphere, NLTE)."""
    par = world_settings()["halpha_core"]
    out = np.zeros((len(labels), arm.n))
    wave = arm.wave
    lo, hi = np.searchsorted(wave, [par["centre_A"] - 8 * par["width_A"], par["centre_A"] + 8 * par["width_A"]])
    if hi <= lo:
        return out
    tau0 = np.minimum(par["tau0"] * 10 ** (par["teff_slope"] * (labels[:, 0] - 5000.0) / 1000.0), par["tau_max"])
    if strength is not None:
        tau0 = tau0 * strength
    d = wave[lo:hi] - par["centre_A"]
    out[:, lo:hi] = tau0[:, None] * np.exp(-((d[None, :] / par["width_A"]) ** 2))
    return out


def _rt_on_fine(arm: sp.FineArm, flux: np.ndarray, grid: RtGrid) -> tuple[np.ndarray, np.ndarray]:
    """RT-grid flux of one arm interpolated onto the fine grid, and the blend weight
    (1 inside the RT grid's range, ramping to 0 over edge_taper_A at its ends)."""
    rt_arm = next(a for a in grid.arms if a.name == arm.name)
    part = grid.arm_slices()[arm.name]
    pos = (arm.log_wave - rt_arm.log_start) / grid.log_step
    i = np.clip(np.floor(pos).astype(int), 0, rt_arm.n - 2)
    f = np.clip(pos - i, 0.0, 1.0)
    values = flux[:, part]
    on_fine = values[:, i] * (1 - f) + values[:, i + 1] * f
    wave = arm.wave
    first, last = grid.arm_wave(rt_arm)[[0, -1]]
    taper = world_settings()["edge_taper_A"]
    weight = np.clip(np.minimum(wave - first, last - wave) / taper, 0.0, 1.0)
    return on_fine, weight


def render(
    labels: np.ndarray,
    broadening: sp.Broadening,
    emulator: emu.Emulator | None = None,
    rt_flux: np.ndarray | None = None,
    empirical: bool = True,
) -> dict[str, np.ndarray]:
    """Fine-grid normalised rest-frame flux per arm for a batch of stars (as spectrum.render).

    ``rt_flux`` (n, RT pixels): radiative-transfer spectra to use instead of the emulator's
    (to observe grid stars themselves); ``empirical=False`` leaves out the molecular bands and
    the extra H-alpha core (pure LTE radiative transfer)."""
    labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
    if rt_flux is None:
        emulator = emulator or default_emulator()
        rt_flux = emulator.predict(labels, broadening.vmic)
    grid = rt_grid()
    if rt_flux.shape != (len(labels), grid.n_pixels):
        raise ValueError(f"rt_flux has shape {rt_flux.shape}, expected ({len(labels)}, {grid.n_pixels})")
    rt_flux = np.asarray(rt_flux, dtype=np.float64)
    pre_sigma = grid.pre_sigma_kms
    widths, wings = sp.line_widths(labels, broadening.vmic)
    out = {}
    for arm in sp.fine_arms():
        on_fine, weight = _rt_on_fine(arm, rt_flux, grid)
        atomic = on_fine
        if np.any(weight < 1):
            old = np.exp(
                -np.clip(sp.gaussian_smooth(sp.atomic_absorption(arm.name, widths, wings), pre_sigma), 0, None)
            )
            atomic = weight * on_fine + (1 - weight) * old
        if empirical:
            extra = sp.band_absorption(arm.name, labels) + halpha_core_absorption(arm, labels, broadening.halpha_core)
            if extra.any():
                atomic = atomic * np.exp(-np.clip(sp.gaussian_smooth(extra, pre_sigma), 0, None))
        depth = sp.convolve(1.0 - atomic, broadening, applied_sigma_kms=pre_sigma)
        out[arm.name] = np.clip(1.0 - depth, 0.0, None)
    return out
