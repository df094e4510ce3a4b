"""Model atmospheres from atmosnet 1.0.1's network files (D. Nidever; MIT).

atmosnet emulates C3K/ATLAS model atmospheres with small networks: one per Kurucz-deck
column, input (Teff, log g, [Fe/H], [alpha/Fe]), output 80 depth points. Only its two
network files are read (through the project's restricted unpickler, never plain pickle or
dill); its own code is not used because atmosnet 1.0.1 inverts the outputs with ``exp``
while the networks were trained on ``log10(x + 1e-16)``: ``exp`` gives a ~35 K solar
surface, ``10**y - 1e-16`` the physical one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...config import _preset
from ...safe_pickle import safe_load

DECK_COLUMNS = ("RHOX", "T", "P", "XNE", "ABROSS", "ACCRAD", "VTURB", "FLXCNV")
LEAKY_SLOPE = 0.01


@dataclass(frozen=True)
class ColumnNet:
    """One network: three dense layers with leaky ReLU between them."""

    column: int
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]
    biases: tuple[np.ndarray, np.ndarray, np.ndarray]
    x_min: np.ndarray
    x_max: np.ndarray
    ranges: np.ndarray  # (4, 2) valid (Teff, log g, [Fe/H], [alpha/Fe])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = (x - self.x_min) / (self.x_max - self.x_min) - 0.5
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < 2:
                h = np.where(h > 0, h, LEAKY_SLOPE * h)
        return 10.0**h - 1e-16  # the networks' targets were log10(value + 1e-16)


def _config() -> dict:
    return _preset("rt_synthesis")


def network_path(directory: str | Path, kind: str) -> Path:
    return Path(directory) / _config()["atmosnet_files"][kind]


@lru_cache(maxsize=4)
def load_networks(directory: str, kind: str) -> tuple[ColumnNet, ...]:
    """The networks of one atmosnet file ('cool' or 'hot'), cached per process."""
    raw = safe_load(network_path(directory, kind), dill_arrays=True)
    nets = []
    for d in raw:
        w0, w1, w2 = (np.asarray(d[f"w_array_{i}"], np.float64) for i in range(3))
        b0, b1, b2 = (np.asarray(d[f"b_array_{i}"], np.float64) for i in range(3))
        nets.append(
            ColumnNet(
                int(d["column"]),
                (w0, w1, w2),
                (b0, b1, b2),
                np.asarray(d["x_min"], np.float64),
                np.asarray(d["x_max"], np.float64),
                np.asarray(d["ranges"], np.float64),
            )
        )
    return tuple(sorted(nets, key=lambda n: n.column))


def kind_for(teff: np.ndarray | float) -> np.ndarray:
    """'cool' below the hot network's lower Teff edge, else 'hot'."""
    return np.where(np.asarray(teff) < _config()["atmosnet_hot_above_teff"], "cool", "hot")


def in_range(directory: str | Path, params: np.ndarray) -> np.ndarray:
    """Which rows of (n, 4) (Teff, log g, [Fe/H], [alpha/Fe]) every network of their kind covers."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    kinds = kind_for(params[:, 0])
    ok = np.zeros(len(params), dtype=bool)
    for kind in np.unique(kinds):
        rows = kinds == kind
        lo = np.max([n.ranges[:, 0] for n in load_networks(str(directory), str(kind))], axis=0)
        hi = np.min([n.ranges[:, 1] for n in load_networks(str(directory), str(kind))], axis=0)
        ok[rows] = np.all((params[rows] >= lo) & (params[rows] <= hi), axis=1)
    return ok


def atmosphere(directory: str | Path, teff: float, logg: float, feh: float, alpha_fe: float) -> np.ndarray:
    """(80, 8) Kurucz deck (DECK_COLUMNS), top of the atmosphere first. Raises ValueError
    outside the networks' range: extrapolated atmospheres are not physical."""
    params = np.array([teff, logg, feh, alpha_fe], dtype=np.float64)
    if not in_range(directory, params)[0]:
        raise ValueError(
            f"Teff {teff:.0f}, log g {logg:.2f}, [Fe/H] {feh:.2f}, [alpha/Fe] {alpha_fe:.2f} "
            "is outside atmosnet's range"
        )
    nets = load_networks(str(directory), str(kind_for(teff)))
    deck = np.empty((nets[0].biases[2].size, len(nets)))
    for net in nets:
        deck[:, net.column] = net(params)
    return deck
