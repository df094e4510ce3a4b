"""Turn a rest-frame synthetic spectrum into what LAMOST MRS delivers.

Per star: a radial velocity; the native pixel grids (coadd: log-linear, dlog10 = 1e-5;
single exposures: 4136 unevenly spaced pixels, red arm stored in descending order) over
the raw coverage (blue ~4894-5390 A, red ~6292-6876 A); a continuum made of a black body
times a smooth per-arm instrument response; photon-like noise at a sampled S/N per arm
(blue lower than red, as in real files); cosmic rays in single exposures (flagged in the
coadd's ORMASK); bad-pixel runs with ivar = 0 and mask bits; edge garbage and padding
rows; sky-line residuals in the red arm at fixed observed wavelengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..reading.lamost import Arm, ArmPair, pixel_masks
from .lines import sky_lines
from .spectrum import sample_fine

COADD_LOG_STEP = 1.0e-5
EXPOSURE_PIXELS = 4136
# Raw coverage of real files (vacuum A): start and end ranges per arm.
COVERAGE = {"B": ((4893.5, 4928.0), (5372.0, 5391.0)), "R": ((6292.0, 6309.0), (6846.0, 6876.0))}
# Smooth instrument response: 1 - curvature * (x - centre)^2 over the arm (x in 0..1),
# read off the continuum shape of real files; red throughput higher than blue.
RESPONSE = {"B": (0.55, 2.0, 1.0), "R": (0.55, 1.2, 2.6)}
BLUE_TO_RED_SNR = (0.35, 0.8)
H_PLANCK_C_OVER_K = 1.4388e8  # hc/k in A K
BIT_BAD = 1  # LAMOST pixel flag used here for bad pixels and cosmics
BIT_EDGE = 4


@dataclass
class RawArm:
    """One arm as stored in a LAMOST MRS file (pixel order as on disk)."""

    extname: str
    side: str
    loglam: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    masks: dict[str, np.ndarray]  # ANDMASK/ORMASK (coadd) or PIXMASK
    snr: float
    exptime: float | None = None
    lmjm: int | None = None

    def to_arm(self) -> Arm:
        """The reader's view: ascending vacuum wavelengths and a boolean bad mask."""
        order = np.argsort(self.loglam, kind="stable")
        flag_bits = self.masks["ORMASK"] if "ORMASK" in self.masks else self.masks["PIXMASK"]
        no_data_bits = self.masks.get("ANDMASK", flag_bits)
        flux, ivar = self.flux[order].astype(np.float64), self.ivar[order].astype(np.float64)
        mask, unusable = pixel_masks(flux, ivar, flag_bits[order], no_data_bits[order])
        return Arm(
            extname=self.extname,
            side=self.side,
            wave=10 ** self.loglam[order].astype(np.float64),
            flux=flux,
            ivar=ivar,
            mask=mask,
            snr=self.snr,
            exptime=self.exptime,
            lmjm=self.lmjm,
            unusable=unusable,
        )


@dataclass
class Observation:
    """A synthetic MRS observation of one star: the coadd and its single exposures."""

    coadd: tuple[RawArm, RawArm]
    exposures: list[tuple[RawArm, RawArm]]
    rv: float
    meta: dict = field(default_factory=dict)

    def pairs(self) -> list[ArmPair]:
        """Coadd first, then exposures by LMJM: as read_mrs orders them."""
        out = [ArmPair(blue=self.coadd[0].to_arm(), red=self.coadd[1].to_arm(), lmjm=None)]
        for blue, red in self.exposures:
            out.append(ArmPair(blue=blue.to_arm(), red=red.to_arm(), lmjm=blue.lmjm))
        return out


@dataclass
class Conditions:
    """Everything about an observation that is not the star: drawn from a seed."""

    rv: float
    helio_rv: float
    snr_red: float
    blue_to_red: float
    n_exp: int
    exptime: float
    lmjm0: int
    transparency: np.ndarray
    sky_strength: float
    coverage: dict
    response_wiggle: dict


def sample_conditions(
    rng: np.random.Generator,
    labels_row: np.ndarray | None = None,
    snr_range: tuple[float, float] = (12.0, 250.0),
    n_exp: int | None = None,
    rv: float | None = None,
) -> Conditions:
    """Observing conditions; S/N is log-distributed with most spectra at 15-60 (red arm)."""
    halo_like = labels_row is not None and labels_row[2] < -1.0
    rv_scale = 110.0 if halo_like else 35.0
    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    snr = float(np.exp(np.clip(rng.normal(np.log(45), 0.65), lo, hi)))
    n = int(n_exp if n_exp is not None else rng.integers(2, 8))
    coverage = {side: (rng.uniform(*start), rng.uniform(*end)) for side, (start, end) in COVERAGE.items()}
    return Conditions(
        rv=float(rv if rv is not None else rng.normal(0, rv_scale)),
        helio_rv=float(rng.uniform(-30, 30)),
        snr_red=snr,
        blue_to_red=float(rng.uniform(*BLUE_TO_RED_SNR)),
        n_exp=n,
        exptime=float(rng.choice([600.0, 900.0, 1200.0])),
        lmjm0=int(rng.integers(83_500_000, 84_900_000)),
        transparency=rng.uniform(0.55, 1.1, n),
        sky_strength=float(rng.lognormal(np.log(0.03), 0.6)),
        coverage=coverage,
        response_wiggle={side: rng.normal(0, [0.08, 0.15, 0.05]) for side in COVERAGE},
    )


