"""Radial velocity: line list, CCF measurement, catalogs."""

from __future__ import annotations

import numpy as np
import pytest

from spemr_engine import cli
from spemr_engine.config import default_grid, preprocess_config
from spemr_engine.errors import InputFileError, SpemrError
from spemr_engine.reading.lamost import air_to_vacuum, read_mrs
from spemr_engine.preprocessing.preprocess import preprocess_pairs
from spemr_engine.preprocessing.rv import (
    CCFSettings,
    as_template,
    line_spectrum,
    load_line_list,
    load_rv_catalog,
    measure_rv,
)
from spemr_engine.safe_pickle import safe_load
from synthetic_spectra import synthetic_pair

C_KMS = preprocess_config().speed_of_light_kms


# ---------------------------------------------------------------- line list
def test_line_list_holds_vacuum_wavelengths_of_the_main_features():
    lines = load_line_list()
    assert len(lines) > 50
    for line in lines:
        assert line.wave_vac == pytest.approx(float(air_to_vacuum(np.array([line.wave_air]))[0]), abs=0.002)
        assert 0 < line.depth < 1 and 0.3 < line.fwhm < 5
    by_species = {}
    for line in lines:
        by_species.setdefault(line.species, []).append(line.wave_vac)
    assert sorted(by_species["Mg I"]) == pytest.approx([5168.76, 5174.12, 5185.05], abs=0.02)
    assert by_species["H I"] == pytest.approx([6564.60], abs=0.02)
    assert by_species["[O I]"] == pytest.approx([6365.54], abs=0.02)
    for species in ("Fe I", "Fe II", "Ca I", "Ti I", "Cr I", "Ni I", "Al I"):
        assert species in by_species


def test_line_spectrum_has_minima_at_the_mg_b_grid_pixels():
    wave = default_grid().wave
    model = line_spectrum(wave, load_line_list())
    for pixel in (2008, 2061, 2171, 5856):
        window = slice(pixel - 4, pixel + 5)
        assert abs(pixel - 4 + int(np.argmin(model[window])) - pixel) <= 1


def test_missing_line_list_is_a_one_line_error(tmp_path):
    with pytest.raises(InputFileError, match=r"^nolines.csv: line list not found"):
        load_line_list(tmp_path / "nolines.csv")


# -------------------------------------------------------------- measurement
@pytest.mark.parametrize("true_rv", [-137.4, 12.3, 88.8])
def test_measured_rv_within_1_kms_at_snr_50(true_rv):
    """End to end through preprocess_pairs: raw arms with a curved continuum, noise at
    S/N 50, line depths/widths perturbed by 30 % so the default template does not match."""
    pairs = [synthetic_pair(true_rv, snr=50, seed=seed, scatter=0.3) for seed in range(3)]
    spectra = preprocess_pairs(pairs)
    assert spectra.rv_source == ["ccf"] * 3
    assert np.all(np.abs(spectra.rv - true_rv) < 1.0), spectra.rv
    assert np.all((spectra.rv_err > 0) & (spectra.rv_err < 1.0))
    assert np.all(spectra.quality.ccf_peak > 0.5)
    assert spectra.quality.usable.all()


