"""Synthetic stellar labels with the imbalance of the LAMOST x APOGEE reference set.

The real reference set is dominated by red-clump and red-giant-branch stars and by FGK
dwarfs; hot (> 6500 K), cool (< 4000 K) and metal-poor ([Fe/H] < -1) stars are a few
per cent each (paper, Figures 2-4). That imbalance is what SPEMR's region fine-tuning
answers, so the generator reproduces it. Stars are placed along a compact
parametrisation of 7 Gyr MIST isochrones (main sequence, subgiant branch, RGB, red clump;
read off ``mist_iso_7gyr.csv`` once, encoded below so nothing is needed at run time), and
abundances follow Galactic chemical-evolution trends: [alpha/Fe] rising at low [Fe/H]
(thin disc, thick disc, halo), [Mn/Fe] falling with [Fe/H], and the first dredge-up
lowering C and raising N on the giant branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import LABELS

# ----------------------------------------------------------- populations
# name -> share of the sample. Tuned so that Teff, logg and [Fe/H] means/stds come out
# near the published training-set statistics (5160 +- 555 K, 3.43 +- 0.98, -0.16 +- 0.27).
POPULATIONS = {"red_clump": 0.27, "rgb": 0.25, "subgiant": 0.08, "dwarf": 0.355, "hot": 0.025, "m_dwarf": 0.012}

# Metallicity components: (share, mean, std, [alpha/Fe] plateau).
METALLICITY_COMPONENTS = {"thin": (0.80, -0.07, 0.15), "thick": (0.175, -0.42, 0.20), "halo": (0.025, -1.40, 0.35)}
FEH_RANGE = (-2.5, 0.6)

# Solar-metallicity 7 Gyr main sequence (Teff [K], logg), from MIST.
_MS_TEFF = np.array([3200.0, 3500.0, 4000.0, 4500.0, 5000.0, 5500.0, 5800.0, 6000.0, 6400.0])
_MS_LOGG = np.array([5.05, 4.92, 4.70, 4.62, 4.56, 4.47, 4.38, 4.25, 4.15])
# Metal-poor stars are hotter at the same mass: the isochrone shifts by this much per dex.
_MS_SHIFT_PER_DEX = 650.0
_TURNOFF_TEFF = 5980.0  # solar; -700 K per dex of [Fe/H]
_TURNOFF_PER_DEX = -700.0
# RGB: Teff = a + (logg - 2.78) / slope - 500 [Fe/H] (fits the three MIST tracks).
_RGB_TEFF_AT_278 = 4640.0
_RGB_DLOGG_DTEFF = 0.00191
_RGB_PER_DEX = -500.0
_RC_TEFF, _RC_PER_DEX, _RC_LOGG = 4700.0, -450.0, 2.42

# [X/Fe] model per label: (alpha coefficient, offset, scatter). Offsets put the means near
# the published [X/H] means; scatters bring the stds near the published ones.
ABUNDANCE_MODEL = {
    "CH": (0.30, 0.06, 0.08),
    "NH": (0.10, -0.10, 0.14),
    "OH": (1.00, 0.06, 0.07),
    "MgH": (1.00, 0.03, 0.05),
    "AlH": (0.60, 0.08, 0.11),
    "SiH": (0.80, 0.04, 0.05),
    "SH": (0.80, 0.02, 0.09),
    "KH": (0.60, 0.05, 0.11),
    "CaH": (0.70, 0.00, 0.05),
    "TiH": (0.70, -0.05, 0.14),
    "CrH": (0.00, -0.08, 0.19),
    "MnH": (0.30, -0.02, 0.06),
    "NiH": (0.10, 0.025, 0.05),
}
MN_FEH_SLOPE = 0.25  # [Mn/Fe] rises with [Fe/H]
DREDGE_UP = {"CH": -0.15, "NH": +0.35}  # first dredge-up on the upper giant branch


@dataclass
class LabelSample:
    """Labels (n, 16) in config.LABELS order plus how each star was drawn."""

    labels: np.ndarray
    population: np.ndarray  # str per star
    component: np.ndarray  # "thin" | "thick" | "halo"

    def __len__(self) -> int:
        return len(self.labels)

    def column(self, name: str) -> np.ndarray:
        return self.labels[:, LABELS.index(name)]


def _choice(rng: np.random.Generator, table: dict, n: int) -> np.ndarray:
    names = list(table)
    shares = np.array([table[k] if np.isscalar(table[k]) else table[k][0] for k in names], float)
    return np.array(names)[rng.choice(len(names), size=n, p=shares / shares.sum())]


def main_sequence_logg(teff: np.ndarray, feh: np.ndarray) -> np.ndarray:
    return np.interp(teff + _MS_SHIFT_PER_DEX * feh, _MS_TEFF, _MS_LOGG)


def turnoff_teff(feh: np.ndarray) -> np.ndarray:
    return _TURNOFF_TEFF + _TURNOFF_PER_DEX * feh


def rgb_teff(logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
    return _RGB_TEFF_AT_278 + (logg - 2.78) / _RGB_DLOGG_DTEFF + _RGB_PER_DEX * feh


def _metallicity(rng, component: np.ndarray) -> np.ndarray:
    feh = np.empty(component.size)
    for name, (_share, mean, std) in METALLICITY_COMPONENTS.items():
        pick = component == name
        feh[pick] = rng.normal(mean, std, pick.sum())
    return np.clip(feh, *FEH_RANGE)


def _place(rng, population: np.ndarray, feh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Teff and logg along the isochrone branch of each star's population."""
    n = population.size
    teff, logg = np.empty(n), np.empty(n)
    z = lambda pick: rng.standard_normal(pick.sum())

    pick = population == "dwarf"
    t_to = turnoff_teff(feh[pick])
    teff[pick] = np.clip(t_to - np.abs(rng.normal(0, 480, pick.sum())) - 100, 4000, None)
    logg[pick] = main_sequence_logg(teff[pick], feh[pick]) + 0.07 * z(pick)

    pick = population == "subgiant"
    u = rng.uniform(0, 1, pick.sum())
    t_to, t_base = turnoff_teff(feh[pick]), rgb_teff(np.full(pick.sum(), 3.45), feh[pick])
    teff[pick] = t_to - u * (t_to - t_base) + 60 * z(pick)
    logg[pick] = 4.05 - 0.6 * u + 0.08 * z(pick)

    pick = population == "rgb"
    logg[pick] = np.clip(3.5 - rng.exponential(0.75, pick.sum()), 0.6, None)
    teff[pick] = rgb_teff(logg[pick], feh[pick]) + 60 * z(pick)

    pick = population == "red_clump"
    teff[pick] = _RC_TEFF + _RC_PER_DEX * feh[pick] + 70 * z(pick)
    logg[pick] = _RC_LOGG + 0.05 * feh[pick] + 0.10 * z(pick)

    pick = population == "hot"
    teff[pick] = 6500 + np.minimum(rng.exponential(250, pick.sum()), 1300)
    logg[pick] = 4.15 - 0.25e-3 * (teff[pick] - 6500) + 0.15 * z(pick)

    pick = population == "m_dwarf"
    teff[pick] = rng.uniform(3300, 4000, pick.sum())
    logg[pick] = main_sequence_logg(teff[pick], feh[pick]) + 0.06 * z(pick)
    return teff, np.clip(logg, 0.0, 5.3)


