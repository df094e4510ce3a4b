"""The catalog pipeline on a local two-worker Dask cluster equals the single-machine run."""

from __future__ import annotations

import math

import pytest

from catalog_testdata import run_cli, tiny_model, write_broken_files, write_synthetic_files
from spemr_engine.batch.catalog import run_catalog
from spemr_engine.batch.catalog_store import read_table
from spemr_engine.batch.distributed import PLUGIN_NAME, connect
from spemr_engine.errors import SpemrError

distributed = pytest.importorskip("distributed")  # the spemr[cluster] extra (in [test])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    write_synthetic_files(folder / "good", 12, seed=11)
    write_broken_files(folder / "broken")
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.slow
def test_two_worker_cluster_equals_single_machine(tmp_path, inputs, model):
    settings = dict(model=model, exposures="all", batch_size=4)
    # Dask workers run one torch thread (threads_per_worker=1), and torch's float results
    # depend on the thread count: the single-machine run uses one thread too.
    run_catalog([inputs], tmp_path / "single.fits", workers=0, threads=1, **settings)
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=40
    )
    try:
        summary = run_catalog([inputs], tmp_path / "dask.fits", cluster=cluster.scheduler_address, **settings)
        with distributed.Client(cluster) as client:
            tasks = client.run(lambda dask_worker: dask_worker.plugins[PLUGIN_NAME].n_tasks)
    finally:
        cluster.close()
    single, spread = read_table(tmp_path / "single.fits"), read_table(tmp_path / "dask.fits")
    assert spread == single
    assert (tmp_path / "dask.fits").read_bytes() == (tmp_path / "single.fits").read_bytes()
    assert summary.n_rows == len(single["source"]) == 12 * 3 + 6 + 2  # zero-S/N: 2 pairs
    assert summary.flag_counts["file_error"] == 6
    teff = [v for v in single["Teff[K]"] if v is not None and not math.isnan(v)]
    assert len(teff) >= 25
    # each worker loaded the model once and labelled several units with it
    assert len(tasks) == 2 and sum(tasks.values()) == 5 and max(tasks.values()) >= 2


def test_cluster_address_errors_are_one_line():
    for address, problem in [("spark://x", "expected dask://HOST:PORT"), ("local:0", "worker count")]:
        with pytest.raises(SpemrError, match=problem):
            connect(address)


@pytest.mark.slow
def test_cli_with_a_local_cluster(tmp_path, inputs, model):
    files = sorted((inputs / "good").glob("*.fits"))[:2]
    result = run_cli(
        "catalog", *files, "-o", tmp_path / "cat.csv", "--model", model, "--cluster", "local:1", "--batch-size", "4"
    )
    assert result.returncode == 0, result.stderr
    assert "2 rows from 2 files" in result.stdout
    assert read_table(tmp_path / "cat.csv")["spectrum"] == ["coadd", "coadd"]
