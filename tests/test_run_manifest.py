"""run_manifest.RunManifest: the one way resumable runs (catalog, cross-match, training,
reference sets) record and compare their settings."""

import json

import pytest

from spemr_engine.errors import SpemrError
from spemr_engine.run_manifest import RunManifest, fingerprint

SETTINGS = {"exposures": "coadd", "batch_size": 256, "model": {"path": "/m", "weights": [1, 2]}, "split": (7, 1, 2)}


def test_a_written_record_reads_back_as_the_same_settings(tmp_path):
    manifest = RunManifest(tmp_path / "run.json", SETTINGS)
    assert manifest.changes(manifest.read()) is None  # nothing started yet
    manifest.write(state="running", n_spectra=3)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["state"] == "running" and record["split"] == [7, 1, 2]  # beside the state
    assert RunManifest(tmp_path / "run.json", SETTINGS).changes(record) == []
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left (io_utils)


def test_changes_name_each_setting_that_differs_nested_ones_by_path(tmp_path):
    manifest = RunManifest(tmp_path / "run.json", SETTINGS)
    manifest.write()
    other = dict(SETTINGS, batch_size=128, model={"path": "/m", "weights": [1, 3]})
    changed = RunManifest(tmp_path / "run.json", other)
    assert changed.changes(changed.read()) == ["batch_size", "model.weights"]
    with pytest.raises(
        SpemrError, match=r"^out: the run was started with other settings \(batch_size, model\.weights\); start over$"
    ):
        changed.require_same("out: the run", "start over")


def test_a_recorded_setting_no_longer_used_does_not_block_a_resume(tmp_path):
    RunManifest(tmp_path / "run.json", dict(SETTINGS, retired_option=1)).write()
    manifest = RunManifest(tmp_path / "run.json", SETTINGS)
    manifest.require_same("out", "start over")  # passes


def test_settings_in_a_section_and_records_of_earlier_catalogs(tmp_path):
    manifest = RunManifest(tmp_path / "run.json", SETTINGS, section="settings")
    record = manifest.record(state="running", model="/elsewhere")  # top-level keys of its own
    assert record["settings"]["model"] == SETTINGS["model"] and record["model"] == "/elsewhere"
    assert record["fingerprint"] == fingerprint(SETTINGS) and manifest.changes(record) == []
    earlier = {"state": "running", "fingerprint": fingerprint(SETTINGS)}  # no settings kept
    assert manifest.changes(earlier) == []
    assert manifest.changes({"fingerprint": "0" * 64}) == ["settings not recorded by the earlier run"]


def test_an_unreadable_record_is_one_line(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(SpemrError, match=r"run\.json: unreadable run record") as caught:
        RunManifest(tmp_path / "run.json", SETTINGS).read()
    assert "\n" not in str(caught.value)
