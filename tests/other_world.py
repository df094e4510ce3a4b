"""Spectra for the fit-quality tests: the shipped samples' true labels, and a LAMOST-like
file of one of them made by *another world* (different line physics)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from spemr_engine import config
from spemr_engine.synth.fits_writer import write_mrs
from spemr_engine.synth.generate import _NOISE_STREAM, _stream, broadening_for, conditions_for, render
from spemr_engine.synth.model_spectra import WORLD
from spemr_engine.synth.observe import observe

SAMPLES = config.assets_dir() / "samples"


def samples() -> dict[str, dict]:
    """kind -> the row of assets/samples/samples.csv (filename, seed, true labels)."""
    with open(SAMPLES / "samples.csv") as handle:
        return {row["kind"]: row for row in csv.DictReader(handle)}


def labels_of(row: dict) -> np.ndarray:
    return np.array([[float(row[name]) for name in config.LABELS]])


def observed(labels: np.ndarray, seed: int, broadening, transform=None, snr: float = 50.0):
    """A coadd observation of one star in the model spectrum's world (model_spectra.WORLD:
    the shipped default model's), optionally from 'another world' (a transform of its
    fine-grid rest-frame flux)."""
    fine = render(labels, broadening, version=WORLD)
    if transform is not None:
        fine = {arm: transform(flux) for arm, flux in fine.items()}
    cond = conditions_for(labels[0], seed, snr_range=(snr, snr * 1.0001))
    return observe(fine, float(labels[0, 0]), cond, _stream(seed, _NOISE_STREAM), exposures=False)


def other_world_file(folder: Path) -> Path:
    """The giant sample's star rendered by different physics: every line 2.2 times deeper
    in optical depth than its labels say. (A wavelength shift would not do: the RV
    cross-correlation takes it out.)"""
    row = samples()["giant"]
    labels, seed = labels_of(row), int(row["seed"])
    obs = observed(labels, seed, broadening_for(labels, np.array([seed])), lambda f: f**2.2, snr=60.0)
    return write_mrs(Path(folder) / "med-58800-OTHERWORLD_sp01-001.fits.gz", obs, 990_100_000)
