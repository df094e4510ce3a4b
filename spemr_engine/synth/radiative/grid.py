"""The rest-frame grid of radiative-transfer spectra, conversion onto it and compact storage.

Turbospectrum writes normalised flux in air wavelengths at 0.02 A. Stored at that
sampling a star costs ~0.4 MB; on this grid (vacuum, log-uniform 4.1 km/s, already
broadened to R = 20,000, i.e. a part of the LAMOST line-spread function that every star
gets anyway) it costs ~23 kB and loses nothing the observation model would keep.
Gaussians compose in quadrature, so `remaining_sigma_kms` tells the observation model how
much LSF is left to apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ...config import LABELS, preprocess_config
from ...io_utils import atomic_write
from ...reading.lamost import air_to_vacuum

C_KMS = preprocess_config().speed_of_light_kms
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
OVERSAMPLE = 6  # working grid for the pre-broadening: log_step / OVERSAMPLE


@dataclass(frozen=True)
class RtArm:
    name: str
    log_start: float
    n: int


@dataclass(frozen=True)
class RtGrid:
    r_pre: float
    log_step: float
    arms: tuple[RtArm, ...]
    flux_scale: int

    @property
    def n_pixels(self) -> int:
        return sum(a.n for a in self.arms)

    def arm_wave(self, arm: RtArm) -> np.ndarray:
        return 10 ** (arm.log_start + self.log_step * np.arange(arm.n))

    @property
    def wave(self) -> np.ndarray:
        return np.concatenate([self.arm_wave(a) for a in self.arms])

    def arm_slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for arm in self.arms:
            out[arm.name] = slice(start, start + arm.n)
            start += arm.n
        return out

    @property
    def pre_sigma_kms(self) -> float:
        return C_KMS / self.r_pre * FWHM_TO_SIGMA

    def remaining_sigma_kms(self, resolution: np.ndarray) -> np.ndarray:
        """Gaussian sigma [km/s] still to apply for an instrument of resolving power R."""
        total = C_KMS / np.asarray(resolution, dtype=np.float64) * FWHM_TO_SIGMA
        return np.sqrt(np.clip(total**2 - self.pre_sigma_kms**2, 0.0, None))

    def fingerprint(self) -> dict:
        return {
            "r_pre": self.r_pre,
            "log_step": self.log_step,
            "flux_scale": self.flux_scale,
            "arms": [[a.name, a.log_start, a.n] for a in self.arms],
        }


@lru_cache(maxsize=1)
def rt_grid() -> RtGrid:
    spec = json.loads(resources.files("spemr_engine.presets").joinpath("rt_grid.json").read_text())
    step = float(spec["log_step"])
    arms = []
    for a in spec["arms"]:
        log_start = float(np.log10(a["start"]))
        n = int(np.floor((np.log10(a["stop"]) - log_start) / step)) + 1
        arms.append(RtArm(a["name"], log_start, n))
    return RtGrid(float(spec["r_pre"]), step, tuple(arms), int(spec["flux_scale"]))


def from_turbospectrum(wave_air: np.ndarray, norm: np.ndarray, grid: RtGrid | None = None) -> np.ndarray:
    """Normalised flux on the RT grid from one Turbospectrum spectrum (air wavelengths,
    any sampling finer than the grid, covering each arm). Returns (grid.n_pixels,) float64."""
    grid = grid or rt_grid()
    wave_air = np.asarray(wave_air, dtype=np.float64)
    norm = np.asarray(norm, dtype=np.float64)
    order = np.argsort(wave_air, kind="stable")
    log_vac = np.log10(air_to_vacuum(wave_air[order]))
    norm = norm[order]
    fine_step = grid.log_step / OVERSAMPLE
    sigma_px = grid.pre_sigma_kms / (C_KMS * np.log(10) * fine_step)
    pad = int(np.ceil(5 * sigma_px))
    out = []
    for arm in grid.arms:
        fine_log = arm.log_start + fine_step * np.arange(-pad, arm.n * OVERSAMPLE + pad)
        if fine_log[0] < log_vac[0] or fine_log[-1] > log_vac[-1]:
            raise ValueError(
                f"spectrum does not cover the {arm.name} arm of the RT grid "
                f"({10 ** fine_log[0]:.1f}-{10 ** fine_log[-1]:.1f} A vacuum)"
            )
        # A jump between the two Turbospectrum windows must not be bridged: check spacing.
        inside = (log_vac >= fine_log[0]) & (log_vac <= fine_log[-1])
        if np.max(np.diff(log_vac[inside])) > 4 * fine_step:
            raise ValueError(f"spectrum has a gap inside the {arm.name} arm of the RT grid")
        fine = np.interp(fine_log, log_vac, norm)
        smooth = gaussian_filter1d(fine, sigma_px, mode="nearest")
        out.append(smooth[pad : pad + arm.n * OVERSAMPLE : OVERSAMPLE])
    return np.concatenate(out)


# ----------------------------------------------------------------- storage
@dataclass
class RtSpectra:
    """Radiative-transfer spectra on the RT grid with what made them."""

    flux: np.ndarray  # (N, P) float32 normalised flux
    labels: np.ndarray  # (N, 16) config.LABELS order
    vmic: np.ndarray  # (N,) km/s used in the synthesis
    vmac: np.ndarray  # (N,) broadening drawn for the star (not in flux)
    vsini: np.ndarray
    resolution: np.ndarray
    names: np.ndarray  # (N,) str

    FIELDS = ("flux", "labels", "vmic", "vmac", "vsini", "resolution", "names")

    def __len__(self) -> int:
        return len(self.names)

    def take(self, index) -> "RtSpectra":
        return RtSpectra(*(getattr(self, f)[index] for f in self.FIELDS))

    @classmethod
    def concatenate(cls, parts: "list[RtSpectra]") -> "RtSpectra":
        """The stars of every part, in order."""
        if not parts:
            raise ValueError("no RT spectra to put together")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.FIELDS))


def save_chunk(path: str | Path, spectra: RtSpectra, grid: RtGrid | None = None) -> None:
    """One compressed chunk; flux quantised to uint16 (step 1/flux_scale = 1.7e-5)."""
    grid = grid or rt_grid()
    quantised = np.round(np.clip(spectra.flux, 0, 65535 / grid.flux_scale) * grid.flux_scale)
    path = Path(path)
    atomic_write(
        path,
        lambda f: np.savez_compressed(
            f,
            flux_u16=quantised.astype(np.uint16),
            labels=spectra.labels.astype(np.float64),
            vmic=spectra.vmic,
            vmac=spectra.vmac,
            vsini=spectra.vsini,
            resolution=spectra.resolution,
            names=np.asarray(spectra.names, dtype=str),
            label_names=np.asarray(LABELS),
            grid=json.dumps(grid.fingerprint()),
        ),
        binary=True,
        suffix=".part",
    )


def load_chunks(paths, grid: RtGrid | None = None) -> RtSpectra:
    """Chunks in the given order, checked against the current RT grid."""
    grid = grid or rt_grid()
    parts = []
    for path in paths:
        with np.load(path, allow_pickle=False) as d:
            if json.loads(str(d["grid"])) != json.loads(json.dumps(grid.fingerprint())):
                raise ValueError(f"{path}: made on another RT grid")
            if list(d["label_names"]) != list(LABELS):
                raise ValueError(f"{path}: labels are not {', '.join(LABELS)}")
            parts.append(
                RtSpectra(
                    d["flux_u16"].astype(np.float32) / grid.flux_scale,
                    d["labels"],
                    d["vmic"],
                    d["vmac"],
                    d["vsini"],
                    d["resolution"],
                    d["names"],
                )
            )
    if not parts:
        raise ValueError("no RT grid chunks given")
    return RtSpectra.concatenate(parts)


def load_turbospectrum_grid(path: str | Path, grid: RtGrid | None = None, names: set[str] | None = None) -> RtSpectra:
    """A grid in the reference tools' format (`grid.npz`: wave_air, norm (N, P), labels,
    vmic, vmac, vsini, R, names; e.g. ../shared/data/turbospectrum_grid) on the RT grid;
    ``names``: only those stars (only they are converted)."""
    with np.load(path, allow_pickle=False) as d:
        missing = {"wave_air", "norm", "labels", "vmic", "vmac", "vsini", "R", "names"} - set(d.files)
        if missing:
            raise ValueError(f"{path}: not a Turbospectrum grid (missing {', '.join(sorted(missing))})")
        keep = [i for i, name in enumerate(d["names"]) if names is None or str(name) in names]
        norm = d["norm"]
        flux = (
            np.stack([from_turbospectrum(d["wave_air"], norm[i], grid) for i in keep])
            if keep
            else np.empty((0, (grid or rt_grid()).n_pixels))
        )
        return RtSpectra(
            flux.astype(np.float32),
            d["labels"][keep],
            d["vmic"][keep],
            d["vmac"][keep],
            d["vsini"][keep],
            d["R"][keep],
            d["names"][keep],
        )


def load_any(paths, grid: RtGrid | None = None) -> RtSpectra:
    """RT grid chunks and reference-tool grids (told apart by their keys), in order."""
    parts = []
    for path in paths:
        with np.load(path, allow_pickle=False) as d:
            is_chunk = "flux_u16" in d.files
        parts.append(load_chunks([path], grid) if is_chunk else load_turbospectrum_grid(path, grid))
    if not parts:
        raise ValueError("no RT grid files given")
    return RtSpectra.concatenate(parts)


def load_directory(directory: str | Path) -> RtSpectra:
    return load_chunks(sorted(Path(directory).glob("*.npz")))