def test_a_given_rv_is_checked_against_the_template():
    """A given RV skips the CCF search but not its judgement: the spectrum's correlation
    with the template at that RV is its ccf_peak. The right RV scores like a measured
    peak; a wrong one, or a smooth spectrum without lines, is flagged rv_unreliable."""
    pairs = [synthetic_pair(40.0, snr=50, seed=seed, scatter=0.3) for seed in range(2)]
    measured = preprocess_pairs(pairs)
    right = preprocess_pairs(pairs, rv=40.0)
    assert right.rv_source == ["given"] * 2
    assert np.allclose(right.quality.ccf_peak, measured.quality.ccf_peak, atol=0.05)
    assert right.quality.usable.all()
    wrong = preprocess_pairs(pairs, rv=40.0 + 180.0)
    assert np.all(wrong.quality.ccf_peak < CCFSettings().min_peak)
    assert [wrong.quality.flags(i) for i in range(2)] == [["rv_unreliable"]] * 2
    assert "given RV" in wrong.quality.reason[0]
    smooth = synthetic_pair(40.0, snr=50, seed=3)
    for arm in (smooth.blue, smooth.red):  # a tilted, curved continuum and noise, no lines
        x = (arm.wave - arm.wave.mean()) / np.ptp(arm.wave)
        arm.flux[:] = 1000 * (1 + 0.3 * x - 0.2 * x**2) * (1 + np.random.default_rng(5).normal(0, 0.02, x.size))
    featureless = preprocess_pairs([smooth], rv=40.0)
    assert featureless.quality.flags(0) == ["rv_unreliable"] and not featureless.quality.usable[0]


def test_an_arm_without_lines_is_flagged_even_when_the_other_arm_is_a_star():
    """One real arm carries the joint CCF (RV measured fine); the other, a smooth continuum
    with noise, would still be labelled: its own template correlation flags it."""
    pair = synthetic_pair(-25.0, snr=50, seed=7)
    x = (pair.red.wave - pair.red.wave.mean()) / np.ptp(pair.red.wave)
    pair.red.flux[:] = 800 * (1 - 0.2 * x) * (1 + np.random.default_rng(8).normal(0, 0.02, x.size))
    spectra = preprocess_pairs([pair])
    assert abs(spectra.rv[0] + 25.0) < 2.0 and spectra.quality.ccf_peak[0] > CCFSettings().min_peak
    assert spectra.quality.flags(0) == ["featureless"] and not spectra.quality.usable[0]
    assert "red arm has no stellar lines" in spectra.quality.reason[0]
    assert preprocess_pairs([synthetic_pair(-25.0, snr=50, seed=7)]).quality.flags(0) == []


def test_rv_error_grows_as_snr_falls():
    errors = [preprocess_pairs([synthetic_pair(40.0, snr=snr, seed=1)]).rv_err[0] for snr in (100, 20, 5)]
    assert errors[0] < errors[1] < errors[2]


def test_explicit_template_and_masked_pixels_are_down_weighted():
    wave = default_grid().wave
    template = line_spectrum(wave, load_line_list())
    rng = np.random.default_rng(3)
    shifted = as_template((wave, template))(wave / (1 + 61.5 / C_KMS))
    flux = shifted[None] + rng.normal(0, 0.02, (2, wave.size))
    mask = np.zeros(flux.shape, dtype=bool)
    flux[1, 1000:1400] = 40.0  # garbage ...
    mask[1, 1000:1400] = True  # ... that is flagged
    found = measure_rv(wave, flux, mask, template=(wave, template))
    assert np.all(np.abs(found.rv - 61.5) < 0.5), found.rv
    assert np.all(found.ccf_peak > 0.8)


def test_pure_noise_gives_a_low_ccf_peak_and_is_flagged():
    wave = default_grid().wave
    noise = 1 + np.random.default_rng(4).normal(0, 0.05, (1, wave.size))
    found = measure_rv(wave, noise)
    assert found.ccf_peak[0] < CCFSettings().min_peak


def test_empty_batch_and_non_ascending_wave():
    wave = default_grid().wave
    assert measure_rv(wave, np.zeros((0, wave.size))).rv.shape == (0,)
    with pytest.raises(SpemrError, match="ascending"):
        measure_rv(wave[::-1], np.ones((1, wave.size)))


def test_real_coadds_line_template_agrees_with_published_mean(shared_mrs_files, shared_label_config):
    """The shipped line template and the published mean spectrum (the average real star)
    give the same RV on the real usable coadds, within 2 km/s."""
    flux_mean = np.asarray(safe_load(shared_label_config)["flux_mean"], dtype=np.float64)
    pairs = [read_mrs(path).select("coadd")[0] for path in shared_mrs_files]
    by_lines = preprocess_pairs(pairs)
    by_mean = preprocess_pairs(pairs, rv_template=(default_grid().wave, flux_mean))
    usable = by_lines.quality.usable
    assert usable.sum() >= 3
    assert np.all(np.abs(by_lines.rv - by_mean.rv)[usable] < 2.0)