def alpha_enhancement(feh: np.ndarray, component: np.ndarray) -> np.ndarray:
    """[alpha/Fe]: thin disc slightly rising to low [Fe/H]; thick disc high below -0.6
    and falling towards solar; halo on the plateau."""
    thin = np.clip(-0.08 * feh, -0.05, 0.12)
    thick = np.where(feh < -0.6, 0.27, 0.27 - 0.28 * (feh + 0.6))
    return np.select([component == "halo", component == "thick"], [0.30, np.clip(thick, 0.05, 0.3)], thin)


def _abundances(rng, feh, logg, teff, component) -> dict[str, np.ndarray]:
    alpha = alpha_enhancement(feh, component)
    # Dredge-up grows from the subgiant branch (logg 3.8) to the RGB (logg < 3.2).
    giant = np.clip((3.8 - logg) / 0.6, 0, 1) * (teff < 5600)
    out = {}
    for label, (coef, offset, scatter) in ABUNDANCE_MODEL.items():
        x_fe = coef * alpha + offset + scatter * rng.standard_normal(feh.size)
        x_fe += DREDGE_UP.get(label, 0.0) * giant
        if label == "MnH":
            x_fe += MN_FEH_SLOPE * feh
        out[label] = feh + x_fe
    return out


def sample_labels(n: int, seed: int | np.random.Generator = 0) -> LabelSample:
    """Draw ``n`` stars; the same seed gives the same stars."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    population = _choice(rng, POPULATIONS, n)
    component = _choice(rng, METALLICITY_COMPONENTS, n)
    # Hot stars are young: thin disc only.
    component[population == "hot"] = "thin"
    feh = _metallicity(rng, component)
    teff, logg = _place(rng, population, feh)
    columns = {"Teff": teff, "Logg": logg, "FeH": feh, **_abundances(rng, feh, logg, teff, component)}
    labels = np.stack([columns[name] for name in LABELS], axis=1)
    return LabelSample(labels=labels, population=population, component=component)


def region_shares(labels: np.ndarray) -> dict[str, float]:
    """Fractions of hot, cool and metal-poor stars (the paper's sparse regions)."""
    teff, feh = labels[:, LABELS.index("Teff")], labels[:, LABELS.index("FeH")]
    return {
        "hot": float(np.mean(teff > 6500)),
        "cool": float(np.mean(teff < 4000)),
        "metal_poor": float(np.mean(feh < -1.0)),
    }
