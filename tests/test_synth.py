"""Synthetic LAMOST MRS generator: labels, line physics, observation, FITS, reference sets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from spemr_engine import cli
from spemr_engine.config import LABELS, default_grid, published_to_label
from spemr_engine.reading.lamost import read_mrs
from spemr_engine.preprocessing.preprocess import normalise_grid, preprocess_pairs
from spemr_engine.training.refset import ReferenceSet
from spemr_engine.safe_pickle import safe_load
from spemr_engine.synth import spectrum as sp
from spemr_engine.synth.fits_writer import write_mrs
from spemr_engine.synth.generate import GENERATOR_VERSION, broadening_for, make_stars, noiseless_grid, observe_stars
from spemr_engine.synth.labels import region_shares, sample_labels
from spemr_engine.synth.lines import bands, line_table, vacuum_to_air
from spemr_engine.synth.refset_builder import build_reference_set

T, G, M = (LABELS.index(n) for n in ("Teff", "Logg", "FeH"))
WAVE = default_grid().wave


def star(teff=4800.0, logg=2.5, feh=0.0, **x_fe) -> np.ndarray:
    """One label row: [X/H] = [Fe/H] + given [X/Fe] (0 by default)."""
    row = np.full(len(LABELS), feh, dtype=np.float64)
    row[T], row[G], row[M] = teff, logg, feh
    for name, value in x_fe.items():
        row[LABELS.index(name)] = feh + value
    return row


def render_grid(rows, seed=7, version=1) -> np.ndarray:
    """Noiseless spectra; the line-physics tests below are about the version-1 line model
    (version 2's lines come from radiative transfer, tested in test_rt_world)."""
    rows = np.atleast_2d(rows)
    _, flux = noiseless_grid(rows, np.full(len(rows), seed), version=version)
    return flux


def pixel(wave_vac: float) -> int:
    return int(np.argmin(np.abs(WAVE - wave_vac)))


@pytest.fixture(scope="module")
def big_sample():
    return sample_labels(20000, 0)


# ------------------------------------------------------------------ labels
def test_same_seed_same_stars_and_spectra():
    a, b = make_stars(6, seed=3), make_stars(6, seed=3)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.seeds, b.seeds)
    assert np.array_equal(render_grid(a.labels), render_grid(b.labels))
    obs_a = list(observe_stars(a.labels[:2], a.seeds[:2]))
    obs_b = list(observe_stars(b.labels[:2], b.seeds[:2]))
    for x, y in zip(obs_a, obs_b):
        assert np.array_equal(x.coadd[1].flux, y.coadd[1].flux)
        assert np.array_equal(x.exposures[0][0].flux, y.exposures[0][0].flux)
    assert not np.array_equal(make_stars(6, seed=4).labels, a.labels)


@pytest.mark.parametrize("version, tolerance", [(1, 1e-10), (2, 1e-6)])
def test_a_star_is_the_same_in_any_batch(version, tolerance):
    """Version 2's emulator runs float32 matrix products whose summation order BLAS picks by
    batch size: equal to ~1e-7, not bit for bit."""
    stars = make_stars(5, seed=9)
    alone = render_grid(stars.labels[3:4], seed=int(stars.seeds[3]), version=version)
    _, together = noiseless_grid(stars.labels, stars.seeds, version=version)
    assert np.allclose(alone[0], together[3], atol=tolerance)


def test_label_distribution_is_imbalanced_like_the_reference_set(big_sample):
    labels = big_sample.labels
    shares = region_shares(labels)
    for name in ("hot", "cool", "metal_poor"):
        assert 0.005 < shares[name] < 0.08, (name, shares)
    assert np.mean(labels[:, G] < 3.5) > 0.5  # giants dominate
    assert np.mean((labels[:, G] > 3.8) & (labels[:, T] > 4000) & (labels[:, T] < 6500)) > 0.25
    assert abs(labels[:, T].mean() - 5160) < 120 and 450 < labels[:, T].std() < 680
    assert abs(labels[:, G].mean() - 3.43) < 0.12 and 0.85 < labels[:, G].std() < 1.1
    assert abs(labels[:, M].mean() + 0.16) < 0.06 and 0.22 < labels[:, M].std() < 0.33