# ----------------------------------------------------------------- catalogs
def test_rv_catalog_by_obsid_and_filename(tmp_path):
    path = tmp_path / "rv.csv"
    path.write_text(
        "obsid,filename,rv_ku0,rv_ku0_err\n123456789,,12.5,0.7\n,med-58025-HIP9645901_sp02-051.fits.gz,-19.9,\n555,,,\n"
    )
    catalog = load_rv_catalog(path)
    assert catalog.lookup(obsid=123456789) == (12.5, 0.7)
    assert catalog.lookup(obsid="123456789.0") == (12.5, 0.7)
    assert catalog.lookup(filename="/data/med-58025-HIP9645901_sp02-051.fits") == (-19.9, 0.0)
    assert catalog.lookup(obsid=555) is None
    assert catalog.lookup(obsid=1, filename="other.fits") is None


@pytest.mark.parametrize(
    "text, problem",
    [
        ("obsid,teff\n1,5000\n", "needs an obsid or filename column and an rv"),
        ("obsid,rv\n1,fast\n", "line 2: 'fast' is not a number"),
    ],
)
def test_bad_rv_catalog_is_refused_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "cat.csv"
    path.write_text(text)
    with pytest.raises(InputFileError) as info:
        load_rv_catalog(path)
    assert str(info.value).startswith("cat.csv: ") and problem in str(info.value)


def test_cli_uses_the_rv_catalog(tmp_path, shared_mrs_dir, capsys):
    source = shared_mrs_dir / "med-58025-HIP9645901_sp02-051.fits.gz"
    catalog = tmp_path / "rv.csv"
    catalog.write_text("filename,rv\nmed-58025-HIP9645901_sp02-051.fits,-20.0\n")
    out = tmp_path / "out.npz"
    assert cli.main(["preprocess", str(source), "--rv-catalog", str(catalog), "-o", str(out)]) == 0
    data = np.load(out)
    assert data["rv"].tolist() == [-20.0] and data["rv_source"].tolist() == ["given"]
    assert data["rv_err"].tolist() == [0.0]


def test_rv_catalog_later_rows_win_and_odd_obsids_are_kept(tmp_path):
    path = tmp_path / "rv.csv"
    path.write_text(
        "obsid,rv,rv_err\n7,1.0,0.1\n99999999999999999999999,2.0,0.2\n1e400,3.0,0.3\n7,4.0,0.4\n-5,5.0,\n8,nan,1\n"
    )
    catalog = load_rv_catalog(path)
    assert catalog.lookup(obsid=7) == (4.0, 0.4)
    assert catalog.lookup(obsid=99999999999999999999999) == (2.0, 0.2)
    assert catalog.lookup(obsid="1e400") == (3.0, 0.3)
    assert catalog.lookup(obsid=-5) == (5.0, 0.0)
    assert catalog.lookup(obsid=8) is None and catalog.lookup(obsid=6) is None
    assert len(catalog) == 4


def test_rv_catalog_memory_is_a_small_multiple_of_its_size(tmp_path):
    """Issue 11 bound (1.5 GB for inputs <= 50 MB): a 50 MB catalog of 5 million short
    rows took 2.5 GB as a list of row dicts (47x its size in Python objects)."""
    import tracemalloc

    path = tmp_path / "rv.csv"
    path.write_text("obsid,rv\n" + "".join(f"{i},{i % 9}\n" for i in range(100_000)))
    tracemalloc.start()
    try:
        catalog = load_rv_catalog(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert catalog.lookup(obsid=99_999) == (99_999 % 9, 0.0)
    assert peak < 20 * path.stat().st_size, peak / path.stat().st_size
