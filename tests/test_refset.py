"""Reference sets: streaming format, resumable writer, by-star split, published importer."""

from __future__ import annotations

import csv
import json
import os
import pickle
import re

import numpy as np
import pytest

from spemr_engine import cli
from spemr_engine.config import LABELS, default_grid, preprocess_config, published_to_label
from spemr_engine.errors import InputFileError, SpemrError
from spemr_engine.training.refset import (
    FLUX_FILE,
    PROGRESS_FILE,
    ROWS_FILE,
    ReferenceSet,
    ReferenceSetWriter,
    compute_statistics,
    import_published,
    split_by_star,
)

N_PIX = default_grid().n_pixels
N_LAB = len(LABELS)


def _batch(rng, k, first_star=0, repeats=1):
    flux = (1.0 + 0.1 * rng.standard_normal((k, N_PIX))).astype(np.float32)
    labels = rng.standard_normal((k, N_LAB)).astype(np.float32)
    rows = [{"star_id": f"star{(first_star + i) // repeats}", "obsid": str(1000 + first_star + i)} for i in range(k)]
    return flux, labels, rows


def test_round_trip_is_memory_mapped_and_statistics_are_nan_aware(tmp_path):
    rng = np.random.default_rng(0)
    flux, labels, rows = _batch(rng, 30)
    flux[3, 10] = np.nan
    flux[4, 11] = 9.0  # clipped before statistics
    labels[:5, 4] = np.nan  # missing [N/H]
    with ReferenceSetWriter(tmp_path / "rs", synthetic=True, source="test") as writer:
        writer.append(flux[:12], labels[:12], rows[:12])
        writer.append(flux[12:], labels[12:], rows[12:])
    refset = ReferenceSet.open(tmp_path / "rs")
    assert isinstance(refset.flux, np.memmap) and refset.flux.shape == (30, N_PIX)
    assert len(refset) == 30 and refset.synthetic and refset.source == "test"
    np.testing.assert_array_equal(refset.read_flux([5, 1, 29]), flux[[5, 1, 29]])
    np.testing.assert_array_equal(refset.labels, labels)
    assert [r["obsid"] for r in refset.rows] == [r["obsid"] for r in rows]
    cfg = preprocess_config()
    clipped = np.clip(flux.astype(np.float64), cfg.clip_min, cfg.clip_max)
    np.testing.assert_allclose(refset.flux_mean, np.nanmean(clipped, axis=0), rtol=1e-6)
    np.testing.assert_allclose(refset.flux_std, np.nanstd(clipped, axis=0), rtol=1e-5)
    np.testing.assert_allclose(refset.label_mean, np.nanmean(labels.astype(np.float64), axis=0), rtol=1e-6)
    np.testing.assert_allclose(refset.label_std, np.nanstd(labels.astype(np.float64), axis=0), rtol=1e-5)


