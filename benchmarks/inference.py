"""Inference throughput: the project's shared-feature engine against the original way.

    python benchmarks/inference.py [--n 256] [--batch-size 256] [--baseline-batch-size N]
                                   [--device cpu|cuda|auto] [--architecture paper]

Builds a random-weight bundle (paper configuration: 6 members, SP + CA, 4 regions) in a
temporary folder, then on the same standardised input times
  engine:    SpemrPredictor: per member and network one conv + RNN feature pass, the base
             and four region fc1 heads stacked on it, then eq. 1 and fusion;
  original:  a full forward pass of a separate network per member x {SP, CA} x region
             sub-model (48 passes), then eq. 1 and fusion.
It prints spectra/s of both, the largest difference between them (standardised units,
and the fused labels in physical units), peak memory of the engine per 1,000 spectra,
and last `ratio: X` (engine speed / original speed).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.model.ensemble import ensemble_combine, fuse_min_variance
from spemr_engine.model.inference import SpemrPredictor, full_precision, resolve_device
from spemr_engine.preprocessing.preprocess import standardise


def rss_mb() -> float:
    """Current resident memory (Linux /proc), MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def weight_bytes(predictor: SpemrPredictor) -> int:
    """Bytes of the distinct tensors the predictor holds (shared views counted once)."""
    storages = {}
    # one _SharedHeads per member, network and input group (they share the base network)
    for heads in (h for by_network in predictor._heads for groups in by_network.values() for h in groups):
        for tensor in heads.state_dict().values():
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_engine(predictor: SpemrPredictor, flux: np.ndarray, device: torch.device, repeat: int):
    """(best seconds, standardised outputs, prediction, working-memory MB)."""
    predictor.predict(flux[: predictor.batch_size])  # warm-up: allocations, kernel selection
    gc.collect()
    before = rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tracemalloc.start()
    times = []
    for _ in range(repeat):
        synchronise(device)
        start = time.perf_counter()
        x = standardise(flux, predictor.bundle.flux_mean, predictor.bundle.flux_std)
        means, variances = predictor.standardised_outputs(x)
        prediction = predictor.combine(means, variances)
        synchronise(device)
        times.append(time.perf_counter() - start)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    working = max(peak_rss_mb() - before, traced_peak / 2**20)
    if device.type == "cuda":
        working = max(working, torch.cuda.max_memory_allocated() / 2**20)
    return min(times), (means, variances), prediction, working


def run_original(bundle, flux: np.ndarray, device: torch.device, batch_size: int, repeat: int):
    """One separate full network per member x network x region, each run over all input."""
    regions = [r.name for r in bundle.regions]
    networks = {
        (k, net, region): bundle.build_network(k, net, region=region, device=device)
        for k in range(bundle.members)
        for net in bundle.networks
        for region in regions
    }
    x = standardise(flux, bundle.flux_mean, bundle.flux_std)
    n, shape = len(x), (bundle.members, len(regions), len(x), len(bundle.labels))
    means, variances = np.empty(shape, np.float32), np.empty(shape, np.float32)
    times = []
    with torch.inference_mode(), full_precision():  # the engine's precision, so outputs compare
        networks[(0, next(iter(bundle.networks)), regions[0])](torch.from_numpy(x[:batch_size]).to(device))
        for _ in range(repeat):
            synchronise(device)
            start = time.perf_counter()
            for (k, net, region), model in networks.items():
                columns = bundle.label_indices(net)
                s = regions.index(region)
                for first in range(0, n, batch_size):
                    batch = torch.from_numpy(x[first : first + batch_size]).to(device)
                    mu, var = model(batch)
                    means[k, s, first : first + batch_size][:, columns] = mu.cpu().numpy()
                    variances[k, s, first : first + batch_size][:, columns] = var.cpu().numpy()
            fused = _original_combination(bundle, means, variances)
            synchronise(device)
            times.append(time.perf_counter() - start)
    return min(times), (means, variances), fused, len(networks)


def _original_combination(bundle, means, variances):
    std, mean = bundle.label_std, bundle.label_mean
    sub = [ensemble_combine(means[:, s] * std + mean, variances[:, s] * std**2) for s in range(means.shape[1])]
    fused_mean, _, _ = fuse_min_variance(np.stack([m for m, _ in sub]), np.stack([v for _, v in sub]))
    return fused_mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256, help="spectra")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--baseline-batch-size", type=int, default=None, help="batch size of the original way (default: the engine's)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--architecture", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each; the best counts")
    parser.add_argument(
        "--bundle", default=None, help="reuse (or create) the random bundle in this folder instead of a temporary one"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    baseline_batch = args.baseline_batch_size or args.batch_size
    rng = np.random.default_rng(args.seed)
    flux = (1.0 + 0.1 * rng.standard_normal((args.n, 7200))).astype(np.float32)

    with tempfile.TemporaryDirectory(prefix="spemr-bench-") as folder:
        start = time.perf_counter()
        path = Path(args.bundle) if args.bundle else Path(folder) / "model"
        if not (path / "manifest.json").exists():  # in a child: keep this process's heap clean
            child = multiprocessing.get_context("spawn").Process(
                target=create_random_bundle, args=(path, args.architecture, args.seed)
            )
            child.start()
            child.join()
        bundle = load_bundle(path)
        print(
            f"bundle: {args.architecture}, {bundle.members} members, networks {list(bundle.networks)}, "
            f"regions {[r.name for r in bundle.regions]} (built in {time.perf_counter() - start:.1f} s)"
        )
        print(
            f"device: {device}, torch threads: {torch.get_num_threads()}, n = {args.n}, "
            f"batch {args.batch_size} (original: {baseline_batch}), best of {args.repeat}"
        )
        predictor = SpemrPredictor(bundle, device=device, batch_size=args.batch_size)
        weights_mb = weight_bytes(predictor) / 2**20
        engine_s, (e_means, e_vars), prediction, working_mb = run_engine(predictor, flux, device, args.repeat)
        del predictor
        gc.collect()
        original_s, (o_means, o_vars), original_fused, passes = run_original(
            bundle, flux, device, baseline_batch, args.repeat
        )

    regions = slice(1, None)  # the engine also returns the base model; the original does not
    engine_means = np.moveaxis(e_means[:, regions], (2, 1), (0, 1))  # (M, S, n, L)
    engine_vars = np.moveaxis(e_vars[:, regions], (2, 1), (0, 1))
    diff = max(np.abs(engine_means - o_means).max(), np.abs(engine_vars - o_vars).max())
    fused_diff = np.abs(prediction.mean - original_fused).max(axis=0)
    engine_rate, original_rate = args.n / engine_s, args.n / original_s
    print(f"engine:   {engine_rate:8.1f} spectra/s ({engine_s:.2f} s)")
    print(f"original: {original_rate:8.1f} spectra/s ({original_s:.2f} s, {passes} full passes per spectrum)")
    print(f"max abs difference, standardised mean/variance: {diff:.2e}")
    print(f"max abs difference, fused labels: Teff {fused_diff[0]:.2e} K, others {fused_diff[1:].max():.2e} dex")
    print(
        f"engine memory: weights {weights_mb:.0f} MB (held once per predictor); working peak {working_mb:.1f} MB for {args.n} spectra "
        f"= {working_mb * 1000 / args.n:.0f} MB per 1,000 spectra"
    )
    print(f"ratio: {engine_rate / original_rate:.2f}")


if __name__ == "__main__":
    main()
