"""Training: pre-training of RRNet ensembles and region fine-tuning of fc1 (SPEMR recipe).

Recipe (reference doc sections 3-4): split 7:1:2 by star; for every ensemble member and
every network of the architecture (SP/CA in the paper) pre-train one RRNet with Adam and
StepLR, adding noise to 25 % of the standardised pixels after epoch 5, keeping the epoch
with the best validation loss; then, for every region, fine-tune a copy updating only fc1
on the training spectra inside the region (best by the region's validation loss).

Every (member, network, stage) is one *job* with its own checkpoint in
``out_dir/.checkpoints``. A job saves a checkpoint after every epoch and when cancelled
(mid-epoch, with the RNG state), so a resumed run continues exactly where it stopped and,
on CPU, ends with the same weights as an uninterrupted run. Checkpoints are plain state
dicts (torch.save, read back with weights_only=True).
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..model import bundle as bundle_io
from ..config import (
    LABELS,
    Region,
    RRNetConfig,
    architecture as named_architecture,
    default_regions,
    preprocess_config,
    training_recipe,
)
from ..errors import Cancelled, SpemrError
from ..progress import Evaluating, Saved, TrainingCallback, TrainingProgress
from .evaluate import evaluate
from ..model.inference import resolve_device
from ..io_utils import atomic_path, plain
from .refset import ReferenceSet
from ..model.rrnet import RRNet, gaussian_nll
from ..run_manifest import RunManifest

CHECKPOINT_DIR = ".checkpoints"
RUN_FILE = "run.json"
PRETRAIN, FINETUNE = "pretrain", "finetune"
RECIPE = training_recipe()  # presets/training.json: every default below comes from it


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the result of a run (and so must match on resume)."""

    epochs: int = RECIPE.epochs
    finetune_epochs: int = RECIPE.finetune_epochs
    lr: float = RECIPE.lr
    finetune_lr: float = RECIPE.finetune_lr
    batch_size: int = RECIPE.batch_size
    step_size: int = RECIPE.step_size
    gamma: float = RECIPE.gamma
    seed: int = RECIPE.seed
    split_fractions: tuple[float, float, float] = RECIPE.split_fractions

    def to_dict(self) -> dict:
        out = dict(vars(self))
        out["split_fractions"] = list(self.split_fractions)
        return out


