"""Reference sets from real-format files: label catalogs, sky cross-match, cuts, resume."""

from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch
from astropy.table import Table

from mrs_testfiles import grid_pixels, write_star_file
from spemr_engine import cli
from spemr_engine.config import LABELS, label_infos
from spemr_engine.training.crossmatch import (
    LOG_FILE,
    BuildLog,
    BuildOptions,
    build_reference_set,
    find_input_files,
    match_positions,
    parse_radius,
)
from spemr_engine.errors import Cancelled, InputFileError, SpemrError
from spemr_engine.reading.label_catalog import read_label_catalog
from spemr_engine.training.refset import ReferenceSet
from spemr_engine.model.rrnet import gaussian_nll

ARCSEC = 1 / 3600.0
ELEMENTS = ("C", "N", "O", "MG", "AL", "SI", "S", "K", "CA", "TI", "CR", "MN", "NI")
STAR_BAD = 1 << 23
# id, ra, dec, snr, teff, logg, feh, {element: [X/Fe]}, {flagged element}, aspcapflag
STARS = [
    ("2M-A", 10.0, 20.0, 200.0, 5500.0, 4.4, -0.2, {"C": 0.1, "O": -9999.0}, {"N"}, 0),
    ("2M-A", 10.0, 20.0, 50.0, 9999.0, 9.9, 9.9, {}, set(), 0),  # duplicate, lower S/N
    ("2M-B", 30.0, -5.0, 150.0, 3900.0, 1.5, -1.3, {"MG": 0.3}, set(), 0),
    ("2M-C", 40.0, 0.0, 150.0, 5000.0, 3.0, 0.0, {}, set(), 0),
    ("2M-D1", 50.0, 10.0, 150.0, 5000.0, 3.0, 0.0, {}, set(), 0),
    ("2M-D2", 50.0, 10.0 + 1.5 * ARCSEC, 150.0, 5100.0, 3.0, 0.0, {}, set(), 0),
    ("2M-E", 60.0, 30.0, 150.0, 5000.0, 3.0, 0.0, {}, set(), STAR_BAD),
    ("2M-F", 70.0, -20.0, 150.0, 6000.0, 4.0, 0.1, {}, set(), 0),
    ("2M-G", 80.0, 80.0, 150.0, 6000.0, 4.0, 0.1, {}, set(), 0),  # no spectrum
]


def allstar_table() -> Table:
    """An allStar-like table: [X/Fe] columns with _FLAG, ASPCAPFLAG, duplicates, -9999."""
    columns = {
        "APOGEE_ID": [s[0] for s in STARS],
        "RA": [s[1] for s in STARS],
        "DEC": [s[2] for s in STARS],
        "SNR": [s[3] for s in STARS],
        "TEFF": [s[4] for s in STARS],
        "LOGG": [s[5] for s in STARS],
        "FE_H": [s[6] for s in STARS],
        "FE_H_FLAG": [0] * len(STARS),
    }
    for element in ELEMENTS:
        columns[f"{element}_FE"] = [s[7].get(element, 0.05) for s in STARS]
        columns[f"{element}_FE_FLAG"] = [int(element in s[8]) for s in STARS]
    columns["ASPCAPFLAG"] = np.array([s[9] for s in STARS], dtype=np.int64)
    return Table(columns)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("xmatch")
    folder = root / "mrs"
    folder.mkdir()
    write_star_file(
        folder / "med-A.fits",
        10.0,
        20.0,
        1,
        rv_kms=35.0,
        snr={"B-101": 5.0},
        bad={"R-102": grid_pixels("R", 6400, 40)},
        seed=1,
    )
    write_star_file(
        folder / "med-B.fits",
        30.0,
        -5.0 + 2.0 * ARCSEC,
        2,
        rv_kms=-60.0,
        bad={"COADD_B": grid_pixels("B", 5000, 150, 3)},
        seed=2,
    )
    write_star_file(folder / "med-C.fits", 40.0, 4.0 * ARCSEC, 3, seed=3)
    write_star_file(folder / "med-D.fits", 50.0, 10.0 + 0.5 * ARCSEC, 4, seed=4)
    write_star_file(folder / "med-E.fits", 60.0, 30.0, 5, seed=5)
    write_star_file(
        folder / "med-F.fits",
        70.0,
        -20.0,
        6,
        seed=6,
        snr={n: 5.0 for n in ("COADD_B", "COADD_R", "B-101", "R-101", "B-102", "R-102")},
    )
    (folder / "junk.fits").write_text("not a FITS file\n")
    table = allstar_table()
    table.write(root / "allStar.fits")
    table.write(root / "allStar.csv")
    return {"root": root, "folder": folder, "fits": root / "allStar.fits", "csv": root / "allStar.csv"}


