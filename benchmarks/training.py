"""Training throughput: spectra/s of pre-training and fine-tuning through the real loader
(memmap reads, standardisation, prefetch) on a generated reference set.

    python benchmarks/training.py [--config paper] [--n 4096] [--device auto] [--batch-size 256]

Prints per-stage seconds and spectra/s, and the loader alone (reading + standardising),
so one can see whether the data path or the network limits training on a device.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from refset_testdata import make_refset  # noqa: E402

from spemr_engine.progress import TrainingProgress  # noqa: E402
from spemr_engine.training.train import _Data, _Normaliser, resolve_device, train_model, usable_statistics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="paper")
    parser.add_argument("--n", type=int, default=4096, help="spectra (stars x 2 repeats)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        refset = make_refset(Path(tmp) / "rs", n_stars=args.n // 2, repeats=2)
        stats = usable_statistics(refset.statistics)
        data = _Data(
            refset,
            _Normaliser(stats["flux_mean"], stats["flux_std"], stats["label_mean"], stats["label_std"]),
            [0, 1, 2],
            device,
            args.batch_size,
        )
        start = time.perf_counter()
        for _x, _y in data.batches(np.arange(len(refset)), order_seed=0):
            pass
        loader = time.perf_counter() - start
        print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})")
        print(f"loader alone: {len(refset) / loader:.0f} spectra/s")
        seconds = {"pretrain": 0.0, "finetune": 0.0}
        spectra = {"pretrain": 0, "finetune": 0}
        last: dict = {}

        def progress(event) -> None:
            # Time between consecutive steps of one job: training steps only, no validation.
            if not isinstance(event, TrainingProgress) or event.epoch_finished:
                return
            stage = event.stage
            job = (*event.job, event.epoch)
            now = time.perf_counter()
            if last.get("job") == job:
                seconds[stage] += now - last["time"]
                spectra[stage] += args.batch_size
            last.update(job=job, time=now)

        start = time.perf_counter()
        train_model(
            refset,
            Path(tmp) / "model",
            architecture=args.config,
            members=1,
            epochs=args.epochs,
            finetune_epochs=1,
            batch_size=args.batch_size,
            device=str(device),
            progress=progress,
        )
        total = time.perf_counter() - start
        print(f"whole run (1 member, {args.epochs} epoch(s) + 1 fine-tune epoch per region, evaluation): {total:.1f} s")
        for stage in seconds:
            if seconds[stage]:
                print(f"{stage}: {spectra[stage] / seconds[stage]:.0f} spectra/s (training steps)")


if __name__ == "__main__":
    main()
