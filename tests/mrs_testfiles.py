"""Small LAMOST-MRS-like FITS files written by tests (layouts the real sample lacks)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from astropy.io import fits

BLUE_RANGE = (4894.0, 5378.0)
RED_RANGE = (6292.0, 6851.0)


def arm_arrays(side: str, n_pixels: int = 500, descending: bool = False, seed: int = 0):
    """Log-linear wavelengths over the real MRS coverage, flux with a few bad pixels."""
    low, high = BLUE_RANGE if side == "B" else RED_RANGE
    wave = np.logspace(np.log10(low), np.log10(high), n_pixels)
    rng = np.random.default_rng(seed)
    flux = 1000.0 + rng.normal(0.0, 10.0, n_pixels)
    ivar = np.full(n_pixels, 0.01)
    mask = np.zeros(n_pixels, dtype=np.int16)
    ivar[5] = 0.0  # bad: no weight
    mask[7] = 4  # bad: a mask bit
    flux[9] = np.nan  # bad: non-finite flux
    if descending:
        wave, flux, ivar, mask = wave[::-1], flux[::-1], ivar[::-1], mask[::-1]
    return wave, flux, ivar, mask


def arm_hdu(
    extname: str,
    layout: str = "rows",
    wave_column: str = "LOGLAM",
    drop: tuple[str, ...] = (),
    snr: float | None = 50.0,
    n_pixels: int = 500,
):
    """One arm table in the per-pixel-row (DR6-DR9 v0) or one-row array-cell layout."""
    side = extname[-1] if extname.startswith("COADD") else extname[0]
    coadd = extname.startswith("COADD")
    wave, flux, ivar, mask = arm_arrays(side, n_pixels, descending=(side == "R" and not coadd))
    wave_values = np.log10(wave) if wave_column == "LOGLAM" else wave
    data = {"FLUX": flux, "IVAR": ivar, wave_column: wave_values}
    if coadd:
        data["ANDMASK"], data["ORMASK"] = np.zeros_like(mask), mask
    else:
        data["PIXMASK"] = mask
    columns = []
    for name, values in data.items():
        if name in drop:
            continue
        kind = "I" if values.dtype.kind == "i" else ("D" if name == "WAVELENGTH" else "E")
        if layout == "rows":
            columns.append(fits.Column(name=name, format=kind, array=values))
        else:
            columns.append(fits.Column(name=name, format=f"{values.size}{kind}", array=values[np.newaxis, :]))
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    if snr is not None:
        hdu.header["SNR"] = snr
    if not coadd:
        hdu.header["LMJM"] = extname[2:]
        hdu.header["EXPTIME"] = 900
    return hdu


def primary_hdu(name: str = "Information", **extra) -> fits.PrimaryHDU:
    header = fits.Header()
    values = {
        "FILENAME": "med-58000-TEST_sp01-001.fits",
        "OBSID": 123456789,
        "AUTHOR": "LAMOST Pipeline",
        "DATA_V": "LAMOST DR9",
        "RA": 10.5,
        "DEC": -2.25,
        "DESIG": "LAMOST J004200.00-021500.0",
        "OBJNAME": "test-star",
        "LMJD": 58000,
        "MJD": 57999,
        "PLANID": "TESTPLAN",
        "SPID": 1,
        "FIBERID": 1,
        "HELIO": True,
        "HELIO_RV": 3.5,
        "VACUUM": True,
        "NEXP_B": 2,
        "NEXP_R": 2,
        "MAGTYPE": "gri",
        "MAG1": 12.0,
        "MAG2": 11.5,
        "MAG3": 99.0,
    }
    values.update(extra)
    for key, value in values.items():
        header[key] = value
    hdu = fits.PrimaryHDU(header=header)
    hdu.name = name
    return hdu


def write_mrs(
    path: Path,
    extnames=("COADD_B", "COADD_R", "B-100", "R-100", "B-200", "R-200"),
    layout: str = "rows",
    primary: str = "Information",
    wave_column: str = "LOGLAM",
    drop: tuple[str, ...] = (),
    gz: bool = False,
    **primary_extra,
) -> Path:
    n_exposures = {side: sum(1 for e in extnames if e.startswith(f"{side}-")) for side in "BR"}
    primary_extra = {
        "N_EXTEN": len(extnames) + 1,
        "NEXP_B": n_exposures["B"],
        "NEXP_R": n_exposures["R"],
        **primary_extra,
    }
    hdus = [primary_hdu(primary, **primary_extra)]
    hdus += [arm_hdu(name, layout, wave_column, drop) for name in extnames]
    hdul = fits.HDUList(hdus)
    if gz:
        buffer = _to_bytes(hdul)
        path.write_bytes(gzip.compress(buffer))
    else:
        hdul.writeto(path, overwrite=True)
    return path


def _to_bytes(hdul: fits.HDUList) -> bytes:
    import io

    stream = io.BytesIO()
    hdul.writeto(stream)
    return stream.getvalue()


# ------------------------------------------------- star-like files (with lines)
def star_arm_hdu(
    extname: str, rv_kms: float, snr: float, seed: int, n_pixels: int = 4000, bad_pixels: np.ndarray | None = None
) -> fits.BinTableHDU:
    """An arm with absorption lines (the RV module's line template, shifted by rv_kms),
    a sloped continuum, noise at the header S/N, and chosen pixels set to ivar = 0."""
    from spemr_engine.config import preprocess_config
    from spemr_engine.preprocessing.rv import default_template

    side = extname[-1] if extname.startswith("COADD") else extname[0]
    low, high = BLUE_RANGE if side == "B" else RED_RANGE
    wave = np.logspace(np.log10(low), np.log10(high), n_pixels)
    c_kms = preprocess_config().speed_of_light_kms
    continuum = 1000.0 * (1.0 + 0.3 * (wave - wave.mean()) / (high - low))
    flux = continuum * default_template()(wave / (1.0 + rv_kms / c_kms))
    rng = np.random.default_rng(seed)
    flux = flux + rng.normal(0.0, 1.0, n_pixels) * continuum / max(snr, 1.0)
    ivar = np.full(n_pixels, (max(snr, 1.0) / 1000.0) ** 2)
    if bad_pixels is not None:
        ivar[bad_pixels] = 0.0
    mask = np.zeros(n_pixels, dtype=np.int16)
    columns = [
        fits.Column(name="FLUX", format="E", array=flux),
        fits.Column(name="IVAR", format="E", array=ivar),
        fits.Column(name="LOGLAM", format="E", array=np.log10(wave)),
    ]
    if extname.startswith("COADD"):
        columns += [
            fits.Column(name="ANDMASK", format="I", array=mask),
            fits.Column(name="ORMASK", format="I", array=mask),
        ]
    else:
        columns.append(fits.Column(name="PIXMASK", format="I", array=mask))
    hdu = fits.BinTableHDU.from_columns(columns, name=extname)
    hdu.header["SNR"] = snr
    if not extname.startswith("COADD"):
        hdu.header["LMJM"] = extname[2:]
        hdu.header["EXPTIME"] = 900
    return hdu


def grid_pixels(side: str, start_wave: float, count: int, stride: int = 1, n_pixels: int = 4000):
    """Raw pixel indices from ``start_wave`` on (every ``stride``-th), for bad-pixel tests."""
    low, high = BLUE_RANGE if side == "B" else RED_RANGE
    wave = np.logspace(np.log10(low), np.log10(high), n_pixels)
    first = int(np.searchsorted(wave, start_wave))
    return first + stride * np.arange(count)


def write_star_file(
    path: Path,
    ra: float,
    dec: float,
    obsid: int,
    rv_kms: float = 20.0,
    snr: dict | None = None,
    bad: dict | None = None,
    exposures=(101, 102),
    seed: int = 0,
) -> Path:
    """A LAMOST-like MRS file of one star: coadd plus exposures, S/N per extension
    (default 60), ``bad``: extname -> raw pixel indices with ivar = 0."""
    snr, bad = snr or {}, bad or {}
    names = ["COADD_B", "COADD_R"] + [f"{s}-{e}" for s in "BR" for e in exposures]
    hdus = [
        primary_hdu(
            FILENAME=path.name.replace(".gz", ""),
            OBSID=obsid,
            RA=ra,
            DEC=dec,
            N_EXTEN=len(names) + 1,
            NEXP_B=len(exposures),
            NEXP_R=len(exposures),
        )
    ]
    for k, name in enumerate(names):
        hdus.append(star_arm_hdu(name, rv_kms, snr.get(name, 60.0), seed * 100 + k, bad_pixels=bad.get(name)))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