@pytest.fixture(scope="module")
def built_all(data):
    out = data["root"] / "refset-all"
    summary = build_reference_set([data["folder"]], data["fits"], out, BuildOptions(exposures="all"))
    return summary, ReferenceSet.open(out)


# ---------------------------------------------------------------- catalogs
@pytest.mark.parametrize("kind", ["fits", "csv"])
def test_allstar_catalog_to_model_labels(data, kind):
    catalog = read_label_catalog(data[kind])
    assert catalog.mapping == "apogee_dr17"
    assert list(catalog.star_id) == ["2M-A", "2M-B", "2M-C", "2M-D1", "2M-D2", "2M-E", "2M-F", "2M-G"]
    assert catalog.counts["duplicates_removed"] == 1 and catalog.counts["star_flagged"] == 1
    a = dict(zip(LABELS, catalog.labels[0]))
    assert a["Teff"] == 5500 and a["FeH"] == pytest.approx(-0.2)  # highest-S/N duplicate kept
    assert a["CH"] == pytest.approx(0.1 - 0.2)  # [X/H] = [X/Fe] + [Fe/H]
    assert a["MgH"] == pytest.approx(0.05 - 0.2)
    assert np.isnan(a["NH"]) and np.isnan(a["OH"])  # flagged / -9999
    assert np.all(np.isnan(catalog.labels[5]))  # STAR_BAD masks the star
    assert dict(zip(LABELS, catalog.labels[1]))["MgH"] == pytest.approx(0.3 - 1.3)


def test_plain_catalog_with_published_label_names(tmp_path):
    path = tmp_path / "plain.csv"
    names = [info.catalog for info in label_infos()]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["star_id", "ra", "dec", *names])
        writer.writerow(["s1", 1.0, 2.0, 5000, 3.0, -0.5, *([0.1] * 13)])
        writer.writerow(["s2", 3.0, 4.0, 6000, "", -0.1, *([""] * 13)])
    catalog = read_label_catalog(path)
    assert catalog.mapping == "plain"
    assert catalog.labels[0, LABELS.index("CH")] == pytest.approx(0.1)  # already [X/H]
    assert np.isnan(catalog.labels[1, LABELS.index("Logg")]) and catalog.labels[1, 0] == 6000


def test_user_mapping_adds_a_survey(tmp_path):
    table = Table(
        {
            "sobject_id": [7],
            "ra_dr2": [5.0],
            "dec_dr2": [6.0],
            "teff": [5800.0],
            "fe_h": [-0.3],
            "mg_fe": [0.2],
            "flag_mg_fe": [1],
            "ca_fe": [0.1],
            "flag_ca_fe": [0],
        }
    )
    table.write(tmp_path / "survey.fits")
    mapping = {
        "my_survey": {
            "detect": ["sobject_id"],
            "id": "sobject_id",
            "ra": "ra_dr2",
            "dec": "dec_dr2",
            "labels": {
                "Teff": {"column": "teff"},
                "FeH": {"column": "fe_h"},
                "MgH": {"column": "mg_fe", "flag": "flag_mg_fe", "plus": "FeH"},
                "CaH": {"column": "ca_fe", "flag": "flag_ca_fe", "plus": "FeH"},
            },
        }
    }
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    catalog = read_label_catalog(tmp_path / "survey.fits", mapping_file=tmp_path / "mapping.json")
    labels = dict(zip(LABELS, catalog.labels[0]))
    assert catalog.mapping == "my_survey" and catalog.star_id[0] == "7"
    assert np.isnan(labels["MgH"]) and labels["CaH"] == pytest.approx(-0.2)
    assert np.isnan(labels["Logg"])


def test_catalog_errors_name_the_file(tmp_path):
    Table({"x": [1.0], "y": [2.0]}).write(tmp_path / "other.fits")
    with pytest.raises(InputFileError, match=r"^other.fits: columns match no known catalog format"):
        read_label_catalog(tmp_path / "other.fits")
    (tmp_path / "bad.json").write_text(json.dumps({"m": {"ra": "x", "dec": "y", "labels": {"Vmag": "x"}}}))
    with pytest.raises(InputFileError, match=r"^bad.json: invalid catalog mapping .*unknown label 'Vmag'"):
        read_label_catalog(tmp_path / "other.fits", mapping_file=tmp_path / "bad.json")


