"""File -> MRSFile -> arm pairs -> PreprocessedSpectra: the one way a LAMOST MRS file
becomes model input.

    Preparation(grid=None, rv_template=None, config=None)   how spectra are prepared
        Preparation.for_model(bundle)   the model's grid and RV template
        .preprocess(pairs, rv=None) -> PreprocessedSpectra
    read(source) -> MRSFile             a path is read; an MRSFile already held is used as is
    select_pairs(mrs, exposure) -> list[ArmPair]   raises NoSpectra when none is complete
    file_rv(meta, rv_catalog) -> float | None      the RV catalog's value for a file
    file_spectra(source, preparation, exposure="coadd", rv=None, rv_catalog=None) -> FileSpectra

`api.analyse_file`/`preprocess_file`, the catalog's workers (`catalog_rows.prepare_file`),
the cross-match (`crossmatch`), `spemr preprocess` and the app all go through these
stages, so a spectrum is prepared the same way whichever of them labels it. Callers
that report each stage's failure their own way (a catalog row flag, a cross-match
outcome) call the stages one by one; the others call :func:`file_spectra`.

Never imports torch (catalog workers and `spemr info` stay light).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..errors import InputFileError
from ..reading.lamost import ArmPair, MRSFile, read_mrs

if TYPE_CHECKING:
    from ..config import InputGrid, PreprocessConfig
    from .preprocess import PreprocessedSpectra
    from .rv import RVCatalog


class NoSpectra(InputFileError):
    """A readable file whose selection holds no complete blue+red pair."""


@dataclass(frozen=True)
class Preparation:
    """How spectra are prepared: the grid, the rest-frame RV template and the
    preprocessing parameters (None = the defaults of config and the shipped line
    template). Small and picklable: the catalog hands one to each worker process."""

    grid: "InputGrid | None" = None
    rv_template: tuple | None = None  # (wave, flux) rest frame
    config: "PreprocessConfig | None" = None

    @classmethod
    def for_model(cls, bundle) -> "Preparation":
        """The model's grid, and RV by cross-correlation against its mean training
        spectrum (the average star on the grid) when it has real statistics, else
        against the shipped line-list template."""
        if getattr(bundle.statistics, "source", "") == "placeholder":
            return cls(grid=bundle.grid)
        template = (np.asarray(bundle.grid.wave), np.asarray(bundle.flux_mean, dtype=np.float64))
        return cls(grid=bundle.grid, rv_template=template)

    def preprocess(
        self, pairs: Sequence[ArmPair], rv: float | Sequence[float] | np.ndarray | None = None
    ) -> "PreprocessedSpectra":
        """Rest frame, resampling, continuum and flags (preprocess.preprocess_pairs);
        rv: None (measure), one value, or one per pair."""
        from .preprocess import preprocess_pairs  # numpy/scipy heavy; reading alone needs none of it

        return preprocess_pairs(pairs, rv=rv, rv_template=self.rv_template, config=self.config, grid=self.grid)


@dataclass
class FileSpectra:
    """One file's chosen pairs and their preprocessed spectra, row i = pairs[i]."""

    path: Path
    mrs: MRSFile
    pairs: list[ArmPair]
    spectra: "PreprocessedSpectra"


def read(source: "str | Path | MRSFile") -> MRSFile:
    """The file read with lamost.read_mrs (InputFileError when unusable), or the MRSFile
    given: the app holds every open file and must not read it again."""
    return source if isinstance(source, MRSFile) else read_mrs(source)


def select_pairs(mrs: MRSFile, exposure: str | int = "coadd") -> list[ArmPair]:
    """The pairs of ``exposure`` ("coadd", "all" or an LMJM): InputFileError when the file
    has no such exposure (MRSFile.select), NoSpectra when nothing complete is left."""
    pairs = list(mrs.select(exposure))
    if not pairs:
        raise NoSpectra(mrs.path, "; ".join(mrs.warnings) or "no complete blue+red pair")
    return pairs


def file_rv(meta: dict, rv_catalog: "RVCatalog | str | Path | None") -> float | None:
    """The file's RV from the catalog, by obsid then filename (None = measure by
    cross-correlation)."""
    if rv_catalog is None or (isinstance(rv_catalog, str) and not rv_catalog):
        return None
    catalog = _rv_catalog(str(rv_catalog)) if isinstance(rv_catalog, (str, Path)) else rv_catalog
    found = catalog.lookup(obsid=meta.get("obsid"), filename=meta.get("filename"))
    return None if found is None else float(found[0])


def file_spectra(
    source: "str | Path | MRSFile",
    preparation: Preparation,
    exposure: str | int = "coadd",
    rv: float | Sequence[float] | None = None,
    rv_catalog: "RVCatalog | str | Path | None" = None,
) -> FileSpectra:
    """Read (or take) a file, choose its pairs and preprocess them. rv: km/s for every
    pair (or one per pair); otherwise the RV catalog's value for the file when it has
    one; otherwise measured. Raises InputFileError (NoSpectra) for unusable files."""
    mrs = read(source)
    pairs = select_pairs(mrs, exposure)
    if rv is None:
        rv = file_rv(mrs.meta, rv_catalog)
    return FileSpectra(path=Path(mrs.path), mrs=mrs, pairs=pairs, spectra=preparation.preprocess(pairs, rv))


@lru_cache(maxsize=4)
def _rv_catalog(path: str) -> "RVCatalog":
    from .rv import load_rv_catalog

    return load_rv_catalog(path)