# ------------------------------------------------------------------- grids
def coadd_loglam(start: float, end: float) -> np.ndarray:
    n = int(np.log10(end / start) / COADD_LOG_STEP)
    return np.log10(start) + COADD_LOG_STEP * np.arange(n)


def exposure_loglam(start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """4136 unevenly spaced pixels (dlog10 ~0.75e-5 to 1.1e-5) from a smooth wavelength
    solution, ascending."""
    u = np.linspace(0, 1, EXPOSURE_PIXELS - 1)
    spacing = 1 + 0.17 * (2 * u - 1) + rng.uniform(-0.03, 0.03) * np.sin(3 * np.pi * u)
    steps = spacing / spacing.sum() * np.log10(end / start)
    return np.log10(start) + np.concatenate([[0], np.cumsum(steps)])


# --------------------------------------------------------------- continuum
def black_body(wave: np.ndarray, teff: float) -> np.ndarray:
    return wave**-5 / np.expm1(H_PLANCK_C_OVER_K / (wave * teff))


def continuum(wave: np.ndarray, side: str, teff: float, wiggle: np.ndarray) -> np.ndarray:
    """Black body times the arm's smooth response, in relative counts (max ~1 per arm
    for a 5000 K star, red arm brighter)."""
    x = (wave - wave.min()) / np.ptp(wave)
    centre, curvature, throughput = RESPONSE[side]
    tilt, bend, ripple = wiggle
    response = 1 - (curvature + bend) * (x - centre) ** 2 + tilt * (x - 0.5) + ripple * np.sin(2 * np.pi * x)
    reference = black_body(np.array([5800.0]), 5000.0)[0]
    return throughput * np.clip(response, 0.05, None) * black_body(wave, teff) / reference


# ---------------------------------------------------------- defects + noise
def add_noise(counts: np.ndarray, snr: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Photon-like noise: variance proportional to counts, scaled to the wanted median S/N."""
    level = np.median(counts)
    variance = np.clip(counts, 0.05 * level, None) * level / snr**2
    return counts + rng.standard_normal(counts.size) * np.sqrt(variance), 1.0 / variance


def sky_residuals(wave: np.ndarray, level: float, strength: float, rng, resolution: float = 7500.0):
    """Residuals of imperfect sky subtraction at sky-line positions (observed frame)."""
    out = np.zeros_like(wave)
    for line in sky_lines():
        if wave[0] < line < wave[-1]:
            sigma = line / resolution / 2.3548
            amp = strength * level * rng.normal(0, 1) * rng.uniform(0.3, 1.5)
            out += amp * np.exp(-0.5 * ((wave - line) / sigma) ** 2)
    return out


def cosmic_rays(n_pixels: int, level: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Cosmic-ray residuals the LAMOST 2-D cleaning left in an extracted exposure: a few
    positive spikes, mostly one pixel wide, up to a few times the continuum."""
    spikes = np.zeros(n_pixels)
    where: list[int] = []
    for _ in range(rng.poisson(1.5)):
        start = int(rng.integers(0, n_pixels - 2))
        width = 1 if rng.random() < 0.8 else 2
        spikes[start : start + width] += level * rng.uniform(0.2, 3.0) * rng.uniform(0.5, 1, width)
        where.extend(range(start, start + width))
    return spikes, np.array(where, dtype=int)


def bad_runs(n_pixels: int, rng, probability: float = 0.08) -> np.ndarray:
    """A run of dead pixels (3-40 long) with the given probability; boolean mask."""
    bad = np.zeros(n_pixels, dtype=bool)
    if rng.random() < probability:
        start = int(rng.integers(0, n_pixels - 40))
        bad[start : start + int(rng.integers(3, 41))] = True
    return bad


def _snr(flux: np.ndarray, ivar: np.ndarray) -> float:
    good = ivar > 0
    return round(float(np.median(flux[good] * np.sqrt(ivar[good]))), 2) if good.any() else 0.0


# ------------------------------------------------------------- one arm
def _exposure_arm(fine, side, loglam, teff, cond: Conditions, k: int, rng) -> RawArm:
    wave = 10**loglam
    normalised = sample_fine(fine, wave, cond.rv)[0]
    cont = continuum(wave, side, teff, cond.response_wiggle[side]) * cond.transparency[k]
    counts = normalised * cont
    snr = _arm_snr(cond, side) / np.sqrt(cond.n_exp) * np.sqrt(cond.transparency[k] / cond.transparency.mean())
    if side == "R":
        counts = counts + sky_residuals(wave, np.median(cont), cond.sky_strength, rng)
    flux, ivar = add_noise(counts, snr, rng)
    spikes, _ = cosmic_rays(flux.size, np.median(cont), rng)
    flux += spikes
    pixmask = np.zeros(flux.size, dtype=np.int16)
    dead = bad_runs(flux.size, rng)
    flux[dead], ivar[dead], pixmask[dead] = 0.0, 0.0, BIT_BAD
    # The first few pixels of a raw exposure are junk, flagged.
    edge = int(rng.integers(4, 12))
    pixmask[:edge] = BIT_EDGE
    flux[:edge] = -np.abs(rng.normal(0, 1e6, edge))
    lmjm = cond.lmjm0 + 14 * k
    order = slice(None) if side == "B" else slice(None, None, -1)
    arm = RawArm(
        extname=f"{side}-{lmjm}",
        side=side,
        loglam=loglam[order].astype(np.float32),
        flux=flux[order].astype(np.float32),
        ivar=ivar[order].astype(np.float32),
        masks={"PIXMASK": pixmask[order]},
        snr=0.0,
        exptime=cond.exptime,
        lmjm=lmjm,
    )
    arm.snr = _snr(flux[edge:], ivar[edge:])
    return arm


def _arm_snr(cond: Conditions, side: str) -> float:
    return cond.snr_red if side == "R" else cond.snr_red * cond.blue_to_red


def _coadd_arm(fine, side, loglam, teff, cond: Conditions, cosmic_hits: int, rng) -> RawArm:
    wave = 10**loglam
    normalised = sample_fine(fine, wave, cond.rv)[0]
    cont = continuum(wave, side, teff, cond.response_wiggle[side]) * cond.transparency.mean()
    counts = normalised * cont
    if side == "R":
        counts = counts + sky_residuals(wave, np.median(cont), cond.sky_strength / np.sqrt(cond.n_exp), rng)
    flux, ivar = add_noise(counts, _arm_snr(cond, side), rng)
    ormask = np.zeros(flux.size, dtype=np.int16)
    andmask = np.zeros(flux.size, dtype=np.int16)
    # Pixels where some exposure had a cosmic ray: rejected in the coadd, flagged in ORMASK.
    ormask[rng.integers(0, flux.size, cosmic_hits)] = BIT_BAD
    dead = bad_runs(flux.size, rng, probability=0.04)
    flux[dead], ivar[dead] = 0.0, 0.0
    andmask[dead], ormask[dead] = BIT_BAD, BIT_BAD
    # Padding rows at the red end of the table: zero flux and ivar (as in real coadds).
    pad = int(rng.integers(3, 30))
    flux[-pad:], ivar[-pad:] = 0.0, 0.0
    arm = RawArm(
        extname=f"COADD_{side}",
        side=side,
        loglam=loglam.astype(np.float32),
        flux=flux.astype(np.float32),
        ivar=ivar.astype(np.float32),
        masks={"ANDMASK": andmask, "ORMASK": ormask},
        snr=0.0,
    )
    arm.snr = _snr(flux, ivar)
    return arm


def observe(
    fine: dict[str, np.ndarray], teff: float, cond: Conditions, rng: np.random.Generator, exposures: bool = True
) -> Observation:
    """Observe one star. ``fine`` holds that star's fine-grid rest-frame spectra (1, m)
    per arm (spectrum.render for one row)."""
    coadd: dict[str, RawArm] = {}
    singles: dict[str, list[RawArm]] = {side: [] for side in COVERAGE}
    for side, (start, end) in cond.coverage.items():
        if exposures:
            loglam = exposure_loglam(start - 0.1, end + 0.1, rng)
            singles[side] = [_exposure_arm(fine, side, loglam, teff, cond, k, rng) for k in range(cond.n_exp)]
        coadd[side] = _coadd_arm(
            fine, side, coadd_loglam(start, end), teff, cond, int(rng.poisson(3 * cond.n_exp)), rng
        )
    pairs = list(zip(singles["B"], singles["R"]))
    meta = {"rv": cond.rv, "helio_rv": cond.helio_rv, "n_exp": cond.n_exp if exposures else 0}
    return Observation(coadd=(coadd["B"], coadd["R"]), exposures=pairs, rv=cond.rv, meta=meta)
