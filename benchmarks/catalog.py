"""End-to-end catalog throughput: FITS files in, catalog table out.

    python benchmarks/catalog.py [--files 192] [--exposures all] [--architecture paper]
                                 [--workers 1 2] [--device cpu] [--keep DIR]

On the same generated files (spemr_engine.synth: realistic LAMOST MRS files, coadd and
two exposures each) and with the same catalog RVs (as the authors took rv_ku0 from the
LAMOST catalog), it times
  project:  spemr_engine.batch.catalog.run_catalog (worker processes read and preprocess whole
            files, batched shared-feature inference, chunked crash-safe writing), with
            each --workers count; also once with the RV measured by cross-correlation;
  original: the original way of working: per spectrum, open the FITS file with astropy,
            scipy interp1d onto the grid and the published iterative np.polyfit
            continuum; then a full forward pass of a separate network for every
            member x network x region sub-model (48 for the paper configuration), eq. 1,
            fusion, and a CSV catalog written at the end.
Both include loading the model. First with a random-weight bundle of the paper
configuration, then with the default model (assets/models/default) when it exists.
Prints spectra/s for each and, last, `ratio: X` = project (default workers) / original
for the paper configuration. Target: >= 4.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits

from original_way import original_spectrum, read_arms
from spemr_engine.api import default_model_path
from spemr_engine.model.bundle import create_random_bundle, load_bundle
from spemr_engine.batch.catalog import run_catalog, usable_cores
from spemr_engine.batch.catalog_rows import label_columns
from spemr_engine.model.ensemble import ensemble_combine, fuse_min_variance
from spemr_engine.model.inference import full_precision, resolve_device
from spemr_engine.preprocessing.preprocess import standardise
from spemr_engine.synth.fits_writer import write_mrs
from spemr_engine.synth.generate import make_stars, observe_stars


# --------------------------------------------------------------------- inputs
def write_inputs(folder: Path, n_files: int, seed: int = 2026) -> tuple[list[Path], Path, int]:
    """Synthetic MRS files and a CSV of their RVs (obsid, rv): (files, rv csv, spectra)."""
    folder.mkdir(parents=True, exist_ok=True)
    stars = make_stars(n_files, seed)
    paths, rvs = [], []
    for k, obs in enumerate(observe_stars(stars.labels, stars.seeds, n_exp=2, snr_range=(20.0, 120.0))):
        obsid = 800_000_000 + k
        paths.append(
            write_mrs(
                folder / f"med-58800-BENCH_sp01-{k:04d}.fits.gz",
                obs,
                obsid,
                stars.labels[k],
                int(stars.seeds[k]),
                fiberid=k % 250 + 1,
            )
        )
        rvs.append((obsid, round(obs.rv, 3)))
    rv_csv = folder / "rv.csv"
    with open(rv_csv, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["obsid", "rv_ku0"])
        writer.writerows(rvs)
    return paths, rv_csv, 3 * n_files


# ---------------------------------------------------------------- the project
def time_project(
    paths, output: Path, model: Path, exposures: str, workers: int, rv_csv: Path | None, device: str
) -> tuple[float, dict]:
    """Seconds for one full run_catalog (model load, pool start, labelling, table)."""
    start = time.perf_counter()
    summary = run_catalog(
        paths,
        output,
        model=model,
        exposures=exposures,
        workers=workers,
        rv_catalog=rv_csv,
        device=device,
        overwrite=True,
    )
    return time.perf_counter() - start, summary.flag_counts


# --------------------------------------------------------------- the original
def spectra_list(path: Path, exposures: str) -> list[tuple[str, str]]:
    """(blue, red) extension names of the spectra to label, as the original scripts
    listed them from the headers."""
    names = [h.name for h in fits.open(path)[1:]]
    pairs = [("COADD_B", "COADD_R")]
    if exposures == "all":
        pairs += [(n, "R" + n[1:]) for n in names if n.startswith("B-")]
    return pairs


def run_original(
    paths, output: Path, model: Path, exposures: str, rv_csv: Path, device: torch.device, batch_size: int = 256
) -> float:
    """Seconds for the original end-to-end way (see the module docstring)."""
    start = time.perf_counter()
    bundle = load_bundle(model)
    regions = [r.name for r in bundle.regions] or [None]
    networks = {
        (k, net, region): bundle.build_network(k, net, region=region, device=device)
        for k in range(bundle.members)
        for net in bundle.networks
        for region in regions
    }
    rv_of = {int(row["obsid"]): float(row["rv_ku0"]) for row in csv.DictReader(open(rv_csv))}
    flux, names = [], []
    for path in paths:
        obsid = int(fits.getheader(path)["OBSID"])
        for blue, red in spectra_list(path, exposures):
            flux.append(original_spectrum(read_arms(path, blue, red), rv_of[obsid]))
            names.append((path.name, blue, red))
    x = standardise(np.array(flux), bundle.flux_mean, bundle.flux_std)
    n = len(x)
    shape = (bundle.members, len(regions), n, len(bundle.labels))
    means, variances = np.empty(shape, np.float32), np.empty(shape, np.float32)
    with torch.inference_mode(), full_precision():
        for (k, net, region), network in networks.items():
            columns = bundle.label_indices(net)
            s = regions.index(region)
            for first in range(0, n, batch_size):
                mu, var = network(torch.from_numpy(x[first : first + batch_size]).to(device))
                means[k, s, first : first + batch_size][:, columns] = mu.cpu().numpy()
                variances[k, s, first : first + batch_size][:, columns] = var.cpu().numpy()
    std, mean = bundle.label_std, bundle.label_mean
    subs = [ensemble_combine(means[:, s] * std + mean, variances[:, s] * std**2) for s in range(len(regions))]
    fused, fused_var, _ = fuse_min_variance(np.stack([m for m, _ in subs]), np.stack([v for _, v in subs]))
    catalog_names = [catalog for _, catalog in label_columns(bundle)]
    with open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["filename", "extname_blue", "extname_red"] + [c for name in catalog_names for c in (name, f"{name}_err")]
        )
        for i, (name, blue, red) in enumerate(names):
            values = [v for j in range(len(catalog_names)) for v in (fused[i, j], np.sqrt(fused_var[i, j]))]
            writer.writerow([name, blue, red, *values])
    return time.perf_counter() - start


# ----------------------------------------------------------------------- main
def make_paper_bundle(path: Path, architecture: str) -> None:
    """In a child process, so building ~1 GB of random weights leaves this heap clean."""
    if (path / "manifest.json").exists():
        return
    child = multiprocessing.get_context("spawn").Process(target=create_random_bundle, args=(path, architecture, 0))
    child.start()
    child.join()


def compare(
    label: str, paths, n_spectra: int, model: Path, folder: Path, args, rv_csv: Path, device: torch.device
) -> float:
    """Times the project (each worker count, then with CCF RVs) and the original;
    returns project (first worker count) / original."""
    print(f"== {label}: {model}")
    rates = {}
    for workers in args.workers:
        seconds, flags = time_project(
            paths, folder / f"project-{workers}.fits", model, args.exposures, workers, rv_csv, args.device
        )
        rates[workers] = n_spectra / seconds
        print(
            f"project, {workers} worker(s), catalog RVs: {rates[workers]:8.1f} spectra/s "
            f"({seconds:.1f} s; flags {flags})"
        )
    seconds, _ = time_project(
        paths, folder / "project-ccf.fits", model, args.exposures, args.workers[0], None, args.device
    )
    print(f"project, {args.workers[0]} worker(s), RVs by CCF:  {n_spectra / seconds:8.1f} spectra/s ({seconds:.1f} s)")
    seconds = run_original(paths, folder / "original.csv", model, args.exposures, rv_csv, device)
    original = n_spectra / seconds
    print(f"original way, catalog RVs:          {original:8.1f} spectra/s ({seconds:.1f} s)")
    ratio = rates[args.workers[0]] / original
    print(f"{label} ratio (project {args.workers[0]} worker(s) / original): {ratio:.2f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=192, help="synthetic files (3 spectra each)")
    parser.add_argument("--exposures", choices=("coadd", "all"), default="all")
    parser.add_argument("--architecture", default="paper")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="worker counts to time (the default count, cores - 1, is always timed first and gives the ratio)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, help="keep inputs and the random bundle here")
    args = parser.parse_args()
    default_workers = max(1, usable_cores() - 1)
    args.workers = [default_workers] + [w for w in args.workers if w != default_workers]
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="spemr-catalog-bench-") as tmp:
        folder = args.keep or Path(tmp)
        paths, rv_csv, n_files_spectra = write_inputs(folder / "inputs", args.files)
        n_spectra = n_files_spectra if args.exposures == "all" else args.files
        print(
            f"inputs: {len(paths)} synthetic files, {n_spectra} spectra ({args.exposures}); "
            f"device {device}; torch threads {torch.get_num_threads()}; usable cores {usable_cores()}"
        )
        paper = folder / f"random-{args.architecture}"
        make_paper_bundle(paper, args.architecture)
        ratio = compare(
            f"{args.architecture} configuration, random weights", paths, n_spectra, paper, folder, args, rv_csv, device
        )
        default = default_model_path()
        if (default / "manifest.json").exists():
            compare("default model", paths, n_spectra, default, folder, args, rv_csv, device)
        else:
            print(f"default model: not installed at {default} (skipped)")
    print(f"ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