def test_label_means_match_the_published_training_set(big_sample, shared_label_config):
    published = safe_load(shared_label_config)
    names = [published_to_label()[str(n)] for n in published["label_list"]]
    ours = dict(zip(LABELS, big_sample.labels.mean(axis=0)))
    ours_std = dict(zip(LABELS, big_sample.labels.std(axis=0)))
    for name, mean, std in zip(names, published["label_mean"], published["label_std"]):
        tolerance = 150.0 if name == "Teff" else 0.1
        assert abs(ours[name] - mean) < tolerance, (name, ours[name], mean)
        assert 0.7 < ours_std[name] / std < 1.35, (name, ours_std[name], std)


def test_abundance_trends(big_sample):
    labels, comp = big_sample.labels, big_sample.component
    mg_fe = labels[:, LABELS.index("MgH")] - labels[:, M]
    assert mg_fe[labels[:, M] < -1].mean() - mg_fe[labels[:, M] > 0].mean() > 0.15
    n_fe = labels[:, LABELS.index("NH")] - labels[:, M]
    c_fe = labels[:, LABELS.index("CH")] - labels[:, M]
    giants, dwarfs = labels[:, G] < 3.0, labels[:, G] > 4.2
    assert n_fe[giants].mean() - n_fe[dwarfs].mean() > 0.2
    assert c_fe[giants].mean() < c_fe[dwarfs].mean()
    assert set(np.unique(comp)) == {"thin", "thick", "halo"}


# ------------------------------------------------------------- line physics
def test_lines_sit_at_vacuum_wavelengths_of_real_features():
    table = line_table()
    mg = np.sort(table.wave[(table.element == "Mg") & (table.wave < 5200)])
    assert np.allclose(mg, [5168.76, 5174.12, 5185.05], atol=0.03)
    assert np.isclose(vacuum_to_air(np.array([5185.048]))[0], 5183.604, atol=0.002)
    flux = render_grid(star())[0]
    for wave in (5168.8, 5174.1, 5185.0, 6564.6):  # reference doc section 1
        i = pixel(wave)
        assert flux[i] == flux[i - 8 : i + 9].min() or flux[i] < 0.6


def test_mg_b_deepens_with_magnesium_and_nothing_else_moves():
    base, rich = render_grid(np.stack([star(MgH=0.0), star(MgH=0.3)]))
    for wave in (5168.8, 5174.1, 5185.0):
        assert rich[pixel(wave)] < base[pixel(wave)] - 0.01
    red = slice(3600, 7200)  # no Mg lines in the red grid window
    assert np.allclose(rich[red], base[red], atol=1e-6)


def test_elements_without_lines_leave_the_spectrum_unchanged():
    rows = np.stack([star(), star(KH=0.5), star(SH=0.5)])
    base, potassium, sulphur = render_grid(rows)
    assert np.array_equal(base, potassium)
    # S I lines lie beyond the model grid (6743+ A): only FFT round-off may differ.
    assert np.allclose(base, sulphur, rtol=0, atol=1e-9)


def test_each_element_with_lines_changes_its_own_pixels():
    table = line_table()
    for label, symbol in (("CaH", "Ca"), ("TiH", "Ti"), ("NiH", "Ni"), ("CrH", "Cr")):
        base, more = render_grid(np.stack([star(), star(**{label: 0.3})]))
        changed = np.abs(more - base) > 2e-3
        line_pixels = [pixel(w) for w in table.wave[table.element == symbol] if WAVE[0] < w < WAVE[-1]]
        assert changed.any(), label
        assert changed[line_pixels].mean() > 0.3, label
        assert np.all(more <= base + 1e-9), label  # more atoms, only more absorption


def test_h_alpha_wings_grow_with_teff():
    # Metal-poor stars isolate H-alpha from metal lines.
    cool, hot = render_grid(np.stack([star(5000, 4.3, -2.0), star(6300, 4.3, -2.0)]))
    for offset in (-3.0, -2.0, 2.0, 3.0):
        i = pixel(6564.6 + offset)
        assert hot[i] < cool[i] - 0.02, offset


def test_gravity_strengthens_damping_wings_and_weakens_ion_lines():
    labels = np.stack([star(5000, 2.5), star(5000, 4.6)])
    widths, wings = sp.line_widths(labels, np.array([1.2, 1.2]))
    table = line_table()
    mg = (table.element == "Mg") & table.strong
    assert np.all(wings[1, mg] > wings[0, mg])
    fe2 = (table.element == "Fe") & (table.ion == 2) & (table.origin == "atomic")
    assert np.all(widths[1, fe2] < widths[0, fe2])