def test_streaming_statistics_match_whole_array_for_small_chunks():
    rng = np.random.default_rng(1)
    flux = (5000 + rng.standard_normal((101, 7))).astype(np.float32)  # large offset: precision check
    flux[rng.random(flux.shape) < 0.1] = np.nan
    stats = compute_statistics(flux, flux, chunk_rows=8, clip=(-np.inf, np.inf))
    np.testing.assert_allclose(stats["flux_mean"], np.nanmean(flux.astype(np.float64), axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["flux_std"], np.nanstd(flux.astype(np.float64), axis=0), rtol=1e-9)


def test_writer_refuses_to_resume_a_set_of_other_labels_and_says_so(tmp_path):
    rng = np.random.default_rng(3)
    flux, labels, rows = _batch(rng, 4)
    ReferenceSetWriter(tmp_path / "rs").append(flux, labels, rows)
    with pytest.raises(SpemrError, match=r"rs: unfinished reference set was started with other settings \(labels\)"):
        ReferenceSetWriter(tmp_path / "rs", labels=LABELS[:3])


def test_writer_resumes_after_a_crash_mid_append(tmp_path):
    rng = np.random.default_rng(2)
    flux, labels, rows = _batch(rng, 20)
    path = tmp_path / "rs"
    writer = ReferenceSetWriter(path)
    writer.append(flux[:8], labels[:8], rows[:8])
    # A crash after writing data bytes but before committing the count leaves junk past
    # the committed sizes in every file.
    with open(path / FLUX_FILE, "ab") as handle:
        handle.write(b"\x00" * (4 * N_PIX * 3 + 5))
    with open(path / ROWS_FILE, "a") as handle:
        handle.write("junk,row\n")
    del writer
    with pytest.raises(InputFileError, match="unfinished"):
        ReferenceSet.open(path)
    resumed = ReferenceSetWriter(path)
    assert len(resumed) == 8
    resumed.append(flux[8:], labels[8:], rows[8:])
    refset = resumed.close()
    assert not (path / PROGRESS_FILE).exists()
    np.testing.assert_array_equal(np.asarray(refset.flux), flux)
    assert [r["star_id"] for r in refset.rows] == [r["star_id"] for r in rows]
    with pytest.raises(InputFileError, match="already finished"):
        ReferenceSetWriter(path)


def test_writer_rejects_wrong_shapes_and_missing_star_id(tmp_path):
    writer = ReferenceSetWriter(tmp_path / "rs")
    with pytest.raises(ValueError, match="flux has shape"):
        writer.append(np.zeros((2, 10)), np.zeros((2, N_LAB)), [{"star_id": "a"}] * 2)
    with pytest.raises(ValueError, match="star_id"):
        writer.append(np.zeros((1, N_PIX)), np.zeros((1, N_LAB)), [{"obsid": "1"}])


def test_split_by_star_never_leaks_a_star_and_respects_fractions():
    rng = np.random.default_rng(3)
    star_id = np.array([f"s{i}" for i in rng.integers(0, 400, size=2000)])
    split = split_by_star(star_id, (0.7, 0.1, 0.2), seed=5)
    parts = [set(star_id[split[name]]) for name in ("train", "valid", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(np.concatenate([split.train, split.valid, split.test]).tolist()) == list(range(2000))
    np.testing.assert_allclose(
        [len(split.train) / 2000, len(split.valid) / 2000, len(split.test) / 2000], [0.7, 0.1, 0.2], atol=0.04
    )
    again = split_by_star(star_id, (0.7, 0.1, 0.2), seed=5)
    np.testing.assert_array_equal(again.test, split.test)
    assert not np.array_equal(split_by_star(star_id, seed=6).test, split.test)


def test_iter_batches_covers_indices_once_in_shuffled_order(tmp_path):
    rng = np.random.default_rng(4)
    flux, labels, rows = _batch(rng, 25)
    with ReferenceSetWriter(tmp_path / "rs") as writer:
        writer.append(flux, labels, rows)
    refset = ReferenceSet.open(tmp_path / "rs")
    seen = []
    for index, batch_flux, batch_labels in refset.iter_batches(
        np.arange(3, 25), 8, shuffle=True, rng=np.random.default_rng(0)
    ):
        np.testing.assert_array_equal(batch_flux, flux[index])
        np.testing.assert_array_equal(batch_labels, labels[index])
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(3, 25)) and seen != sorted(seen)


# ------------------------------------------------------------ published importer
def _published_layout(folder, rng, sizes=(12, 3, 5)):
    folder.mkdir()
    published_names = list(published_to_label())
    shuffled = [published_names[i] for i in rng.permutation(len(published_names))]
    truth = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        flux = rng.random((n, N_PIX)).astype(np.float32)
        with open(folder / f"{split}_flux.pkl", "wb") as handle:
            pickle.dump(flux, handle)
        values = rng.standard_normal((n, len(shuffled)))
        with open(folder / f"{split}_label.csv", "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["APOGEE_ID"] + shuffled)
            for i in range(n):
                out.writerow([f"2M{split}{i // 2}"] + [f"{v:.6f}" for v in values[i]])
        by_name = {published_to_label()[name]: values[:, j] for j, name in enumerate(shuffled)}
        truth[split] = (flux, np.stack([by_name[name] for name in LABELS], axis=1))
    config = {
        "label_list": shuffled,
        "label_mean": np.arange(16.0),
        "label_std": np.arange(1.0, 17.0),
        "flux_mean": np.full(N_PIX, 0.9),
        "flux_std": np.full(N_PIX, 0.1),
    }
    with open(folder / "label_config.pkl", "wb") as handle:
        pickle.dump(config, handle)
    return truth, shuffled


def test_importer_maps_labels_by_name_and_keeps_the_published_split(tmp_path):
    rng = np.random.default_rng(5)
    truth, shuffled = _published_layout(tmp_path / "pub", rng)
    refset = import_published(tmp_path / "pub", tmp_path / "rs")
    split = refset.split_by_star()
    for name in ("train", "valid", "test"):
        flux, labels = truth[name]
        np.testing.assert_array_equal(refset.read_flux(split[name]), flux)
        np.testing.assert_allclose(refset.labels[split[name]], labels, atol=1e-6)
    # Published statistics are kept, re-ordered by name into our label order.
    expected_mean = {published_to_label()[n]: float(i) for i, n in enumerate(shuffled)}
    np.testing.assert_array_equal(refset.label_mean, [expected_mean[n] for n in LABELS])
    np.testing.assert_array_equal(refset.flux_mean, np.full(N_PIX, 0.9))
    assert refset.star_id[0] == "2Mtrain0"


def test_importer_refuses_a_malicious_pickle(tmp_path):
    rng = np.random.default_rng(6)
    _published_layout(tmp_path / "pub", rng)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "pub" / "valid_flux.pkl", "wb") as handle:
        pickle.dump(Exploit(), handle)
    with pytest.raises(InputFileError, match="valid_flux.pkl: not a safe pickle"):
        import_published(tmp_path / "pub", tmp_path / "rs")
    assert not marker.exists()


def test_import_refset_cli_reports_errors_as_one_line(tmp_path, capsys):
    rng = np.random.default_rng(7)
    _published_layout(tmp_path / "pub", rng, sizes=(4, 2, 2))
    assert cli.main(["import-refset", str(tmp_path / "pub"), "-o", str(tmp_path / "rs")]) == 0
    manifest = json.loads((tmp_path / "rs" / "manifest.json").read_text())
    assert manifest["n_spectra"] == 8 and manifest["synthetic"] is False
    with open(tmp_path / "pub" / "test_flux.pkl", "wb") as handle:
        pickle.dump(np.zeros((2, 5)), handle)
    assert cli.main(["import-refset", str(tmp_path / "pub"), "-o", str(tmp_path / "rs2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("test_flux.pkl:") and "expected an (n, 7200) array" in err


def test_importer_streams_label_rows_beyond_the_spectra(tmp_path):
    """A label CSV with millions of rows more than its flux pickle was held whole (a 50 MB
    one took 2.1 GB) before the count mismatch was reported: now only counted."""
    import tracemalloc

    rng = np.random.default_rng(8)
    _, shuffled = _published_layout(tmp_path / "pub", rng, sizes=(4, 2, 2))
    label_path = tmp_path / "pub" / "train_label.csv"
    header = label_path.read_text().splitlines()[0]
    label_path.write_text(header + "\n" + ("x" + "," * len(shuffled) + "\n") * 200_000)
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError, match="200000 label rows but 4 spectra in train_flux.pkl"):
            import_published(tmp_path / "pub", tmp_path / "rs")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak


def _nan_in_one(flux):
    flux[1, 17] = np.nan
    return flux


def _inf_in_all(flux):
    flux[:, 0] = np.inf
    return flux


@pytest.mark.parametrize(
    "poison, problem",
    [
        (_nan_in_one, "1 of 4 spectra hold NaN or inf flux (first: row 1)"),
        (_inf_in_all, "4 of 4 spectra hold NaN or inf flux (first: row 0)"),
        (lambda flux: flux > 0.5, "flux must be real numbers, found dtype bool"),
    ],
)
def test_importer_refuses_non_finite_or_non_numeric_flux_before_writing(tmp_path, poison, problem):
    """A NaN spectrum in a published pickle would make every training loss NaN; boolean
    flux means nothing. Refused whole, with the count and first row, nothing written."""
    _published_layout(tmp_path / "pub", np.random.default_rng(9), sizes=(4, 2, 2))
    path = tmp_path / "pub" / "train_flux.pkl"
    with open(path, "rb") as handle:
        flux = pickle.load(handle)
    with open(path, "wb") as handle:
        pickle.dump(poison(flux), handle)
    with pytest.raises(InputFileError, match=re.escape(f"train_flux.pkl: {problem}")):
        import_published(tmp_path / "pub", tmp_path / "rs")
    assert not (tmp_path / "rs" / "manifest.json").exists()