@dataclass
class _Normaliser:
    """Standardisation of inputs and labels with fixed statistics (those of the bundle)."""

    flux_mean: np.ndarray
    flux_std: np.ndarray
    label_mean: np.ndarray  # all LABELS
    label_std: np.ndarray

    def flux_on(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """preprocess.standardise's formula (clip, then per pixel (x - mean) / std) as torch
        on the training device: in numpy float64 it limited a GPU to the CPU's pace.
        Bad (NaN) pixels become 0, the training mean, so one cannot poison a batch."""
        cfg = preprocess_config()
        mean = torch.as_tensor(self.flux_mean, dtype=torch.float32, device=device)
        scale = torch.as_tensor(
            1.0 / np.where(self.flux_std > 0, self.flux_std, 1.0), dtype=torch.float32, device=device
        )

        def standardise(flux: torch.Tensor) -> torch.Tensor:
            x = (flux.clamp(cfg.clip_min, cfg.clip_max) - mean) * scale
            return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

        return standardise

    def labels(self, labels: np.ndarray, columns: Sequence[int]) -> np.ndarray:
        return ((labels[:, columns] - self.label_mean[columns]) / self.label_std[columns]).astype(np.float32)


def usable_statistics(stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Statistics safe to divide by: pixels or labels that never varied (or never had a
    value) get std 1, and never-seen means get 1 (flux continuum) or 0 (labels)."""
    out = {}
    for key, fill_mean in (("flux", 1.0), ("label", 0.0)):
        mean = np.asarray(stats[f"{key}_mean"], dtype=np.float64)
        std = np.asarray(stats[f"{key}_std"], dtype=np.float64)
        out[f"{key}_mean"] = np.where(np.isfinite(mean), mean, fill_mean)
        out[f"{key}_std"] = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return out


def resolve_architecture(architecture: str | RRNetConfig, members: int | None = None) -> RRNetConfig:
    config = named_architecture(architecture) if isinstance(architecture, str) else architecture
    return replace(config, members=int(members)) if members else config


def _as_cancel(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


def _seed(*parts) -> int:
    """A stable 63-bit seed from any parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------- batching
def _prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Read the next batches from disk on a thread while the current one trains."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(done)
        except BaseException as error:  # surfaced in the consumer
            buffer.put(error)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(0.01)


@dataclass
class _Data:
    """Batches of one network's standardised inputs and labels, straight from the memmap."""

    refset: ReferenceSet
    normaliser: _Normaliser
    columns: list[int]  # label positions (in the refset) this network predicts
    device: torch.device
    batch_size: int

    def __post_init__(self) -> None:
        self.standardise = self.normaliser.flux_on(self.device)

    def batches(self, indices: np.ndarray, order_seed: int | None, skip: int = 0) -> Iterator[tuple]:
        """(x, y) tensors; ``order_seed`` shuffles (None keeps order); ``skip`` drops the first batches.

        A thread reads raw rows from the memory map ahead of the training step; the
        standardisation runs on the device."""
        indices = np.asarray(indices, dtype=np.int64)
        if order_seed is not None:
            indices = np.random.default_rng(order_seed).permutation(indices)
        starts = range(skip * self.batch_size, len(indices), self.batch_size)

        def read():
            for start in starts:
                batch = indices[start : start + self.batch_size]
                y = self.normaliser.labels(self.refset.labels[batch].astype(np.float64), self.columns)
                yield torch.from_numpy(self.refset.read_flux(batch)), torch.from_numpy(y)

        for x, y in _prefetch(read()):
            x = x.to(self.device, non_blocking=True)
            yield self.standardise(x), y.to(self.device, non_blocking=True)

    def n_batches(self, n: int) -> int:
        return (n + self.batch_size - 1) // self.batch_size


def augment(x: torch.Tensor) -> torch.Tensor:
    """Published augmentation: N(0, sigma) noise on a random fraction of standardised pixels."""
    cfg = preprocess_config()
    hit = torch.rand(x.shape, device=x.device) < cfg.augment_pixel_fraction
    return x + hit * torch.randn(x.shape, device=x.device) * cfg.augment_noise_sigma


# --------------------------------------------------------------------- jobs
@dataclass
class _Job:
    """One network trained in one stage: pre-training, or fc1 fine-tuning for a region."""

    stage: str
    member: int
    network: str
    region: str | None
    model: RRNet
    train_idx: np.ndarray
    valid_idx: np.ndarray
    epochs: int
    lr: float
    data: _Data
    labels: list[str] = field(default_factory=list)  # the network's outputs, in order
    history: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"m{self.member}.{self.network}." + (self.region if self.region else PRETRAIN)

    @property
    def fc1_only(self) -> bool:
        return self.stage == FINETUNE

    def parameters(self):
        return self.model.fc1.parameters() if self.fc1_only else self.model.parameters()

    def train_mode(self) -> None:
        """Pre-training: everything trains. Fine-tuning: frozen parts in eval mode (dropout
        off), fc1 in train mode; requires_grad marks what Adam may change."""
        if self.fc1_only:
            self.model.eval()
            self.model.fc1.train()
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith("fc1."))
        else:
            self.model.train()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fc1_only:
            with torch.no_grad():
                features = self.model.features(x)
            return self.model.head(features)
        return self.model(x)

    def event(self, **values) -> TrainingProgress:
        return TrainingProgress(
            stage=self.stage,
            member=self.member,
            network=self.network,
            region=self.region,
            n_epochs=self.epochs,
            **values,
        )


class _Checkpoints:
    """torch.save'd state dicts per job in out_dir/.checkpoints, written atomically."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, job: _Job) -> Path:
        return self.folder / f"{job.name}.pt"

    def load(self, job: _Job) -> dict | None:
        path = self.path(job)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise SpemrError(f"{path}: unreadable checkpoint ({error}); train without resume") from None

    def save(self, job: _Job, state: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(job)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)


def _state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def run_job(
    job: _Job,
    settings: TrainSettings,
    checkpoints: _Checkpoints,
    progress: TrainingCallback | None,
    cancel: Callable[[], bool],
) -> dict[str, torch.Tensor]:
    """Train one job to the end (or resume it) and return its best state dict."""
    device = job.data.device
    saved = checkpoints.load(job)
    if saved is not None and saved.get("done"):
        job.history = list(saved["history"])
        return saved["best_state"]
    job.model.to(device)
    optimizer = torch.optim.Adam(list(job.parameters()), lr=job.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_size, gamma=settings.gamma)
    best: dict[str, Any] = {"state": _state_copy(job.model), "val": float("inf"), "epoch": 0}
    if job.fc1_only and saved is None:
        # Fine-tuning keeps the base fc1 unless an epoch beats it on the region's validation set.
        best["val"] = validate(job)[0]
    start_epoch, start_step, loss_sum = 0, 0, 0.0
    torch.manual_seed(_seed(settings.seed, job.name, "train"))
    if saved is not None:
        job.model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best = {"state": saved["best_state"], "val": saved["best_val"], "epoch": saved["best_epoch"]}
        start_epoch, start_step, loss_sum = saved["epoch"], saved["step"], saved["loss_sum"]
        job.history = list(saved["history"])
        _set_rng_state(saved["rng"], device)

    def checkpoint(epoch: int, step: int, loss: float) -> None:
        checkpoints.save(
            job,
            {
                "done": False,
                "model": _state_copy(job.model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best_state": best["state"],
                "best_val": best["val"],
                "best_epoch": best["epoch"],
                "epoch": epoch,
                "step": step,
                "loss_sum": loss,
                "history": job.history,
                "rng": _rng_state(device),
            },
        )

    n_steps = job.data.n_batches(len(job.train_idx))
    augment_after = preprocess_config().augment_after_epoch
    for epoch in range(start_epoch, job.epochs):
        job.train_mode()
        order_seed = _seed(settings.seed, job.name, "order", epoch)
        step = start_step if epoch == start_epoch else 0
        loss_sum = loss_sum if epoch == start_epoch else 0.0
        for x, y in job.data.batches(job.train_idx, order_seed, skip=step):
            if cancel():
                checkpoint(epoch, step, loss_sum)
                raise Cancelled(
                    f"training cancelled at {job.name} epoch {epoch + 1} step {step}; run again with resume to continue"
                )
            if epoch + 1 > augment_after:  # epochs count from 1, as in the paper
                x = augment(x)
            mean, var = job.forward(x)
            loss = gaussian_nll(mean, var, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach())
            if progress:
                progress(job.event(epoch=epoch + 1, step=step, n_steps=n_steps, train_loss=loss_sum / step))
        scheduler.step()
        val_loss, val_mae = validate(job)
        train_loss = loss_sum / max(step, 1)
        job.history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best["val"] or not np.isfinite(best["val"]):
            best = {"state": _state_copy(job.model), "val": val_loss, "epoch": epoch + 1}
        if progress:
            progress(
                job.event(
                    epoch=epoch + 1,
                    step=step,
                    n_steps=n_steps,
                    train_loss=train_loss,
                    val_loss=val_loss,
                    val_mae=val_mae,
                    best_epoch=best["epoch"],
                )
            )
        checkpoint(epoch + 1, 0, 0.0)
    checkpoints.save(
        job,
        {
            "done": True,
            "best_state": best["state"],
            "best_val": best["val"],
            "best_epoch": best["epoch"],
            "history": job.history,
        },
    )
    return best["state"]


@torch.no_grad()
def validate(job: _Job) -> tuple[float, dict[str, float]]:
    """Loss (standardised units) and per-label MAE (physical units) on the job's validation spectra.

    With no validation spectra the loss is +inf, so the last epoch is kept."""
    if len(job.valid_idx) == 0:
        return float("inf"), {}
    job.model.eval()
    columns = job.data.columns
    std = torch.as_tensor(job.data.normaliser.label_std[columns], dtype=torch.float32, device=job.data.device)
    loss_total, weight = 0.0, 0
    abs_sum = torch.zeros(len(columns), dtype=torch.float64)
    count = torch.zeros(len(columns), dtype=torch.float64)
    for x, y in job.data.batches(job.valid_idx, order_seed=None):
        mean, var = job.model(x)
        present = ~torch.isnan(y)
        n_present = int(present.sum())
        if n_present:
            loss_total += float(gaussian_nll(mean, var, y)) * n_present
            weight += n_present
        error = torch.where(present, (mean - y).abs() * std, torch.zeros_like(mean))
        abs_sum += error.sum(0).double().cpu()
        count += present.sum(0).double().cpu()
    names = job.labels
    mae = {name: float(abs_sum[i] / count[i]) for i, name in enumerate(names) if count[i] > 0}
    return (loss_total / weight if weight else float("inf")), mae


# ----------------------------------------------------------------- training
def train_model(
    refset: ReferenceSet | str | Path,
    out_dir: str | Path,
    architecture: str | RRNetConfig = RECIPE.architecture,
    members: int | None = None,
    epochs: int = RECIPE.epochs,
    finetune_epochs: int = RECIPE.finetune_epochs,
    lr: float = RECIPE.lr,
    finetune_lr: float = RECIPE.finetune_lr,
    batch_size: int = RECIPE.batch_size,
    step_size: int = RECIPE.step_size,
    gamma: float = RECIPE.gamma,
    seed: int = RECIPE.seed,
    device: str = "auto",
    regions: Sequence[Region] | None = None,
    progress: TrainingCallback | None = None,
    cancel=None,
    resume: bool = True,
    split_fractions: Sequence[float] = RECIPE.split_fractions,
    command: str | None = None,
) -> Path:
    """Pre-train an ensemble, fine-tune each region's fc1, evaluate, and save a model bundle.

    Returns the bundle folder (``out_dir``). Raises Cancelled (after checkpointing) when
    ``cancel`` says so; calling again with resume=True continues from the checkpoints.
    """
    started = time.time()
    refset = refset if isinstance(refset, ReferenceSet) else ReferenceSet.open(refset)
    config = resolve_architecture(architecture, members)
    regions = default_regions() if regions is None else tuple(regions)
    settings = TrainSettings(
        epochs, finetune_epochs, lr, finetune_lr, batch_size, step_size, gamma, seed, _three(split_fractions)
    )
    out_dir = Path(out_dir)
    device_t = resolve_device(device)
    checkpoints = _prepare_checkpoints(out_dir, refset, config, regions, settings, resume)
    split = refset.split_by_star(settings.split_fractions, seed=settings.seed)
    if len(split.train) == 0:
        raise SpemrError(f"{refset.path}: no training spectra after the split (too few stars)")
    stats = usable_statistics(refset.statistics)
    normaliser = _Normaliser(stats["flux_mean"], stats["flux_std"], stats["label_mean"], stats["label_std"])
    trainer = _EnsembleTrainer(
        refset, normaliser, config, regions, settings, device_t, checkpoints, progress, _as_cancel(cancel)
    )
    base_states, region_heads, notes = trainer.run(split)
    labels = [name for name in LABELS if any(name in v for v in config.networks.values())]
    statistics = _bundle_statistics(stats, refset.label_names, labels, refset.source)
    provenance: dict[str, Any] = {
        "trained_on": "synthetic" if refset.synthetic else "real",
        "command": command or "spemr_engine.training.train.train_model",
        "seed": seed,
        "reference_set": str(refset.path),
        "reference_source": refset.source,
        "n_spectra": len(refset),
        "n_stars": int(len(set(refset.star_id))),
        "n_train": int(len(split.train)),
        "n_valid": int(len(split.valid)),
        "n_test": int(len(split.test)),
        "split": {"by": "star", "seed": seed, "fractions": list(settings.split_fractions)},
        "settings": settings.to_dict(),
        "device": str(device_t),
        "notes": notes,
        "history": trainer.histories,
    }
    _save(out_dir, config, base_states, region_heads, statistics, provenance, regions, labels, metrics={})
    provenance["train_seconds"] = round(time.time() - started, 1)
    metrics = _evaluate_quietly(out_dir, refset, split.test, device, progress)
    bundle_io.update_manifest(out_dir, provenance=plain(provenance), metrics=plain(metrics))
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    if progress:
        progress(Saved(path=str(out_dir), seconds=round(time.time() - started, 1)))
    return out_dir


def _bundle_statistics(stats: dict, refset_labels: Sequence[str], labels: Sequence[str], source: str) -> dict:
    index = [list(refset_labels).index(name) for name in labels]
    return {
        "flux_mean": stats["flux_mean"],
        "flux_std": stats["flux_std"],
        "label_mean": stats["label_mean"][index],
        "label_std": stats["label_std"][index],
        "source": f"reference set {source}".strip(),
    }


def _save(
    out_dir, config, base_states, region_heads, statistics, provenance, regions, labels, metrics, region_statistics=None
) -> Path:
    return bundle_io.save_bundle(
        out_dir,
        config,
        base_states,
        statistics,
        plain(provenance),
        region_heads=region_heads if regions else None,
        regions=regions,
        labels=labels,
        metrics=plain(metrics),
        region_statistics=region_statistics or None,
    )


def _evaluate_quietly(
    bundle_path: Path, refset: ReferenceSet, indices: np.ndarray, device: str, progress: TrainingCallback | None
) -> dict:
    """Test-split metrics for the manifest; none when the test split is empty."""
    if len(indices) == 0:
        return {"note": "no test spectra"}
    if progress:
        progress(Evaluating(n_spectra=int(len(indices))))
    return evaluate(bundle_path, refset, split=indices, device=device)


def _three(fractions) -> tuple[float, float, float]:
    train, valid, test = (float(f) for f in fractions)
    return train, valid, test


def _prepare_checkpoints(
    out_dir: Path,
    refset: ReferenceSet,
    config: RRNetConfig,
    regions: Sequence[Region],
    settings: TrainSettings,
    resume: bool,
) -> _Checkpoints:
    """Checkpoints are reused only for the very same run; anything else is an error, not a mix."""
    folder = out_dir / CHECKPOINT_DIR
    run = {
        "reference_set": str(Path(refset.path).resolve()),
        "n_spectra": len(refset),
        "architecture": config.to_dict(),
        "regions": [r.to_dict() for r in regions],
        "settings": settings.to_dict(),
    }
    manifest = RunManifest(folder / RUN_FILE, run)
    if folder.exists() and not resume:
        shutil.rmtree(folder)
    if folder.exists():
        remedy = "train without resume (--no-resume) to start over"
        record = manifest.read()
        if record is None:
            raise SpemrError(f"{folder}: checkpoints without a run record ({RUN_FILE}); {remedy}")
        manifest.require_same(f"{folder}: the run whose checkpoints these are", remedy, record)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write()
    return _Checkpoints(folder)


class _EnsembleTrainer:
    """Runs every job of a model: members x networks x (pre-training + one job per region)."""

    def __init__(self, refset, normaliser, config, regions, settings, device, checkpoints, progress, cancel):
        self.refset, self.normaliser, self.config = refset, normaliser, config
        self.regions, self.settings, self.device = regions, settings, device
        self.checkpoints, self.progress, self.cancel = checkpoints, progress, cancel
        self.histories: dict[str, list] = {}

    def data(self, network: str) -> _Data:
        columns = [self.refset.label_names.index(name) for name in self.config.networks[network]]
        return _Data(self.refset, self.normaliser, columns, self.device, self.settings.batch_size)

    def run(self, split) -> tuple[list, list, list[str]]:
        base_states: list = []
        region_heads: list = []
        notes: list[str] = []
        for member in range(self.config.members):
            base_states.append({})
            region_heads.append({})
            for network in self.config.networks:
                base = self.pretrain(member, network, split)
                base_states[member][network] = base
                heads, job_notes = self.finetune_regions(member, network, base, split, self.regions)
                region_heads[member][network] = heads
                notes.extend(n for n in job_notes if n not in notes)
        return base_states, region_heads, notes

    def new_model(self, member: int, network: str) -> RRNet:
        torch.manual_seed(_seed(self.settings.seed, member, network, "init"))
        return RRNet(self.config, len(self.config.networks[network]))

    def pretrain(self, member: int, network: str, split) -> dict:
        job = _Job(
            PRETRAIN,
            member,
            network,
            None,
            self.new_model(member, network),
            split.train,
            split.valid,
            self.settings.epochs,
            self.settings.lr,
            self.data(network),
            list(self.config.networks[network]),
        )
        state = run_job(job, self.settings, self.checkpoints, self.progress, self.cancel)
        self.histories[job.name] = job.history
        return state

    def finetune_regions(
        self, member: int, network: str, base_state: dict, split, regions: Sequence[Region]
    ) -> tuple[dict, list[str]]:
        """fc1 state per region; a region without training spectra keeps the base fc1."""
        heads, notes = {}, []
        labels = self.refset.labels.astype(np.float64)
        for region in regions:
            inside = region.contains(labels, self.refset.label_names)
            train_idx, valid_idx = split.train[inside[split.train]], split.valid[inside[split.valid]]
            if len(train_idx) == 0:
                heads[region.name] = {k[len("fc1.") :]: v for k, v in base_state.items() if k.startswith("fc1.")}
                notes.append(f"region {region.name}: no training spectra, base fc1 kept")
                continue
            model = RRNet(self.config, len(self.config.networks[network]))
            model.load_state_dict(base_state)
            job = _Job(
                FINETUNE,
                member,
                network,
                region.name,
                model,
                train_idx,
                valid_idx,
                self.settings.finetune_epochs,
                self.settings.finetune_lr,
                self.data(network),
                list(self.config.networks[network]),
            )
            state = run_job(job, self.settings, self.checkpoints, self.progress, self.cancel)
            self.histories[job.name] = job.history
            heads[region.name] = {k[len("fc1.") :]: v for k, v in state.items() if k.startswith("fc1.")}
        return heads, notes


# -------------------------------------------------------------- fine-tuning
def finetune_bundle(
    model_path: str | Path,
    refset: ReferenceSet | str | Path,
    out_dir: str | Path,
    regions: Sequence[Region] | None = None,
    epochs: int = RECIPE.finetune_epochs,
    lr: float = RECIPE.finetune_lr,
    batch_size: int = RECIPE.batch_size,
    step_size: int = RECIPE.step_size,
    gamma: float = RECIPE.gamma,
    seed: int = RECIPE.seed,
    device: str = "auto",
    progress: TrainingCallback | None = None,
    cancel=None,
    resume: bool = True,
    command: str | None = None,
) -> Path:
    """Fine-tune (or add) region fc1 heads of an existing bundle on a reference set.

    Inputs and labels are standardised with the bundle's statistics (those its base
    networks were trained with). Regions of the bundle that are not re-tuned are kept.
    Training spectra are the refset's training split (by star, the bundle's split seed).
    """
    source = bundle_io.load_bundle(model_path)
    refset = refset if isinstance(refset, ReferenceSet) else ReferenceSet.open(refset)
    regions = tuple(source.regions) if regions is None else tuple(regions)
    missing = [name for name in source.labels if name not in refset.label_names]
    if missing:
        raise SpemrError(f"{refset.path}: reference set lacks labels {missing} of the model")
    split_info = source.provenance.get("split") or {}
    settings = TrainSettings(
        0,
        epochs,
        lr,
        lr,
        batch_size,
        step_size,
        gamma,
        seed,
        tuple(split_info.get("fractions", RECIPE.split_fractions)),
    )
    split = refset.split_by_star(settings.split_fractions, seed=int(split_info.get("seed", seed)))
    normaliser = _bundle_normaliser(source, refset)
    out_dir = Path(out_dir)
    checkpoints = _prepare_checkpoints(out_dir, refset, source.architecture, regions, settings, resume)
    trainer = _EnsembleTrainer(
        refset,
        normaliser,
        source.architecture,
        regions,
        settings,
        resolve_device(device),
        checkpoints,
        progress,
        _as_cancel(cancel),
    )
    kept = [r for r in source.regions if r.name not in {n.name for n in regions}]
    base_states: list = []
    region_heads: list = []
    notes: list[str] = []
    for member in range(source.members):
        base_states.append({})
        region_heads.append({})
        for network in source.networks:
            base = source.base_state_dict(member, network)
            base_states[member][network] = base
            heads, job_notes = trainer.finetune_regions(member, network, base, split, regions)
            for region in kept:
                heads[region.name] = source.region_state_dict(member, network, region.name)
            region_heads[member][network] = heads
            notes.extend(n for n in job_notes if n not in notes)
    provenance = dict(source.provenance)
    provenance["finetuned"] = {
        "command": command or "spemr_engine.training.train.finetune_bundle",
        "reference_set": str(refset.path),
        "regions": [r.name for r in regions],
        "settings": settings.to_dict(),
        "notes": notes,
        "history": trainer.histories,
        "trained_on": "synthetic" if refset.synthetic else "real",
    }
    retuned = {r.name: r for r in regions}
    all_regions = tuple(retuned.pop(r.name, r) for r in source.regions) + tuple(retuned.values())
    statistics = {
        "flux_mean": source.flux_mean,
        "flux_std": source.flux_std,
        "label_mean": source.label_mean,
        "label_std": source.label_std,
        "source": source.statistics.source,
    }
    metrics = dict(source.metrics)
    # re-tuned regions learn with the base's statistics; kept ones keep their own
    kept_statistics = {r.name: source.region_statistics[r.name] for r in kept if r.name in source.region_statistics}
    _save(
        out_dir,
        source.architecture,
        base_states,
        region_heads,
        statistics,
        provenance,
        all_regions,
        source.labels,
        metrics,
        region_statistics=kept_statistics,
    )
    if len(split.test):
        metrics = _evaluate_quietly(out_dir, refset, split.test, device, progress)
        bundle_io.update_manifest(out_dir, metrics=plain(metrics))
    shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    return out_dir


def _bundle_normaliser(source, refset: ReferenceSet) -> _Normaliser:
    """A normaliser in refset label order that uses the bundle's label statistics."""
    mean = np.zeros(len(refset.label_names))
    std = np.ones(len(refset.label_names))
    for i, name in enumerate(source.labels):
        j = refset.label_names.index(name)
        mean[j], std[j] = source.label_mean[i], source.label_std[i]
    return _Normaliser(np.asarray(source.flux_mean), np.asarray(source.flux_std), mean, std)


def print_progress(stream=None) -> TrainingCallback:
    """A text progress display for the CLI: one line per epoch, a rewritten line per step."""

    def show(event) -> None:
        out = stream or sys.stderr
        if isinstance(event, TrainingProgress):
            head = f"{event.stage:8s} {event.where:12s} epoch {event.epoch}/{event.n_epochs}"
            if event.epoch_finished:
                mae = " ".join(f"{k}={v:.3g}" for k, v in list(event.val_mae.items())[:4])
                print(
                    f"\r{head} train {event.train_loss:.4f} val {event.val_loss:.4f} {mae}".ljust(100),
                    file=out,
                    flush=True,
                )
            else:
                print(
                    f"\r{head} step {event.step}/{event.n_steps} loss {event.train_loss:.4f}",
                    end="",
                    file=out,
                    flush=True,
                )
        elif isinstance(event, Evaluating):
            print(f"evaluating on {event.n_spectra} test spectra", file=out, flush=True)
        elif isinstance(event, Saved):
            print(f"saved {event.path} ({event.seconds} s)", file=out, flush=True)

    return show
