"""Synthetic LAMOST MRS spectra: labels, line physics, observation, FITS and reference sets.

Entry points:
  make_stars(n, seed)                     -> SyntheticStars (labels (n, 16) + per-star seeds)
  noiseless_grid(labels, seeds)           -> (wave, flux) rest-frame templates on the model grid
  observe_stars(labels, seeds, ...)       -> Observation per star (coadd + exposures, .pairs())
  write_mrs(path, observation, obsid, ...) LAMOST MRS FITS file (.fits or .fits.gz)
  build_reference_set(path, n_stars, ...) reference set in the engine's format
  write_samples(out_dir, kinds, seed)     sample files of a giant, dwarf, hot, cool, metal-poor star

Deterministic: the same seeds give the same stars, spectra and observations.
"""

from .fits_writer import write_mrs
from .generate import GENERATOR_VERSION, SyntheticStars, make_stars, noiseless_grid, observe_stars
from .labels import LabelSample, region_shares, sample_labels
from .observe import Observation
from .refset_builder import build_reference_set
from .samples import KINDS, pick_stars, write_samples

__all__ = [
    "GENERATOR_VERSION",
    "KINDS",
    "LabelSample",
    "Observation",
    "SyntheticStars",
    "build_reference_set",
    "make_stars",
    "noiseless_grid",
    "observe_stars",
    "pick_stars",
    "region_shares",
    "sample_labels",
    "write_mrs",
    "write_samples",
]