def test_molecular_bands_appear_in_cool_stars_only():
    names = [b.molecule for b in bands()]
    tio = names.index("TiO")
    widths = sp.band_widths(np.stack([star(3500, 4.8), star(3900, 4.8), star(5000, 4.5)]))[tio]
    assert widths[0] > 3 * widths[1] > 30 * widths[2]


def test_rotation_smooths_lines():
    row = np.atleast_2d(star(6000, 4.3))
    slow = broadening_for(row, np.array([1]))
    fast = sp.Broadening(slow.vmic, slow.vmac, np.array([60.0]), slow.resolution)
    _, flux_slow = sp.normalised_on_grid(row, slow)
    _, flux_fast = sp.normalised_on_grid(row, fast)
    i = pixel(5234.4)  # Fe I 5232.94 (air)
    assert flux_fast[0, i - 3 : i + 4].min() > flux_slow[0, i - 3 : i + 4].min() + 0.08
    assert abs(flux_fast.mean() - flux_slow.mean()) < 0.01  # same absorption, spread out


# ------------------------------------------------------------- observation
@pytest.fixture(scope="module")
def observed():
    stars = make_stars(3, seed=21)
    return stars, list(observe_stars(stars.labels, stars.seeds, n_exp=3))


def test_observation_looks_like_lamost(observed):
    _stars, observations = observed
    obs = observations[0]
    blue, red = obs.coadd
    steps = np.diff(blue.loglam.astype(np.float64))  # float32 on disk, as in real files
    assert np.all((steps > 0.97e-5) & (steps < 1.03e-5))
    assert 4893 < 10 ** blue.loglam[0] < 4930 and 5370 < 10 ** blue.loglam[-1] < 5392
    assert 6291 < 10 ** red.loglam[0] < 6310 and 6845 < 10 ** red.loglam[-1] < 6877
    assert blue.snr < red.snr
    assert np.all(red.ivar[-3:] == 0)  # padding rows at the end of the table
    exp_blue, exp_red = obs.exposures[0]
    assert exp_blue.loglam.size == exp_red.loglam.size == 4136
    assert np.all(np.diff(exp_red.loglam) < 0)  # red exposures stored descending
    steps = np.diff(exp_blue.loglam)
    assert 0.7e-5 < steps.min() < 0.95e-5 < 1.0e-5 < steps.max() < 1.15e-5
    assert exp_blue.snr < blue.snr  # coadds beat single exposures


def test_fits_files_round_trip_through_the_reader(observed, tmp_path):
    stars, observations = observed
    path = write_mrs(
        tmp_path / "med-58800-TEST_sp01-001.fits.gz",
        observations[0],
        123456789,
        stars.labels[0],
        int(stars.seeds[0]),
        ra=10.5,
        dec=-3.25,
    )
    mrs = read_mrs(path)
    assert mrs.meta["obsid"] == 123456789 and mrs.meta["vacuum"] and mrs.meta["helio"]
    assert mrs.meta["filename"] == "med-58800-TEST_sp01-001.fits"
    assert mrs.meta["nexp_b"] == mrs.meta["nexp_r"] == 3
    assert [p.label for p in mrs.pairs][0] == "coadd" and len(mrs.pairs) == 4
    assert not mrs.unpaired and not mrs.warnings
    exp = mrs.pairs[1]
    assert exp.extname_red.startswith("R-") and np.all(np.diff(exp.red.wave) > 0)
    assert exp.red.mask[exp.red.ivar == 0].all()
    with fits.open(path) as hdul:
        assert hdul[0].header["EXTNAME"] == "Information" and hdul[0].header["SYNTH"]
        assert hdul[0].header["T_TEFF"] == pytest.approx(stars.labels[0, T], abs=1e-3)
        assert hdul["COADD_B"].columns.names == ["FLUX", "IVAR", "LOGLAM", "ANDMASK", "ORMASK"]
        assert hdul[3].columns.names == ["FLUX", "IVAR", "LOGLAM", "PIXMASK"]
        assert hdul["COADD_R"].header["NAXIS2"] == observations[0].coadd[1].loglam.size
        assert "SNR" in hdul[3].header and "EXPTIME" in hdul[3].header