# ---------------------------------------------------------------- matching
def test_match_radius_ambiguity_and_shared_stars(data):
    catalog = read_label_catalog(data["fits"])
    ra = np.array([10.0, 30.0, 40.0, 50.0, 10.0, 10.0 + 2.5 * ARCSEC, np.nan])
    dec = np.array([20.0, -5.0 + 2.0 * ARCSEC, 4.0 * ARCSEC, 10.0 + 0.5 * ARCSEC, 20.0, 20.0, 0.0])
    found = match_positions(ra, dec, catalog, 3.0)
    ids = [catalog.star_id[k] if k >= 0 else None for k in found.index]
    assert ids == ["2M-A", "2M-B", None, None, "2M-A", None, None]
    assert found.status == ["matched", "matched", "no_match", "ambiguous", "matched", "ambiguous", "no_match"]
    assert found.sep_arcsec[1] == pytest.approx(2.0, abs=1e-3)
    assert "2M-D1" in found.detail[3] and "2M-D2" in found.detail[3]
    assert "nearer to another LAMOST target" in found.detail[5]
    wider = match_positions(ra, dec, catalog, 5.0)
    assert catalog.star_id[wider.index[2]] == "2M-C"
    kept = match_positions(ra, dec, catalog, 3.0, keep_ambiguous=True)
    assert catalog.star_id[kept.index[3]] == "2M-D1" and kept.status[3] == "ambiguous"


def test_parse_radius():
    assert parse_radius("3arcsec") == pytest.approx(3.0)
    assert parse_radius("0.05 arcmin") == pytest.approx(3.0)
    assert parse_radius("2") == pytest.approx(2.0)
    with pytest.raises(SpemrError, match="not an angle"):
        parse_radius("3 km")


# ------------------------------------------------------------------ build
def test_build_counts_every_cut(built_all):
    summary, _ = built_all
    assert summary["files"] == {
        "total": 7,
        "matched": 3,
        "unreadable": 1,
        "no_match": 1,
        "ambiguous": 1,
        "no_labels": 1,
        "no_pairs": 0,
    }
    assert summary["spectra"] == {
        "considered": 9,
        "low_snr": 4,
        "too_many_bad_pixels": 1,
        "long_bad_run": 1,
        "unreliable": 0,
        "kept": 3,
    }
    assert summary["stars"] == {
        "matched": 3,
        "removed_by": {"low_snr": 1, "too_many_bad_pixels": 0, "long_bad_run": 0, "unreliable": 0},
        "kept": 2,
    }
    assert {k: v["spectra"] for k, v in summary["regions"].items()} == {"S1": 1, "S2": 2, "S3": 2, "S4": 0}
    assert {k: v["stars"] for k, v in summary["regions"].items()} == {"S1": 1, "S2": 1, "S3": 1, "S4": 0}
    assert summary["masked_labels"]["NH"] == 1 and summary["masked_labels"]["OH"] == 1
    assert summary["masked_labels"]["Teff"] == 0
    assert "2M-D1" in summary["ambiguous"][0]
    assert summary["unreadable"][0].startswith("junk.fits: ")


def test_build_writes_labelled_spectra_by_star(built_all):
    _, refset = built_all
    rows = [(r["star_id"], r["extname_blue"]) for r in refset.rows]
    assert rows == [("2M-A", "COADD_B"), ("2M-B", "B-101"), ("2M-B", "B-102")]
    a, b = (dict(zip(LABELS, refset.labels[i])) for i in (0, 1))
    assert a["CH"] == pytest.approx(-0.1) and np.isnan(a["NH"]) and np.isnan(a["OH"])
    assert b["Teff"] == 3900 and b["MgH"] == pytest.approx(-1.0)
    assert float(refset.rows[0]["rv"]) == pytest.approx(35.0, abs=2.0)
    assert float(refset.rows[1]["rv"]) == pytest.approx(-60.0, abs=2.0)
    assert float(refset.rows[1]["sep_arcsec"]) == pytest.approx(2.0, abs=0.01)
    assert refset.flux.shape == (3, 7200) and np.all(np.isfinite(refset.flux))
    assert 0.9 < np.median(refset.flux) < 1.1  # continuum-normalised
    split = refset.split_by_star(seed=1)
    for part in ("train", "valid", "test"):
        assert (
            len(
                {refset.rows[i]["star_id"] for i in split[part]}
                & {refset.rows[i]["star_id"] for p in ("train", "valid", "test") if p != part for i in split[p]}
            )
            == 0
        )


