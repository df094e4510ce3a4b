"""Best-fit template library: nearest entries in label space and their spectra."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from spemr_engine.config import LABELS
from spemr_engine.errors import InputFileError
from spemr_engine.preprocessing.preprocess import normalise_grid
from spemr_engine.training.refset import ReferenceSet, ReferenceSetWriter
from spemr_engine.synth.generate import GENERATOR_VERSION, make_stars, noiseless_grid
from spemr_engine.synth.refset_builder import build_reference_set
from spemr_engine.model.templates import TemplateLibrary


@pytest.fixture(scope="module")
def stars():
    return make_stars(40, seed=12)


@pytest.fixture()
def library(stars):
    return TemplateLibrary(stars.labels, seeds=stars.seeds, generator_version=GENERATOR_VERSION)


def test_nearest_finds_the_entry_itself_first(library, stars):
    for i in (0, 7, 39):
        assert library.nearest(stars.labels[i], k=3)[0] == i


def test_nearest_ranks_by_standardised_distance(library, stars):
    query = stars.labels[5].copy()
    query[0] += 1.0  # a kelvin off: still entry 5
    hits = library.nearest(query, k=40)
    scale = library.scale
    distance = np.mean(((stars.labels - query) / scale) ** 2, axis=1)
    assert hits[0] == 5
    assert np.all(np.diff(distance[hits]) >= -1e-9)
    assert sorted(hits.tolist()) == list(range(40))


def test_nearest_ignores_missing_labels_and_takes_many_queries(library, stars):
    query = stars.labels[[3, 9]].copy()
    query[:, 3:] = np.nan  # only Teff, logg, [Fe/H] known
    hits = library.nearest(query, k=2)
    assert hits.shape == (2, 2) and hits[0, 0] == 3 and hits[1, 0] == 9
    with pytest.raises(ValueError):
        library.nearest(np.zeros(3))


@pytest.mark.parametrize("version", [1, GENERATOR_VERSION])
def test_seed_templates_rebuild_the_generator_spectrum(stars, version):
    """In the world of the generator version the library records (older ones included)."""
    library = TemplateLibrary(stars.labels, seeds=stars.seeds, generator_version=version)
    wave, flux = library.spectrum(4)
    _, expected = noiseless_grid(stars.labels[4:5], stars.seeds[4:5], version=version)
    expected, _bad = normalise_grid(expected)  # the pipeline's pseudo-continuum
    assert wave.shape == flux.shape == (7200,)
    assert np.allclose(flux, expected[0], atol=1e-5)
    assert np.array_equal(library.labels(4), stars.labels[4].astype(np.float32).astype(np.float64))
    with pytest.raises(IndexError):
        library.spectrum(40)


def test_save_and_load_both_kinds(library, stars, tmp_path):
    library.save(tmp_path / "bundle")
    again = TemplateLibrary.load(tmp_path / "bundle")
    assert again.kind == "seeds" and len(again) == 40 and again.rebuilds_exactly
    assert np.array_equal(again.nearest(stars.labels[11], k=4), library.nearest(stars.labels[11], k=4))
    assert np.allclose(again.spectrum(2)[1], library.spectrum(2)[1])

    flux = np.linspace(0.5, 1.2, 3 * 7200).reshape(3, 7200)
    stored = TemplateLibrary(stars.labels[:3], flux=flux, star_id=["a", "b", "c"])
    stored.save(tmp_path / "real.npz")
    loaded = TemplateLibrary.load(tmp_path / "real.npz")
    assert loaded.kind == "flux" and list(loaded.star_id) == ["a", "b", "c"]
    assert np.allclose(loaded.spectrum(1)[1], flux[1], atol=2e-3)  # float16 storage


def test_load_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(InputFileError, match="templates.npz"):
        TemplateLibrary.load(tmp_path)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(InputFileError, match="not a spemr template library"):
        TemplateLibrary.load(tmp_path / "other.npz")
    with pytest.raises(ValueError):
        TemplateLibrary(np.zeros((2, 16)))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_refuses_a_fifo_or_folder_instead_of_blocking(tmp_path):
    """A FIFO named templates.npz blocked the viewer forever (issue 11, hostile bundles)."""
    os.mkfifo(tmp_path / "templates.npz")
    outcome: list = []

    def load():
        try:
            TemplateLibrary.load(tmp_path)
        except InputFileError as error:
            outcome.append(str(error))

    worker = threading.Thread(target=load, daemon=True)  # a blocked open cannot be interrupted
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "TemplateLibrary.load blocked on a FIFO"
    assert outcome and "not a regular file" in outcome[0]
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "templates.npz").mkdir()
    with pytest.raises(InputFileError, match="is a folder"):
        TemplateLibrary.load(tmp_path / "dir")


def test_library_from_synthetic_refset_uses_seeds_and_matches_its_spectra(tmp_path):
    refset = build_reference_set(tmp_path / "ref", 8, seed=3, max_exposures=1)
    library = TemplateLibrary.from_refset(refset)
    assert library.kind == "seeds"
    assert len(library) == len({r["star_id"] for r in refset.rows})  # one per star
    first = refset.rows.index(next(r for r in refset.rows if r["star_id"] == library.star_id[0]))
    template = library.spectrum(library.nearest(refset.labels[first], k=1)[0])[1]
    observed = refset.read_flux([first])[0]
    assert np.corrcoef(template, observed)[0, 1] > 0.85
    for part in (slice(0, 3600), slice(3600, 7200)):  # same continuum level as the data
        assert abs(np.mean(observed[part] - template[part])) < 0.01


def test_library_from_real_refset_stores_fluxes(tmp_path):
    labels = np.tile(np.linspace(-1, 1, 4)[:, None], (1, len(LABELS)))
    flux = np.random.default_rng(0).uniform(0.5, 1.1, (4, 7200))
    with ReferenceSetWriter(tmp_path / "real") as writer:
        writer.append(flux, labels, [{"star_id": f"s{i}"} for i in range(4)])
    library = TemplateLibrary.from_refset(ReferenceSet.open(tmp_path / "real"), max_entries=3)
    assert library.kind == "flux" and len(library) == 3
    i = library.nearest(library.labels(1), k=1)[0]
    assert np.allclose(library.spectrum(i)[1], flux[int(library.star_id[i][1:])], atol=2e-3)


def test_build_templates_command_uses_the_bundles_training_split(tmp_path, capsys):
    import json

    from spemr_engine import cli

    refset = build_reference_set(tmp_path / "ref", 12, seed=4, max_exposures=1)
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(
        json.dumps({"provenance": {"split": {"by": "star", "seed": 7, "fractions": [0.5, 0.25, 0.25]}}})
    )
    assert cli.main(["build-templates", str(tmp_path / "ref"), "-o", str(bundle)]) == 0
    library = TemplateLibrary.load(bundle)
    train = refset.split_by_star((0.5, 0.25, 0.25), seed=7).train
    assert set(library.star_id) == {refset.rows[i]["star_id"] for i in train}
    assert "templates (seeds)" in capsys.readouterr().out
    assert cli.main(["build-templates", str(tmp_path / "ref"), "-o", str(tmp_path / "nope")]) == 2


def test_a_library_made_in_another_world_does_not_claim_to_rebuild_exactly(stars, tmp_path):
    """World 2 is the emulator too: a library recorded with another emulator's world id
    (e.g. before a retraining) says so; one without a recorded id keeps the old behaviour."""
    from spemr_engine.synth.generate import world_id

    same = TemplateLibrary(stars.labels, seeds=stars.seeds, generator_version=2, world_id=world_id(2))
    other = TemplateLibrary(stars.labels, seeds=stars.seeds, generator_version=2, world_id="v2:0000000000000000")
    unknown = TemplateLibrary(stars.labels, seeds=stars.seeds, generator_version=2)
    assert same.rebuilds_exactly and unknown.rebuilds_exactly and not other.rebuilds_exactly
    back = TemplateLibrary.load(other.save(tmp_path / "lib"))
    assert back.world_id == "v2:0000000000000000" and not back.rebuilds_exactly