def test_preprocessing_recovers_a_known_radial_velocity():
    row = np.atleast_2d(star(5600, 4.4, 0.0))
    obs = next(observe_stars(row, np.array([5]), rv=57.3, snr_range=(90.0, 90.01), n_exp=1))
    spectra = preprocess_pairs(obs.pairs()[:1])
    assert spectra.rv_source == ["ccf"]
    assert abs(spectra.rv[0] - 57.3) < 3.0
    # the noiseless star normalised by the same pseudo-continuum as the observation
    template = normalise_grid(render_grid(row, seed=5, version=GENERATOR_VERSION))[0][0]
    assert np.corrcoef(spectra.flux[0], template)[0, 1] > 0.95


# ------------------------------------------------------------- reference sets
def test_reference_set_is_synthetic_by_star_with_seeds(tmp_path):
    refset = build_reference_set(tmp_path / "ref", 10, seed=5, max_exposures=2)
    again = ReferenceSet.open(tmp_path / "ref")
    assert again.synthetic and len(again) == len(refset) >= 10
    stars = {}
    for row, labels in zip(again.rows, again.labels):
        stars.setdefault(row["star_id"], []).append((row["seed"], labels))
    assert max(len(v) for v in stars.values()) > 1  # several spectra per star
    for entries in stars.values():
        assert len({seed for seed, _ in entries}) == 1
        assert all(np.array_equal(entries[0][1], lab) for _, lab in entries)
    flux = again.read_flux(np.arange(len(again)))
    assert np.isfinite(flux).all() and 0.95 < np.median(flux) < 1.05
    assert all(min(float(r["snr_blue"]), float(r["snr_red"])) >= 10 for r in again.rows)


def test_cli_writes_samples_and_rejects_unknown_kinds(tmp_path, capsys):
    assert cli.main(["synth-fits", str(tmp_path), "--kinds", "cool", "--exposures", "1"]) == 0
    files = list(tmp_path.glob("med-*.fits.gz"))
    assert len(files) == 1 and (tmp_path / "samples.csv").exists()
    mrs = read_mrs(files[0])
    assert len(mrs.pairs) == 2
    assert cli.main(["synth-fits", str(tmp_path), "--kinds", "brown-dwarf"]) == 2
    assert "brown-dwarf" in capsys.readouterr().err


# ------------------------------------------------------------- shipped assets
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def test_shipped_samples_carry_their_true_labels():
    rows = list(csv.DictReader(open(ASSETS / "samples" / "samples.csv")))
    assert sorted(r["kind"] for r in rows) == sorted(["giant", "dwarf", "hot", "cool", "metal-poor"])
    for row in rows:
        mrs = read_mrs(ASSETS / "samples" / row["filename"])
        assert mrs.pairs[0].is_coadd and len(mrs.pairs) >= 2
        with fits.open(ASSETS / "samples" / row["filename"]) as hdul:
            assert hdul[0].header["T_TEFF"] == pytest.approx(float(row["Teff"]), abs=1e-3)
            assert hdul[0].header["SYNTH"]


def test_default_model_is_synthetic_small_and_its_templates_rebuild():
    from spemr_engine.model.bundle import load_bundle
    from spemr_engine.synth.generate import GENERATOR_VERSION
    from spemr_engine.model.templates import TemplateLibrary

    folder = ASSETS / "models" / "default"
    bundle = load_bundle(folder)
    assert bundle.trained_on_synthetic
    assert sum(f.stat().st_size for f in folder.iterdir()) <= 40e6
    library = TemplateLibrary.load(folder)
    assert library.kind == "seeds" and library.generator_version == GENERATOR_VERSION
    # made with the shipped emulator: retraining it without retraining the model fails here
    from spemr_engine.model.fit_quality import thresholds_of
    from spemr_engine.synth.generate import world_id

    assert library.world_id == world_id(GENERATOR_VERSION) and library.rebuilds_exactly
    assert thresholds_of(bundle) is not None and bundle.quality.world_id == world_id(GENERATOR_VERSION)
    assert len(library) > 1000
    _, flux = library.spectrum(0)
    # continuum-normalised like observed spectra: lines below 1, the pseudo-continuum near 1
    assert flux.shape == (7200,) and 0.2 < flux.min() < 0.9 and 0.97 < np.median(flux) < 1.1
    assert flux.max() < 1.2