def test_masked_labels_teach_nothing(built_all):
    """A star with a flagged [N/Fe] still gives the other labels; the loss ignores NH."""
    _, refset = built_all
    target = torch.as_tensor(refset.labels[:1].astype(np.float32))
    mean = torch.zeros_like(target, requires_grad=True)
    gaussian_nll(mean, torch.ones_like(target), target).backward()
    grad = mean.grad[0]
    assert grad[LABELS.index("NH")] == 0 and grad[LABELS.index("OH")] == 0
    assert grad[LABELS.index("Teff")] != 0 and grad[LABELS.index("CH")] != 0


def test_cli_with_csv_catalog_coadd_only(data, capsys):
    out = data["root"] / "refset-cli"
    code = cli.main(
        [
            "build-refset",
            str(data["folder"]),
            "--labels",
            str(data["csv"]),
            "-o",
            str(out),
            "--match-radius",
            "3arcsec",
            "--min-snr",
            "10",
            "--exposures",
            "coadd",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "7 files, 3 matched" in printed and "3 spectra considered, 1 kept" in printed
    refset = ReferenceSet.open(out)
    assert [r["star_id"] for r in refset.rows] == ["2M-A"]
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["spectra"]["too_many_bad_pixels"] == 1 and summary["spectra"]["low_snr"] == 1


def test_cli_errors_exit_2(data, tmp_path, capsys):
    assert (
        cli.main(["build-refset", str(tmp_path / "nothing"), "--labels", str(data["csv"]), "-o", str(tmp_path / "o")])
        == 2
    )
    assert capsys.readouterr().err.strip() == "nothing: file or folder not found"
    assert (
        cli.main(
            [
                "build-refset",
                str(data["folder"]),
                "--labels",
                str(data["csv"]),
                "-o",
                str(tmp_path / "o"),
                "--match-radius",
                "far",
            ]
        )
        == 2
    )
    assert "match radius 'far'" in capsys.readouterr().err


# ----------------------------------------------------------------- resume
def _coadd_build(data, out, cancel=None):
    return build_reference_set([data["folder"]], data["csv"], out, BuildOptions(min_snr=8.0), cancel=cancel)


def test_interrupted_build_resumes_to_the_same_set(data, tmp_path):
    reference = ReferenceSet.open(_built_once(data, tmp_path / "once"))
    out = tmp_path / "resumed"
    calls = {"n": 0}

    def cancel_after_three_files():
        calls["n"] += 1
        return calls["n"] > 7 + 3  # 7 header checks, then 3 files processed

    with pytest.raises(Cancelled):
        _coadd_build(data, out, cancel_after_three_files)
    assert len((out / LOG_FILE).read_text().splitlines()) == 3
    # Crash between logging a file and appending its spectra: the next run redoes it.
    files = find_input_files([data["folder"]])
    log = BuildLog(out, json.loads((out / "build_params.json").read_text()), _committed(out))
    pending = next(str(p.resolve()) for p in files if str(p.resolve()) not in log.done)
    log.append({"file": pending, "outcome": "matched", "detail": "", "star_id": "x", "spectra": [], "kept": 1})
    summary = _coadd_build(data, out)
    resumed = ReferenceSet.open(out)
    assert resumed.rows == reference.rows
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    np.testing.assert_array_equal(np.asarray(resumed.flux), np.asarray(reference.flux))
    assert summary["files"]["total"] == 7 and summary["spectra"]["kept"] == len(reference)


def test_resume_with_other_settings_is_refused(data, tmp_path):
    out = tmp_path / "changed"
    stop = threading.Event()
    stop.set()  # a GUI worker's Event works as cancel
    with pytest.raises(Cancelled):
        _coadd_build(data, out, cancel=stop)
    with pytest.raises(SpemrError, match="other settings \\(min_snr\\)"):
        build_reference_set([data["folder"]], data["csv"], out, BuildOptions(min_snr=12.0))


def _built_once(data, out):
    _coadd_build(data, out)
    return out


def _committed(out) -> int:
    return json.loads((out / "progress.json").read_text())["n_spectra"]
