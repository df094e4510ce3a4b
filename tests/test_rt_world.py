"""Radiative-transfer grid storage, the emulator and the version-2 synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spemr_engine.config import default_grid
from spemr_engine.reading.lamost import air_to_vacuum
from spemr_engine.synth import rt_world
from spemr_engine.synth import spectrum as sp
from spemr_engine.synth.generate import GENERATOR_VERSION, make_stars, noiseless_grid
from spemr_engine.synth.radiative import emulator as emu
from spemr_engine.synth.radiative.grid import (
    C_KMS,
    RtSpectra,
    from_turbospectrum,
    load_chunks,
    load_turbospectrum_grid,
    rt_grid,
    save_chunk,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_GRID = REPO.parent / "shared" / "data" / "turbospectrum_grid" / "grid.npz"


def _ts_like(line_air: float, depth: float = 0.5, sigma_a: float = 0.03):
    """A Turbospectrum-like output: both windows at 0.02 A in air, one Gaussian line."""
    wave = np.concatenate([np.arange(4935.0, 5365.0, 0.02), np.arange(6295.0, 6740.0, 0.02)])
    return wave, 1 - depth * np.exp(-0.5 * ((wave - line_air) / sigma_a) ** 2)


@settings(max_examples=15, deadline=None)
@given(st.floats(4960.0, 5340.0))
def test_a_line_lands_at_its_vacuum_wavelength_with_the_pre_broadening_width(line_air):
    grid = rt_grid()
    wave, norm = _ts_like(line_air, sigma_a=0.005)
    flux = from_turbospectrum(wave, norm)
    blue = grid.arm_slices()["blue"]
    rt_wave = grid.wave[blue]
    absorbed = 1 - flux[blue]
    centre = np.sum(rt_wave * absorbed) / absorbed.sum()
    assert centre == pytest.approx(air_to_vacuum(np.array([line_air]))[0], abs=0.01)
    sigma_kms = np.sqrt(np.sum(absorbed * (rt_wave - centre) ** 2) / absorbed.sum()) / centre * C_KMS
    intrinsic = 0.005 / centre * C_KMS
    assert sigma_kms == pytest.approx(np.hypot(grid.pre_sigma_kms, intrinsic), rel=0.05)


def test_a_spectrum_that_misses_an_arm_is_refused():
    wave, norm = _ts_like(5100.0)
    blue_only = wave < 5400
    with pytest.raises(ValueError, match="red arm"):
        from_turbospectrum(wave[blue_only], norm[blue_only])


def _random_spectra(n: int, seed: int = 0) -> RtSpectra:
    rng = np.random.default_rng(seed)
    stars = make_stars(n, seed)
    flux = rng.uniform(0.05, 1.0, (n, rt_grid().n_pixels)).astype(np.float32)
    return RtSpectra(
        flux,
        stars.labels,
        rng.uniform(0.8, 2, n),
        rng.uniform(1, 5, n),
        rng.uniform(0, 5, n),
        rng.normal(7500, 200, n),
        np.array([f"s{i}" for i in range(n)]),
    )


def test_chunks_round_trip_within_the_quantisation_step(tmp_path):
    spectra = _random_spectra(5)
    save_chunk(tmp_path / "a.npz", spectra)
    back = load_chunks([tmp_path / "a.npz"])
    assert np.max(np.abs(back.flux - spectra.flux)) <= 0.5 / rt_grid().flux_scale + 1e-7
    assert np.array_equal(back.labels, spectra.labels) and list(back.names) == list(spectra.names)
    assert not list(tmp_path.glob("*.part"))


def test_a_chunk_from_another_grid_is_refused(tmp_path):
    save_chunk(tmp_path / "a.npz", _random_spectra(2))
    with np.load(tmp_path / "a.npz") as d:
        arrays = {k: d[k] for k in d.files}
    grid = json.loads(str(arrays["grid"]))
    grid["r_pre"] = 30000.0
    arrays["grid"] = np.array(json.dumps(grid))
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(ValueError, match="another RT grid"):
        load_chunks([tmp_path / "b.npz"])


def _smooth_world(n: int, seed: int) -> RtSpectra:
    """Spectra that depend smoothly on the labels: lines whose depth follows Teff and [Fe/H]."""
    spectra = _random_spectra(n, seed)
    wave = rt_grid().wave
    teff, feh = spectra.labels[:, 0], spectra.labels[:, 2]
    depth = 0.3 + 0.2 * np.tanh((5000 - teff) / 800)[:, None] + 0.1 * feh[:, None]
    lines = np.exp(-0.5 * ((wave[None, :] % 7.0 - 3.5) / 0.3) ** 2)
    spectra.flux = (1 - depth * lines).astype(np.float32)
    return spectra


def test_emulator_learns_a_smooth_world_and_round_trips(tmp_path):
    spectra = _smooth_world(160, seed=3)
    emulator, metrics = emu.train(
        spectra, emu.EmulatorSettings(hidden=(32,), epochs=150, batch_size=32, lr=3e-3, holdout=0.1, threads=1)
    )
    assert metrics["blue"]["median_abs"] < 0.01 and metrics["red"]["median_abs"] < 0.01
    emulator.save(tmp_path / "emu")
    back = emu.load(tmp_path / "emu")
    labels, vmic = spectra.labels[:4], spectra.vmic[:4]
    assert np.array_equal(back.predict(labels, vmic), emulator.predict(labels, vmic))
    held_out = set(back.info["training"]["holdout_names"])
    assert len(held_out) == 16 and held_out.isdisjoint(set(spectra.names) - held_out)


def test_emulator_clips_inputs_outside_its_grid(tmp_path):
    spectra = _smooth_world(40, seed=4)
    emulator, _ = emu.train(spectra, emu.EmulatorSettings(hidden=(8,), epochs=2, threads=1))
    hot = spectra.labels[:1].copy()
    hot[0, 0] = 20000.0
    edge = hot.copy()
    edge[0, 0] = emulator.x_max[0]
    assert emulator.outside_range(hot, spectra.vmic[:1])[0]
    assert np.array_equal(emulator.predict(hot, spectra.vmic[:1]), emulator.predict(edge, spectra.vmic[:1]))


@pytest.mark.parametrize("damage", ["nan_weight", "wrong_shape", "bad_inputs", "not_json"])
def test_a_damaged_emulator_is_refused_in_one_line(tmp_path, damage):
    spectra = _smooth_world(20, seed=5)
    emulator, _ = emu.train(spectra, emu.EmulatorSettings(hidden=(4,), epochs=1, threads=1))
    folder = tmp_path / "emu"
    if damage == "nan_weight":
        emulator.layers[0][0][0, 0] = np.nan
    if damage == "wrong_shape":
        emulator.layers[1] = (emulator.layers[1][0][:10], emulator.layers[1][1][:10])
    emulator.save(folder)
    manifest = json.loads((folder / emu.MANIFEST).read_text())
    if damage == "bad_inputs":
        manifest["inputs"] = list(reversed(manifest["inputs"]))
        (folder / emu.MANIFEST).write_text(json.dumps(manifest))
    if damage == "not_json":
        (folder / emu.MANIFEST).write_text("{")
    with pytest.raises(emu.EmulatorError) as error:
        emu.load(folder)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------- the shipped emulator
def test_shipped_emulator_matches_grid_spectra_it_never_saw():
    """The emulator against Turbospectrum spectra it was not trained on: grid stars held out
    of its training (names in its manifest; from data/rt_grid and, where present, the shared
    seed grid) and the independent test set (data/rt_testset, another seed)."""
    emulator = rt_world.default_emulator()
    held_out = set(emulator.info["training"]["holdout_names"])
    parts = []
    chunks = sorted((REPO / "data" / "rt_grid").glob("*.npz"))
    if chunks:
        grid = load_chunks(chunks)
        parts.append(grid.take(np.array([str(n) in held_out for n in grid.names])))
    test_chunks = sorted((REPO / "data" / "rt_testset").glob("*.npz"))
    if test_chunks:
        parts.append(load_chunks(test_chunks))
    if SHARED_GRID.exists():
        parts.append(load_turbospectrum_grid(SHARED_GRID, names=held_out))
    if not parts:
        pytest.skip("no RT spectra here (data/rt_grid and data/rt_testset empty, ../shared absent)")
    unseen = RtSpectra.concatenate(parts)
    assert len(unseen) >= 10
    metrics = emu.accuracy(emulator, unseen)
    for arm in ("blue", "red"):
        assert metrics[arm]["median_abs"] < 0.006, metrics
        assert metrics[arm]["p99_abs"] < 0.08, metrics


# ------------------------------------------------------------------- the world
def test_the_observation_model_completes_the_line_spread_function():
    """A grid line pre-broadened to R = 20,000 comes out with the star's full LSF and
    macro-turbulence (Gaussians in quadrature), where it belongs."""
    grid = rt_grid()
    centre = 5150.0
    wave = grid.wave
    flux = 1 - 0.4 * np.exp(-0.5 * ((wave - centre) / (centre * grid.pre_sigma_kms / C_KMS)) ** 2)
    labels = make_stars(1, 0).labels
    broadening = sp.Broadening(np.array([1.0]), np.array([3.0]), np.array([0.0]), np.array([7500.0]))
    fine = rt_world.render(labels, broadening, rt_flux=flux[None, :], empirical=False)["blue"][0]
    arm = sp.fine_arm("blue")
    near = np.abs(arm.wave - centre) < 8
    absorbed = 1 - fine[near]
    mean = np.sum(arm.wave[near] * absorbed) / absorbed.sum()
    sigma = np.sqrt(np.sum(absorbed * (arm.wave[near] - mean) ** 2) / absorbed.sum()) / centre * C_KMS
    expected = np.hypot(C_KMS / 7500 / 2.3548, 3.0)
    assert mean == pytest.approx(centre, abs=0.01)
    assert sigma == pytest.approx(expected, rel=0.03)


def test_the_version_2_world_is_deterministic_and_differs_from_version_1():
    stars = make_stars(3, 7)
    wave, a = noiseless_grid(stars.labels, stars.seeds)
    _, b = noiseless_grid(stars.labels, stars.seeds)
    _, old = noiseless_grid(stars.labels, stars.seeds, version=1)
    assert GENERATOR_VERSION == 2 and np.array_equal(a, b)
    assert wave.shape == default_grid().wave.shape and np.all(np.isfinite(a))
    assert np.max(np.abs(a - old)) > 0.05


def test_the_h_alpha_core_is_deeper_than_lte_and_its_strength_varies_by_star():
    stars = make_stars(1, 11)
    broadening = sp.Broadening(np.array([1.2]), np.array([2.0]), np.array([1.0]), np.array([7500.0]))
    grid_wave = default_grid().wave
    core = np.abs(grid_wave - 6564.61) < 0.3
    lte = sp.sample_fine(rt_world.render(stars.labels, broadening, empirical=False), grid_wave)[0]
    full = sp.sample_fine(rt_world.render(stars.labels, broadening), grid_wave)[0]
    broadening.halpha_core = np.array([2.0])
    strong = sp.sample_fine(rt_world.render(stars.labels, broadening), grid_wave)[0]
    assert lte[core].min() > full[core].min() + 0.05 > strong[core].min() + 0.05
    far = np.abs(grid_wave - 6564.61) > 5
    assert np.max(np.abs(lte[far] - full[far])) < 0.02


def test_reference_tool_grids_load_beside_chunks(tmp_path):
    from spemr_engine.synth.radiative.grid import load_any

    wave, norm = _ts_like(5100.0)
    stars = make_stars(2, 1)
    np.savez(
        tmp_path / "grid.npz",
        wave_air=wave,
        norm=np.stack([norm, norm]),
        labels=stars.labels,
        vmic=np.ones(2),
        vmac=np.ones(2),
        vsini=np.zeros(2),
        R=np.full(2, 7500.0),
        names=np.array(["a", "b"]),
    )
    save_chunk(tmp_path / "chunk.npz", _random_spectra(3))
    both = load_any([tmp_path / "chunk.npz", tmp_path / "grid.npz"])
    assert len(both) == 5 and list(both.names[3:]) == ["a", "b"]
    assert np.allclose(both.flux[3], from_turbospectrum(wave, norm), atol=1e-6)
    np.savez(tmp_path / "other.npz", wave_air=wave)
    with pytest.raises(ValueError, match="not a Turbospectrum grid"):
        load_any([tmp_path / "other.npz"])
