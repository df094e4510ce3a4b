"""The LAMOST MRS reader on the real sample files and on layouts written here."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from mrs_testfiles import write_mrs
from spemr_engine.config import default_grid
from spemr_engine.errors import InputFileError
from spemr_engine.reading.lamost import air_to_vacuum, read_mrs, read_mrs_meta

# Pairs (coadd + exposures) per real file, read off the files' HDU lists.
REAL_PAIR_COUNTS = {"med-58025": 5, "med-58268": 10, "med-58269": 6, "med-58270": 5, "med-58408": 8}


def _real(files, prefix):
    return next(f for f in files if f.name.startswith(prefix))


@pytest.fixture(scope="module")
def real_files(shared_mrs_files):
    return {f.name[:9]: read_mrs(f) for f in shared_mrs_files}


# ------------------------------------------------------------------ real files
def test_real_metadata(real_files):
    meta = real_files["med-58025"].meta
    assert meta["obsid"] == 589002051
    assert meta["filename"] == "med-58025-HIP9645901_sp02-051.fits"
    assert meta["ra"] == pytest.approx(293.343833)
    assert meta["dec"] == pytest.approx(43.017495)
    assert meta["designation"] == "LAMOST J193322.51+430102.9"
    assert (meta["lmjd"], meta["mjd"], meta["planid"]) == (58025, 58024, "HIP9645901")
    assert (meta["spid"], meta["fiberid"]) == (2, 51)
    assert meta["data_release"] == "LAMOST DR7"
    assert meta["helio"] is True and meta["helio_rv"] == pytest.approx(11.2524)
    assert (meta["nexp_b"], meta["nexp_r"]) == (4, 4)
    assert meta["magtype"] == "gri" and meta["mags"] == pytest.approx([12.41, 11.59, 11.29])
    assert meta["primary_hdu"] == "Information"


def test_real_pairs_coadd_first_then_exposures_by_lmjm(real_files):
    assert {key: len(m.pairs) for key, m in real_files.items()} == REAL_PAIR_COUNTS
    for mrs in real_files.values():
        assert mrs.pairs[0].is_coadd and mrs.pairs[0].extname_blue == "COADD_B"
        lmjms = [p.lmjm for p in mrs.pairs[1:]]
        assert lmjms == sorted(lmjms)
        for pair in mrs.pairs[1:]:
            assert (pair.extname_blue, pair.extname_red) == (f"B-{pair.lmjm}", f"R-{pair.lmjm}")
        assert mrs.unpaired == [] and mrs.warnings == []


def test_real_snr_and_exptime_from_headers(real_files):
    coadd = real_files["med-58025"].coadd
    assert (coadd.snr_blue, coadd.snr_red) == (pytest.approx(92.84), pytest.approx(162.45))
    assert coadd.blue.exptime is None and coadd.lmjm is None
    unusable = real_files["med-58268"].coadd
    assert (unusable.snr_blue, unusable.snr_red) == (0.0, pytest.approx(1.01))
    exposure = real_files["med-58408"].exposures[0]
    assert exposure.lmjm == 84107311 and exposure.blue.exptime == 1200.0
    assert exposure.snr_red == pytest.approx(93.38)


def test_real_wavelengths_ascending_and_cover_the_grid(real_files):
    grid = default_grid().arms
    for mrs in real_files.values():
        for pair in mrs.pairs:
            for arm, arm_grid, (low, high) in ((pair.blue, grid[0], (4880, 5400)), (pair.red, grid[1], (6280, 6890))):
                assert arm.wave.dtype == np.float64
                assert np.all(np.diff(arm.wave) > 0), arm.extname
                assert low < arm.wave[0] < arm_grid.start and arm_grid.stop < arm.wave[-1] < high
                assert arm.wave.size == arm.flux.size == arm.ivar.size == arm.mask.size


def test_real_red_exposure_sorted_with_its_pixels(shared_mrs_files, real_files):
    """Red exposures are stored descending: flux/ivar must follow the wavelengths."""
    path = _real(shared_mrs_files, "med-58408")
    arm = real_files["med-58408"].exposures[0].red
    with fits.open(path) as hdul:
        raw = hdul[arm.extname].data
        loglam, flux = np.array(raw["LOGLAM"], float), np.array(raw["FLUX"], float)
    assert loglam[0] > loglam[-1]
    np.testing.assert_allclose(arm.wave, 10 ** loglam[::-1])
    np.testing.assert_array_equal(arm.flux, flux[::-1])


@pytest.mark.parametrize("extname, mask_column", [("COADD_B", "ORMASK"), ("B-84107311", "PIXMASK")])
def test_real_mask_is_zero_ivar_or_mask_bits(shared_mrs_files, real_files, extname, mask_column):
    path = _real(shared_mrs_files, "med-58408")
    mrs = real_files["med-58408"]
    arm = next(a for p in mrs.pairs for a in (p.blue, p.red) if a.extname == extname)
    with fits.open(path) as hdul:
        raw = hdul[extname].data
        expected = (np.asarray(raw["IVAR"]) == 0) | (np.asarray(raw[mask_column]) != 0) | (np.asarray(raw["FLUX"]) == 0)
    np.testing.assert_array_equal(arm.mask, expected)
    assert 0 < arm.mask.sum() < 100


def test_select(real_files):
    mrs = real_files["med-58025"]
    assert [p.label for p in mrs.select("coadd")] == ["coadd"]
    assert len(mrs.select("all")) == 5
    assert [p.lmjm for p in mrs.select("83555772")] == [83555772]
    assert [p.lmjm for p in mrs.select(83555772)] == [83555772]
    with pytest.raises(InputFileError, match=r"med-58025.*no exposure '999'.*coadd, 83555758"):
        mrs.select("999")


# ------------------------------------------------------------ written layouts
@pytest.mark.parametrize("layout, wave_column", [("rows", "LOGLAM"), ("cells", "WAVELENGTH"), ("cells", "LOGLAM")])
def test_both_table_layouts_read_the_same(tmp_path, layout, wave_column):
    reference = read_mrs(write_mrs(tmp_path / "rows.fits"))
    other = read_mrs(write_mrs(tmp_path / f"{layout}.fits", layout=layout, wave_column=wave_column))
    assert [p.label for p in other.pairs] == ["coadd", "100", "200"]
    for mine, theirs in zip(reference.pairs, other.pairs):
        for a, b in ((mine.blue, theirs.blue), (mine.red, theirs.red)):
            np.testing.assert_allclose(b.wave, a.wave, rtol=1e-6)
            np.testing.assert_array_equal(b.flux, a.flux)
            np.testing.assert_array_equal(b.mask, a.mask)


def test_written_file_mask_semantics_and_sorting(tmp_path):
    """Pixels 5 (ivar 0), 7 (mask bit) and 9 (NaN flux) are bad; reds were stored reversed."""
    mrs = read_mrs(write_mrs(tmp_path / "m.fits"))
    blue, red = mrs.pairs[1].blue, mrs.pairs[1].red
    assert np.flatnonzero(blue.mask).tolist() == [5, 7, 9]
    assert np.flatnonzero(red.mask).tolist() == [5, 7, 9]  # same pixels once sorted
    assert np.all(np.diff(red.wave) > 0)


def test_primary_named_primary_and_gzip(tmp_path):
    mrs = read_mrs(write_mrs(tmp_path / "p.fits.gz", primary="PRIMARY", gz=True))
    assert mrs.meta["primary_hdu"] == "PRIMARY" and mrs.meta["obsid"] == 123456789
    assert len(mrs.pairs) == 3


def test_missing_partner_goes_to_unpaired_with_warning(tmp_path):
    path = write_mrs(tmp_path / "lonely.fits", extnames=("COADD_B", "COADD_R", "B-100", "R-100", "R-200"))
    mrs = read_mrs(path)
    assert [p.label for p in mrs.pairs] == ["coadd", "100"]
    assert [a.extname for a in mrs.unpaired] == ["R-200"]
    assert mrs.warnings == ["R-200 has no partner B-200: left unpaired"]


def test_exposures_only_file_has_no_coadd(tmp_path):
    mrs = read_mrs(write_mrs(tmp_path / "nocoadd.fits", extnames=("B-100", "R-100")))
    assert [p.label for p in mrs.pairs] == ["100"]
    with pytest.raises(InputFileError, match="nocoadd.fits: has no coadd pair"):
        mrs.select("coadd")


def test_air_wavelengths_are_converted_to_vacuum(tmp_path):
    vacuum = read_mrs(write_mrs(tmp_path / "vac.fits"))
    air = read_mrs(write_mrs(tmp_path / "air.fits", VACUUM=False))
    assert any("air to vacuum" in w for w in air.warnings)
    shift = air.coadd.blue.wave - vacuum.coadd.blue.wave
    assert np.all((shift > 1.3) & (shift < 1.6))  # ~1.4-1.5 A near 5100 A
    assert air_to_vacuum(np.array([6562.80]))[0] == pytest.approx(6564.61, abs=0.01)  # H-alpha


def test_fewer_exposures_than_header_says_is_reported(tmp_path):
    mrs = read_mrs(write_mrs(tmp_path / "short.fits", NEXP_B=3))
    assert mrs.warnings == ["header NEXP_B = 3 but the file has 2 B-<lmjm> exposures (file may be incomplete)"]


def test_header_only_metadata_matches_full_read(shared_mrs_files, real_files, shared_lrs_file):
    for path in shared_mrs_files:
        assert read_mrs_meta(path) == real_files[path.name[:9]].meta
    with pytest.raises(InputFileError, match="LAMOST low-resolution"):
        read_mrs_meta(shared_lrs_file)


def test_scaled_columns_take_the_astropy_path(tmp_path):
    """Unsigned 16-bit masks are stored with TZERO: read through astropy, same result."""
    reference = read_mrs(write_mrs(tmp_path / "plain.fits"))
    with fits.open(tmp_path / "plain.fits") as hdul:
        for hdu in hdul[1:]:
            name = "ORMASK" if "ORMASK" in hdu.columns.names else "PIXMASK"
            columns = [
                c
                if c.name != name
                else fits.Column(name=name, format="I", bzero=32768, array=hdu.data[name].astype(np.uint16))
                for c in hdu.columns
            ]
            hdul[hdu.name] = fits.BinTableHDU.from_columns(columns, header=hdu.header)
        hdul.writeto(tmp_path / "scaled.fits")
    with fits.open(tmp_path / "scaled.fits") as hdul:
        assert "TZERO4" in hdul["B-100"].header
    scaled = read_mrs(tmp_path / "scaled.fits")
    for mine, theirs in zip(reference.pairs, scaled.pairs):
        np.testing.assert_array_equal(theirs.red.mask, mine.red.mask)
        np.testing.assert_array_equal(theirs.blue.flux, mine.blue.flux)


def test_coadd_pixels_flagged_in_some_exposures_are_masked_but_not_unusable(tmp_path):
    """ORMASK (any exposure flagged) marks the coadd mask; only ivar = 0, NaN and ANDMASK
    (every exposure flagged) make a pixel unusable, i.e. to be interpolated over."""
    mrs = read_mrs(write_mrs(tmp_path / "m.fits"))
    coadd, exposure = mrs.pairs[0].blue, mrs.pairs[1].blue
    assert np.flatnonzero(coadd.mask).tolist() == [5, 7, 9]
    assert np.flatnonzero(coadd.unusable).tolist() == [5, 9]
    np.testing.assert_array_equal(exposure.unusable, exposure.mask)


def test_real_coadd_unusable_is_zero_ivar_or_andmask(shared_mrs_files, real_files):
    path = _real(shared_mrs_files, "med-58408")
    arm = next(p.blue for p in real_files["med-58408"].pairs if p.is_coadd)
    with fits.open(path) as hdul:
        raw = hdul["COADD_B"].data
        expected = (np.asarray(raw["IVAR"]) == 0) | (np.asarray(raw["ANDMASK"]) != 0) | (np.asarray(raw["FLUX"]) == 0)
    np.testing.assert_array_equal(arm.unusable, expected)
    assert arm.unusable.sum() < arm.mask.sum()


def test_real_zero_flux_with_weight_and_no_andmask_is_no_data(shared_mrs_files, real_files):
    """med-58408 COADD_B: FLUX = 0 with IVAR > 0 and ANDMASK = 0 at 5210.1-5210.6 A.
    Those pixels are no data: unusable (interpolated over) and masked (shaded)."""
    _real(shared_mrs_files, "med-58408")
    arm = next(p.blue for p in real_files["med-58408"].pairs if p.is_coadd)
    window = (arm.wave > 5210.05) & (arm.wave < 5210.7)
    assert window.sum() == 5
    assert np.all(arm.flux[window] == 0) and np.all(arm.ivar[window] > 0)
    assert arm.unusable[window].all() and arm.mask[window].all()


def test_zero_flux_is_no_data_whatever_the_mask_bits_say(tmp_path):
    """A pixel of flux exactly 0 with weight and no mask bit is unusable and masked, in a
    coadd and in an exposure; a pixel of tiny non-zero flux stays data."""
    from mrs_testfiles import arm_hdu, primary_hdu

    hdus = [primary_hdu()]
    for extname in ("COADD_B", "COADD_R", "B-100", "R-100"):
        hdu = arm_hdu(extname)
        hdu.data["FLUX"][[100, 101]] = 0.0
        hdu.data["FLUX"][200] = 1e-30
        hdus.append(hdu)
    path = tmp_path / "zero.fits"
    fits.HDUList(hdus).writeto(path)
    for pair in read_mrs(path).pairs:
        for arm in (pair.blue, pair.red):
            zero = arm.flux == 0
            assert zero.sum() == 2
            assert arm.unusable[zero].all() and arm.mask[zero].all()
            assert not arm.unusable[arm.flux == np.float32(1e-30)].any()
