"""Line data for the synthetic spectra, read from the package's data files.

Atomic lines (``data/lines.csv``), molecular bands (``data/bands.csv``) and per-element
constants (``data/elements.json``) are data, not code, so they can be corrected or
re-calibrated without touching the physics. Wavelengths are stored in air, as line
tables give them, and turned into vacuum here because LAMOST MRS files are in vacuum.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from ..reading.lamost import air_to_vacuum

DATA_PACKAGE = "spemr_engine.synth.data"


def vacuum_to_air(wave_vac: np.ndarray) -> np.ndarray:
    """Inverse of :func:`air_to_vacuum` by fixed-point iteration (converges to <1e-6 A)."""
    wave_vac = np.asarray(wave_vac, dtype=np.float64)
    air = wave_vac / 1.00028
    for _ in range(4):
        air = air * wave_vac / air_to_vacuum(air)
    return air


def _text(name: str) -> str:
    return resources.files(DATA_PACKAGE).joinpath(name).read_text()


def _csv_rows(name: str) -> list[dict]:
    lines = [line for line in _text(name).splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


@dataclass(frozen=True)
class Element:
    symbol: str
    A_sun: float
    chi_ion: float
    mass: float
    log_2u_ratio: float
    label: str | None


@lru_cache(maxsize=None)
def elements() -> dict[str, Element]:
    data = json.loads(_text("elements.json"))["elements"]
    return {sym: Element(symbol=sym, **values) for sym, values in data.items()}


@dataclass(frozen=True)
class LineTable:
    """Atomic lines as parallel arrays (one entry per line)."""

    element: np.ndarray  # str
    ion: np.ndarray  # 1 neutral, 2 singly ionised
    wave: np.ndarray  # vacuum rest wavelength [A]
    chi: np.ndarray  # excitation of the lower level [eV]
    loggf: np.ndarray  # textbook log gf + calibration offset
    strong: np.ndarray  # bool: give it resolved damping wings
    origin: np.ndarray  # "atomic" | "blend"

    def __len__(self) -> int:
        return int(self.wave.size)

    def by_element(self, symbol: str) -> np.ndarray:
        return self.element == symbol


@lru_cache(maxsize=None)
def line_table() -> LineTable:
    rows = _csv_rows("lines.csv")
    col = lambda key, kind=float: np.array([kind(r[key]) for r in rows])
    return LineTable(
        element=col("element", str),
        ion=col("ion", int),
        wave=air_to_vacuum(col("wave_air")),
        chi=col("chi"),
        loggf=col("loggf") + col("gf_offset"),
        strong=col("strong", int).astype(bool),
        origin=col("origin", str),
    )


@dataclass(frozen=True)
class Band:
    molecule: str
    head: float  # vacuum [A]
    direction: int
    extent: float
    n_lines: int
    log_strength: float
    elements: tuple[str, ...]
    theta_slope: float
    logg_slope: float

    def pseudo_lines(self) -> tuple[np.ndarray, np.ndarray]:
        """Wavelengths and relative weights (summing to 1) of the band's pseudo-lines.

        A band is a run of rotational lines: spacing grows away from the head (a Fortrat
        parabola) and intensity peaks near the head and fades; deterministic, no RNG."""
        k = np.arange(self.n_lines, dtype=np.float64)
        if self.direction == 0:
            offsets = (k + 0.5) / self.n_lines * self.extent
            weights = 1.0 + 0.5 * np.cos(2.3 * k) ** 2
        else:
            u = k / max(self.n_lines - 1, 1)
            offsets = self.extent * (0.35 * u + 0.65 * u**2)
            weights = np.exp(-2.2 * u) * (1.0 + 0.35 * np.cos(3.1 * k))
        wave = self.head + (offsets if self.direction >= 0 else -offsets)
        return wave, weights / weights.sum()


@lru_cache(maxsize=None)
def bands() -> tuple[Band, ...]:
    out = []
    for r in _csv_rows("bands.csv"):
        out.append(
            Band(
                molecule=r["molecule"],
                head=float(air_to_vacuum(np.array([float(r["head_air"])]))[0]),
                direction=int(r["direction"]),
                extent=float(r["extent"]),
                n_lines=int(r["n_lines"]),
                log_strength=float(r["log_strength"]),
                elements=tuple(r["elements"].split("+")),
                theta_slope=float(r["theta_slope"]),
                logg_slope=float(r["logg_slope"]),
            )
        )
    return tuple(out)


# Sky emission lines (air, Angstrom) that leave residuals after sky subtraction in the
# red arm: [O I] and the OH Meinel bands. Observed frame: they do not move with the star.
SKY_LINES_AIR = np.array(
    [
        6300.30,
        6306.87,
        6329.93,
        6363.78,
        6465.20,
        6498.73,
        6533.04,
        6553.62,
        6568.78,
        6577.28,
        6596.64,
        6604.28,
        6827.46,
        6834.01,
        6841.91,
        6863.96,
    ]
)


def sky_lines() -> np.ndarray:
    return air_to_vacuum(SKY_LINES_AIR)
