"""High-level API (analyse_file, rows, columns, model paths) and `spemr predict`."""

import csv
import json

import numpy as np
import pytest

from mrs_testfiles import write_star_file
from spemr_engine import api, config
from spemr_engine.batch import catalog_rows
from spemr_engine.batch.catalog_rows import FIT_COLUMNS
from spemr_engine.reading.lamost import MRSFile, read_mrs
from spemr_engine.preprocessing.pipeline import NoSpectra, Preparation, select_pairs
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.cli import main
from spemr_engine.errors import ModelBundleError, SpemrError
from spemr_engine.model.inference import SpemrPredictor

PUBLISHED_START = [
    "obsid",
    "filename",
    "ra",
    "dec",
    "extname_blue",
    "extname_red",
    "snr_blue",
    "snr_red",
    "Teff[K]",
    "Teff[K]_err",
    "Logg",
    "Logg_err",
    "FeH",
    "FeH_err",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_bundle(create_random_bundle(tmp_path_factory.mktemp("api") / "model", "tiny", seed=11))


@pytest.fixture(scope="module")
def star_file(tmp_path_factory):
    """Coadd and exposure 101 are fine; exposure 102 has S/N 4 in the blue arm."""
    path = tmp_path_factory.mktemp("files") / "med-58000-TEST_sp01-001.fits"
    return write_star_file(path, ra=10.5, dec=-2.25, obsid=424242, rv_kms=-35.0, snr={"B-102": 4.0}, seed=2)


@pytest.fixture(scope="module")
def analysis(star_file, model):
    return api.analyse_file(star_file, model=model, exposure="all", device="cpu")


def test_model_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEMR_MODEL", str(tmp_path / "elsewhere"))
    assert api.default_model_path() == tmp_path / "elsewhere"
    with pytest.raises(ModelBundleError, match="no default model installed.*SPEMR_MODEL"):
        api.load_model()
    monkeypatch.delenv("SPEMR_MODEL")
    assert api.default_model_path() == config.assets_dir() / "models" / "default"


def test_catalog_columns_start_with_the_published_ones():
    columns = api.catalog_columns()
    assert columns[: len(PUBLISHED_START)] == PUBLISHED_START
    assert columns[8:40:2] == config.catalog_label_names()
    for extra in ("rv", "flags", "Teff[K]_submodel", "model_trained_on"):
        assert extra in columns


def test_analyse_file_labels_usable_spectra_and_keeps_the_rest(analysis, model):
    assert [p.label for p in analysis.pairs] == ["coadd", "101", "102"]
    np.testing.assert_array_equal(analysis.usable, [True, True, False])
    prediction = analysis.prediction
    assert len(prediction) == 3
    assert np.all(np.isfinite(prediction.mean[:2])) and np.all(np.isnan(prediction.mean[2]))
    np.testing.assert_allclose(analysis.spectra.rv[:2], -35.0, atol=3.0)  # measured by CCF
    direct = SpemrPredictor(model, device="cpu").predict(analysis.spectra.flux[:2])
    np.testing.assert_allclose(prediction.mean[:2], direct.mean, rtol=1e-6)


def test_rows_follow_the_catalog_columns(analysis):
    rows = analysis.rows()
    assert len(rows) == 3
    assert set(rows[0]) == set(api.catalog_columns())
    good, bad = rows[1], rows[2]
    assert good["obsid"] == 424242 and good["extname_blue"] == "B-101" and good["usable"]
    assert good["Teff[K]"] > 0 and good["Teff[K]_err"] > 0
    assert good["Teff[K]_submodel"] in {"S1", "S2", "S3", "S4"}
    assert bad["Teff[K]"] is None and bad["Teff[K]_submodel"] == "" and "low_snr" in bad["flags"]
    assert "S/N" in bad["error"] and bad["model_trained_on"] == "random"


def test_given_rv_and_rv_catalog(star_file, model, tmp_path):
    given = api.analyse_file(star_file, model=model, rv=-34.0, device="cpu")
    assert given.spectra.rv_source == ["given"] and given.spectra.rv[0] == -34.0
    catalog = tmp_path / "rv.csv"
    catalog.write_text("obsid,rv_ku0\n424242,-36.5\n")
    from_catalog = api.analyse_file(star_file, model=model, rv_catalog=catalog, device="cpu")
    assert from_catalog.spectra.rv_source == ["given"] and from_catalog.spectra.rv[0] == -36.5


def test_a_file_held_or_prepared_is_labelled_as_when_read_from_its_path(star_file, model, analysis):
    """The app passes the MRSFile it holds (or a pair it already preprocessed) instead of
    the path: nothing is read twice, and the rows are those of the path."""
    held = api.analyse_file(read_mrs(star_file), model=model, exposure="all", device="cpu")
    assert held.rows() == analysis.rows()
    prepared = api.preprocess_file(star_file, model=model, exposure="all")
    assert api.analyse_file(prepared, device="cpu").rows() == analysis.rows()


def test_catalog_workers_prepare_what_analyse_file_labels(star_file, model, analysis):
    """One file-to-spectra pipeline: the catalog's worker gives the model exactly the
    flux analyse_file gives it, with the same rows before labelling."""
    options = catalog_rows.PrepareOptions(exposures="all", rv_catalog=None, preparation=Preparation.for_model(model))
    prepared = catalog_rows.prepare_file(str(star_file), options)
    assert prepared.infer_rows == [0, 1]
    np.testing.assert_array_equal(prepared.flux, analysis.spectra.flux[:2])
    before_labels = [key for key in prepared.rows[0] if key not in (*FIT_COLUMNS, "flags")]
    assert len(before_labels) == 18
    for row, full in zip(prepared.rows, analysis.rows()):
        assert {key: row[key] for key in before_labels} == {key: full[key] for key in before_labels}


def test_a_model_whose_regions_keep_their_own_statistics_labels_the_pipelines_flux(star_file, tmp_path):
    """Bundle format 2 (a region with its own flux statistics): the pipeline hands the
    predictor continuum-normalised flux, never standardised, so each input group
    standardises it with its own statistics, whichever way the file came (path, held,
    prepared); the RV template is the base's mean star, as for a version 1 bundle."""
    from spemr_engine.model.bundle import Statistics

    base = load_bundle(create_random_bundle(tmp_path / "base", "tiny", seed=4)).statistics
    own = Statistics(np.full(7200, 0.95), np.full(7200, 0.2), base.label_mean, 1.5 * base.label_std)
    model = load_bundle(create_random_bundle(tmp_path / "m", "tiny", seed=4, region_statistics={"S3": own}))
    assert SpemrPredictor(model, device="cpu").groups[-1].submodels == (model.submodels.index("S3"),)
    analysis = api.analyse_file(star_file, model=model, exposure="all", device="cpu")
    assert api.analyse_file(read_mrs(star_file), model=model, exposure="all", device="cpu").rows() == analysis.rows()
    prepared = api.preprocess_file(star_file, model=model, exposure="all")
    assert api.analyse_file(prepared, device="cpu").rows() == analysis.rows()
    direct = SpemrPredictor(model, device="cpu").predict(analysis.spectra.flux[:2])
    np.testing.assert_allclose(analysis.prediction.mean[:2], direct.mean, rtol=1e-6)
    template = Preparation.for_model(model).rv_template
    if model.statistics.source == "placeholder":
        assert template is None  # the shipped line template
    else:
        np.testing.assert_array_equal(template[1], model.flux_mean)


def test_a_selection_without_a_complete_pair_is_one_line_and_a_no_spectra_row(tmp_path):
    lonely = MRSFile(path=tmp_path / "med-1.fits", meta={}, pairs=[], warnings=["B-101 has no red arm"])
    with pytest.raises(NoSpectra, match=r"^med-1\.fits: B-101 has no red arm$"):
        select_pairs(lonely, "all")


def test_real_file_that_fails_selection_gets_no_prediction(shared_mrs_dir, model):
    analysis = api.analyse_file(shared_mrs_dir / "med-58268-HIP95119KP01_sp12-076.fits.gz", model=model)
    assert analysis.prediction is None
    row = analysis.rows()[0]
    assert row["Teff[K]"] is None and "low_snr" in row["flags"] and row["snr_blue"] == 0.0


def _read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_cli_predict_reports_bad_files_and_keeps_going(star_file, model, tmp_path, capsys):
    broken = tmp_path / "med-broken.fits"
    broken.write_text("not a fits file")
    out = tmp_path / "labels.csv"
    code = main(
        [
            "predict",
            str(broken),
            str(star_file),
            "--model",
            str(model.path),
            "--exposure",
            "all",
            "--device",
            "cpu",
            "-o",
            str(out),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("med-broken.fits: ") for line in err)
    assert any("random weights" in line for line in err)
    header, rows = _read_csv(out)
    assert header == api.catalog_columns(model.labels)
    assert [r["flags"] for r in rows][0] == "file_error" and rows[0]["Teff[K]"] == ""
    assert [r["extname_blue"] for r in rows[1:]] == ["COADD_B", "B-101", "B-102"]
    assert float(rows[1]["Teff[K]"]) > 0 and rows[3]["Teff[K]"] == ""
    assert {r["model_trained_on"] for r in rows} == {"random"}


def test_cli_predict_warns_about_synthetic_models(star_file, model, tmp_path, capsys):
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    for item in model.path.iterdir():
        (synthetic / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((synthetic / "manifest.json").read_text())
    manifest["provenance"]["trained_on"] = "synthetic"
    (synthetic / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "labels.csv"
    assert main(["predict", str(star_file), "--model", str(synthetic), "--rv", "-35", "-o", str(out)]) == 0
    assert "synthetic spectra" in capsys.readouterr().err
    _, rows = _read_csv(out)
    assert len(rows) == 1 and rows[0]["model_trained_on"] == "synthetic" and rows[0]["rv_source"] == "given"


def test_cli_predict_bad_model_is_one_line(star_file, tmp_path, capsys):
    assert main(["predict", str(star_file), "--model", str(tmp_path / "none"), "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such model folder" in err[0]
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_cli_predict_refuses_a_non_finite_rv(star_file, model, tmp_path, capsys, value):
    """--rv nan/inf used to be ignored silently (the RV was measured instead)."""
    out = tmp_path / "o.csv"
    assert main(["predict", str(star_file), "--model", str(model.path), f"--rv={value}", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("--rv ") and "not a finite radial velocity" in err[0]
    assert not out.exists()


def test_api_refuses_an_infinite_rv(star_file, model):
    with pytest.raises(SpemrError, match="not a velocity"):
        api.analyse_file(star_file, model=model, rv=float("inf"))


def test_predict_catalog_and_app_export_write_booleans_the_same_way(star_file, model, tmp_path):
    """One CSV convention: `usable` is true/false in `spemr predict`, `spemr catalog` and
    the app's batch export (predict wrote true/false, the other two True/False)."""
    from spemr_engine.batch.catalog import run_catalog
    from spemr_engine.batch.catalog_store import read_table
    from spemr_gui.catalog_table import write_csv

    def usable_cells(path):
        with open(path, newline="") as handle:
            return sorted({row["usable"] for row in csv.DictReader(handle)})

    predicted = tmp_path / "predict.csv"
    assert (
        main(
            [
                "predict",
                str(star_file),
                "--model",
                str(model.path),
                "--exposure",
                "all",
                "--device",
                "cpu",
                "-o",
                str(predicted),
            ]
        )
        == 0
    )
    catalog = tmp_path / "catalog.csv"
    run_catalog([star_file], catalog, model=model, workers=0, exposures="all", batch_size=4)
    exported = write_csv(
        tmp_path / "export.csv",
        api.catalog_columns(model.labels),
        api.analyse_file(star_file, model=model, exposure="all").rows(),
    )
    cells = {path.stem: usable_cells(path) for path in (predicted, catalog, exported)}
    assert cells == {"predict": ["false", "true"], "catalog": ["false", "true"], "export": ["false", "true"]}
    assert sorted(set(read_table(catalog)["usable"])) == [False, True]  # and they read back as booleans
