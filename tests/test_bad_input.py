"""Unusable input is refused with one line naming the file and the problem;
the CLI turns that line into stderr + exit code 2."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits

from mrs_testfiles import write_mrs
from spemr_engine import cli
from spemr_engine.errors import InputFileError
from spemr_engine.reading.lamost import read_mrs


def _refusal(path) -> str:
    """Read a bad file with warnings as errors: an astropy warning must not leak out."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputFileError) as info:
            read_mrs(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path.name}: ")
    return message


def test_lamost_lrs_file(shared_lrs_file):
    assert "LAMOST low-resolution (LRS) spectrum, not" in _refusal(shared_lrs_file)


def test_fits_that_is_not_lamost_mrs(tmp_path):
    path = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4))), fits.ImageHDU(np.ones(3), name="SCI")]).writeto(path)
    message = _refusal(path)
    assert "not a LAMOST MRS file" in message and "SCI" in message


def test_truncated_fits_gz(tmp_path):
    whole = gzip.compress(write_mrs(tmp_path / "whole.fits").read_bytes())
    path = tmp_path / "cut.fits.gz"
    path.write_bytes(whole[: len(whole) // 2])
    assert "truncated gzip" in _refusal(path)


def test_gzip_of_a_truncated_fits(tmp_path):
    raw = write_mrs(tmp_path / "whole.fits").read_bytes()
    path = tmp_path / "short.fits.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) - 3000]))
    assert "truncated FITS" in _refusal(path)


@pytest.mark.parametrize("keep", [0.5, 0.9, 2880 * 2])
def test_truncated_fits(tmp_path, keep):
    raw = write_mrs(tmp_path / "whole.fits").read_bytes()
    size = int(len(raw) * keep) if keep < 1 else keep
    path = tmp_path / "cut.fits"
    path.write_bytes(raw[:size])
    assert "truncated" in _refusal(path)


def test_real_file_truncated_at_a_block_boundary(tmp_path, shared_mrs_files):
    raw = gzip.decompress(shared_mrs_files[0].read_bytes())
    path = tmp_path / "blocks.fits"
    path.write_bytes(raw[: (len(raw) // 2 // 2880) * 2880])
    assert "truncated FITS" in _refusal(path)


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(write_mrs(tmp_path / "whole.fits").read_bytes()))
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path = tmp_path / "bad.fits.gz"
    path.write_bytes(bytes(data))
    assert "corrupt gzip data" in _refusal(path)


def test_missing_flux_column(tmp_path):
    path = write_mrs(tmp_path / "noflux.fits", drop=("FLUX",))
    message = _refusal(path)
    assert "extension COADD_B has no FLUX column" in message and "IVAR" in message


def test_missing_wavelength_column(tmp_path):
    path = write_mrs(tmp_path / "nowave.fits", drop=("LOGLAM",))
    assert "neither a LOGLAM nor a WAVELENGTH column" in _refusal(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("obsid,ra,dec\n1,2,3\n")
    assert "is not a FITS file" in _refusal(path)


def test_missing_file(tmp_path):
    assert _refusal(tmp_path / "absent.fits").endswith("file not found")


def test_cli_refusal_is_one_stderr_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "notes.fits"
    path.write_text("hello")
    assert cli.main(["info", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["notes.fits: is not a FITS file (starts with 'hello')"]


def test_cli_info_prints_json(tmp_path, capsys):
    path = write_mrs(tmp_path / "ok.fits", extnames=("COADD_B", "COADD_R", "B-100", "R-100", "B-200"))
    assert cli.main(["info", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["meta"]["obsid"] == 123456789
    assert [(p["extname_blue"], p["extname_red"]) for p in report["pairs"]] == [
        ("COADD_B", "COADD_R"),
        ("B-100", "R-100"),
    ]
    assert report["pairs"][1]["lmjm"] == 100 and report["pairs"][1]["snr_blue"] == 50.0
    assert report["unpaired"][0]["extname"] == "B-200" and len(report["warnings"]) == 1


def test_spemr_info_subprocess(shared_lrs_file):
    result = subprocess.run(
        [sys.executable, "-m", "spemr_engine", "info", str(shared_lrs_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(shared_lrs_file.name + ": ")
    assert "LRS" in lines[0]
