"""`spemr report`: the paper's diagnostics for a catalog (issue 12), and the statistics
behind the uncertainty figure. Nothing here depends on the shipped model's numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from spemr_engine.batch import report
from spemr_engine.cli import main
from spemr_engine.config import assets_dir

pytest.importorskip("matplotlib")

SAMPLES = sorted(str(p) for p in (assets_dir() / "samples").glob("med-*.fits.gz"))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """The shipped samples, coadd + every exposure: repeat observations of each star."""
    out = tmp_path_factory.mktemp("report") / "cat.csv"
    assert main(["predict", *SAMPLES, "--exposure", "all", "-o", str(out)]) == 0
    return out


def _isochrones(folder: Path) -> Path:
    path = folder / "iso.csv"
    path.write_text("teff_0,logg_0\n3.70,4.6\n3.76,4.3\n3.78,4.0\n3.70,3.5\n3.66,2.0\n")
    return path


def test_html_report_holds_every_section_and_image(catalog, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(catalog), "-o", str(out), "--isochrones", str(_isochrones(tmp_path))]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    for section in ("header", "kiel", "uncertainty", "quality"):
        assert f'<section id="{section}">' in text
    assert text.count('src="data:image/png;base64,') == 3
    assert "trained on:" in text and "iso.csv" in text
    assert "<script" not in text and "http" not in text.split("<body>")[1]  # self-contained


def test_pdf_and_png_export(catalog, tmp_path):
    assert main(["report", str(catalog), "-o", str(tmp_path / "r.pdf"), "--no-isochrones"]) == 0
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert main(["report", str(catalog), "-o", str(tmp_path / "fig.png"), "--format", "png"]) == 0
    for key in ("kiel", "uncertainty", "quality"):
        assert (tmp_path / f"fig-{key}.png").read_bytes().startswith(b"\x89PNG")


def test_fits_catalog_header_names_the_model(tmp_path):
    """A FITS catalog from `spemr catalog` carries the model and its thresholds in its header."""
    out = tmp_path / "cat.fits"
    assert main(["catalog", *SAMPLES[:2], "--exposures", "all", "--workers", "0", "--quiet", "-o", str(out)]) == 0
    loaded = report.load_catalog(out)
    lines = report.header_lines(loaded)
    assert any(line.startswith("model: ") and "not recorded" not in line for line in lines)
    assert any(line.startswith("trained on: ") and "not recorded" not in line for line in lines)
    figures = report.make_figures(loaded)
    assert set(figures) == {"kiel", "uncertainty", "quality"}


def test_repeat_scatter_on_a_constructed_table():
    groups = ["A", "A", "B", "B", "B", "C", "", "D", "D"]
    snr = [15, 15, 50, 50, 50, 50, 50, 15, np.nan]
    values = [10.0, 12.0, 0.0, 3.0, 6.0, 99.0, 5.0, 7.0, 8.0]
    out = report.repeat_scatter(groups, snr, values, edges=(0, 20, 100))
    # A: residuals +-1 scaled by sqrt(2/1); B: -3, 0, 3 scaled by sqrt(3/2); C alone, "" unknown
    # and D without a finite S/N partner are left out.
    assert out.n_stars == 2
    assert out.n_obs.tolist() == [2, 3]
    assert out.scatter[0] == pytest.approx(math.sqrt(2.0))
    assert out.scatter[1] == pytest.approx(3.0)
    assert out.centre.tolist() == [15.0, 50.0]
    lone = report.repeat_scatter(["A", "B"], [10, 10], [1.0, 2.0], edges=(0, 20))
    assert lone.n_stars == 0 and np.isnan(lone.scatter[0])


def test_repeat_groups_keep_coadds_apart_from_exposures(tmp_path):
    table = report.Catalog(
        tmp_path / "x.csv",
        {
            "designation": ["J1", "J1", "J1", "J1", None, None],
            "obsid": [1, 1, 1, 2, 7, 7],
            "spectrum": ["coadd", "84406763", "84406777", "coadd", "coadd", "84406763"],
            "extname_blue": ["COADD_B", "B-84406763", "B-84406777", "COADD_B", "COADD_B", "B-84406763"],
        },
    )
    groups = report.repeat_groups(table)
    assert groups[1] == groups[2] != groups[0]
    assert groups[0] == groups[3]  # the same star's coadds from two files
    assert groups[4] != groups[5] and groups[4].startswith("7")


def test_binned_median_and_flag_counts(tmp_path):
    x, y = report.binned_median([5, 6, 50, np.nan], [1.0, 3.0, 9.0, 4.0], edges=(0, 10, 100, 200))
    assert x[:2].tolist() == [5.5, 50.0] and y[:2].tolist() == [2.0, 9.0] and np.isnan(y[2])
    table = report.Catalog(tmp_path / "x.csv", {"flags": ["poor_fit|low_snr", None, "low_snr", ""]})
    assert report.flag_counts(table) == {"poor_fit": 1, "region_mismatch": 0, "low_snr": 2}


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("bad.fits", "SIMPLE  = this is not FITS\x00\x01" * 100, "cannot be read as a catalog"),
        ("bad.csv", "this is not a catalog\n", "missing column"),
        ("bad.csv", "obsid,snr_blue,Teff[K],Teff[K]_err,Logg,Logg_err,FeH,FeH_err\n", "empty"),
        ("bad.csv", "obsid,filename\n1,a.fits\n", "missing column(s) snr_blue, Teff[K]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{name}: ") and problem in err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("name, problem", [("nothing.csv", "no such catalog"), ("cat.npz", "not a catalog")])
def test_missing_or_foreign_file(tmp_path, capsys, name, problem):
    if name.endswith(".npz"):
        (tmp_path / name).write_bytes(b"PK\x03\x04")
    assert main(["report", str(tmp_path / name), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err


def test_mist_isochrones_overlay(catalog, tmp_path, shared_isochrones):
    """The MIST 7 Gyr file the GUI overlays (log10 Teff columns) is drawn: one curve each."""
    fig = report.kiel_figure(report.load_catalog(catalog), report_isochrones(shared_isochrones))
    curves = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("[Fe/H]")]
    assert len(curves) >= 1 and min(np.nanmin(c.get_xdata()) for c in curves) > 1000  # K, not log10


def report_isochrones(path):
    from spemr_engine.batch.isochrones import read_isochrones

    return read_isochrones(path)


def test_kiel_panels_follow_snr_bins(tmp_path):
    """One panel per S/N bin that has spectra, and one for spectra whose S/N is unknown."""
    table = report.Catalog(
        tmp_path / "x.csv",
        {
            "snr_blue": [10.0, 12.0, 50.0, None],
            "Teff[K]": [5000.0, 5100.0, 4800.0, 6000.0],
            "Teff[K]_err": [100.0] * 4,
            "Logg": [4.5, 4.4, 2.5, 4.0],
            "Logg_err": [0.1] * 4,
            "FeH": [0.0, -0.2, -0.5, 0.1],
            "FeH_err": [0.05] * 4,
        },
    )
    titles = [ax.get_title() for ax in report.kiel_figure(table).axes if ax.get_title()]
    assert titles == ["0 ≤ S/N < 20 (2 spectra)", "40 ≤ S/N < 80 (1 spectrum)", "S/N unknown (1 spectrum)"]
