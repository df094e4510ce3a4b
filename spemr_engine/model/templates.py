"""Best-fit template library (paper section 3.5).

The best-fit template of a spectrum is the training spectrum whose reference labels are
nearest to the spectrum's estimated labels (Euclidean distance in standardised label
space). A library holds the training labels (n, 16) and, per entry, either

* a stored continuum-normalised flux on the model grid (float16), for real training sets,
  or
* the synthetic generator's seed, from which the noiseless template is rebuilt exactly
  (labels + seed fix the spectrum), which keeps a shipped bundle small.

Stored as ``templates.npz`` inside a model bundle folder.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import LABELS, default_grid
from ..errors import InputFileError, require_regular_file

TEMPLATES_FILE = "templates.npz"
FORMAT = "spemr-templates"
VERSION = 1
_CACHE_SIZE = 64


class TemplateLibrary:
    """Labels of training spectra and a way to get each one's spectrum."""

    def __init__(
        self,
        labels: np.ndarray,
        label_names: Sequence[str] = LABELS,
        seeds: np.ndarray | None = None,
        flux: np.ndarray | None = None,
        star_id: Sequence[str] | np.ndarray | None = None,
        scale: np.ndarray | None = None,
        generator_version: int | None = None,
        wave: np.ndarray | None = None,
        world_id: str | None = None,
    ):
        self._labels = np.atleast_2d(np.asarray(labels, dtype=np.float32))
        self.label_names = list(label_names)
        if (seeds is None) == (flux is None):
            raise ValueError("a template library needs either seeds or fluxes (exactly one)")
        self.seeds = None if seeds is None else np.asarray(seeds, dtype=np.int64)
        self.flux = None if flux is None else np.asarray(flux, dtype=np.float16)
        n = len(self._labels)
        for name, values in (("seeds", self.seeds), ("flux", self.flux)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} labels")
        self.star_id = np.asarray(star_id if star_id is not None else [str(i) for i in range(n)])
        self.scale = np.asarray(scale if scale is not None else _nan_std(self._labels), dtype=np.float64)
        self.generator_version = generator_version
        self.world_id = world_id  # synth.generate.world_id at build time (None: not recorded)
        self.wave = np.asarray(wave if wave is not None else default_grid().wave, dtype=np.float64)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def kind(self) -> str:
        return "seeds" if self.seeds is not None else "flux"

    # ------------------------------------------------------------ queries
    def labels(self, i: int) -> np.ndarray:
        return self._labels[int(i)].astype(np.float64)

    def nearest(self, labels: np.ndarray, k: int = 5) -> np.ndarray:
        """Indices of the k entries nearest to ``labels`` ((16,) -> (k,), (m, 16) -> (m, k)),
        in standardised label space; NaN labels (query or entry) are left out of the
        distance, and entries are ranked by mean squared standardised difference."""
        query = np.asarray(labels, dtype=np.float64)
        single = query.ndim == 1
        query = np.atleast_2d(query)
        if query.shape[1] != self._labels.shape[1]:
            raise ValueError(f"labels have {query.shape[1]} values, library has {self._labels.shape[1]}")
        k = int(min(max(k, 1), len(self)))
        scale = np.where(self.scale > 0, self.scale, 1.0)
        out = np.empty((len(query), k), dtype=np.int64)
        table = self._labels.astype(np.float64) / scale
        for row, q in enumerate(query / scale):
            diff = table - q
            valid = np.isfinite(diff)
            d2 = np.where(valid, diff, 0.0) ** 2
            count = valid.sum(axis=1)
            distance = np.where(count > 0, d2.sum(axis=1) / np.maximum(count, 1), np.inf)
            part = np.argpartition(distance, k - 1)[:k]
            out[row] = part[np.argsort(distance[part], kind="stable")]
        return out[0] if single else out

    def spectrum(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(wave, flux) of entry i on the model grid, continuum-normalised."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"template {i} out of range (library has {len(self)})")
        if self.flux is not None:
            return self.wave, self.flux[i].astype(np.float32)
        if i not in self._cache and self.seeds is not None:
            from ..preprocessing.preprocess import normalise_grid
            from ..synth.generate import noiseless_grid  # heavy; only for seed libraries

            _wave, flux = noiseless_grid(
                self._labels[i : i + 1].astype(np.float64), self.seeds[i : i + 1], version=self.generator_version or 1
            )
            # The generator divides by the true continuum; observed spectra are divided by
            # the pipeline's polynomial pseudo-continuum, which sits a few per cent lower
            # where lines crowd (blue arm). Normalising the same way makes them comparable.
            normalised, _bad = normalise_grid(flux)
            self._cache[i] = normalised[0].astype(np.float32)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(i)
        return self.wave, self._cache[i]

    @property
    def rebuilds_exactly(self) -> bool:
        """False when seeds were written by a generator version this code cannot render,
        or by another world of that version (e.g. a since retrained emulator)."""
        if self.seeds is None:
            return True
        from ..synth.generate import WORLDS, world_id

        version = self.generator_version or 1
        return version in WORLDS and (self.world_id is None or self.world_id == world_id(version))

    # ------------------------------------------------------------ storage
    def save(self, path: str | Path) -> Path:
        path = _npz_path(Path(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict = {
            "format": np.array(FORMAT),
            "version": np.array(VERSION),
            "labels": self._labels,
            "label_names": np.array(self.label_names),
            "star_id": self.star_id.astype(str),
            "scale": self.scale,
            "wave": self.wave,
        }
        if self.seeds is not None:
            arrays["seeds"] = self.seeds
            arrays["generator_version"] = np.array(self.generator_version if self.generator_version is not None else -1)
            if self.world_id is not None:
                arrays["world_id"] = np.array(self.world_id)
        else:
            arrays["flux"] = self.flux
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TemplateLibrary":
        """Load from a bundle folder (its templates.npz) or an .npz file."""
        path = _npz_path(Path(path))
        if not path.exists():
            raise InputFileError(path, "no template library (templates.npz) here")
        # A FIFO named templates.npz blocked the viewer forever; a device never ends.
        require_regular_file(path, "template library")
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data.get("format", "")) != FORMAT:
                    raise InputFileError(path, "not a spemr template library")
                version = data.get("generator_version")
                return cls(
                    labels=data["labels"],
                    label_names=[str(s) for s in data["label_names"]],
                    seeds=data["seeds"] if "seeds" in data else None,
                    flux=data["flux"] if "flux" in data else None,
                    star_id=[str(s) for s in data["star_id"]],
                    scale=data["scale"],
                    generator_version=None if version is None else int(version),
                    wave=data["wave"],
                    world_id=str(data["world_id"]) if "world_id" in data else None,
                )
        except InputFileError:
            raise
        except Exception as error:  # truncated zip (BadZipFile, EOFError, zlib.error), bad arrays
            raise InputFileError(path, f"unreadable template library ({type(error).__name__}: {error})") from None

    @classmethod
    def from_refset(
        cls,
        refset,
        max_entries: int | None = None,
        one_per_star: bool = True,
        indices: np.ndarray | None = None,
        seed: int = 0,
    ) -> "TemplateLibrary":
        """A library from a reference set (spemr_engine.training.refset.ReferenceSet): seeds when
        the set is synthetic and has them, else float16 fluxes. ``indices`` restricts it
        (e.g. to the training split); one spectrum per star by default."""
        rows = refset.rows if hasattr(refset, "rows") else None
        chosen = np.arange(len(refset)) if indices is None else np.asarray(indices)
        star = (
            np.array([str(rows[i]["star_id"]) for i in range(len(refset))])
            if rows is not None
            else np.arange(len(refset)).astype(str)
        )
        if one_per_star:
            _, first = np.unique(star[chosen], return_index=True)
            chosen = chosen[np.sort(first)]
        if max_entries is not None and len(chosen) > max_entries:
            chosen = np.sort(np.random.default_rng(seed).choice(chosen, max_entries, replace=False))
        labels = np.asarray(refset.labels)[chosen]
        seeds = None
        if rows is not None and refset.manifest.get("synthetic") and all(rows[i].get("seed") for i in chosen):
            seeds = np.array([int(rows[i]["seed"]) for i in chosen], dtype=np.int64)
        if seeds is not None and rows is not None:
            # Reference sets written before the "generator" column were made by version 1.
            version = int(rows[chosen[0]].get("generator") or 1) if len(chosen) else 1
            from ..synth.generate import world_id

            return cls(
                labels,
                getattr(refset, "label_names", LABELS),
                seeds=seeds,
                star_id=star[chosen],
                scale=refset.label_std,
                generator_version=version,
                world_id=world_id(version),
            )
        return cls(
            labels,
            getattr(refset, "label_names", LABELS),
            flux=refset.read_flux(chosen),
            star_id=star[chosen],
            scale=refset.label_std,
        )


def _npz_path(path: Path) -> Path:
    return path / TEMPLATES_FILE if path.suffix != ".npz" else path


def _nan_std(labels: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        std = np.nanstd(labels.astype(np.float64), axis=0) if len(labels) > 1 else np.ones(labels.shape[1])
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)
