"""SPEMR inference with shared features.

Region sub-models differ from the base network only in fc1, so for every ensemble member
and network the convolution + RNN features are computed once and all fc1 heads (base and
regions, stacked into one matrix) are applied to them; fc2, mu and sigma are shared too.
Members are then combined per sub-model (paper eq. 1) and the regions fused per label by
smallest variance (eqs. 2-3).

A region fine-tuned with its own standardisation (``ModelBundle.region_statistics``) sees
its own input: sub-models are grouped by their flux statistics, each group standardises
the flux with them and has its own feature pass (the base and every region that shares the
base's statistics stay in one). Each sub-model's outputs are de-standardised with its own
label statistics, before the members are combined and the regions fused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .bundle import BASE, ModelBundle, load_bundle
from . import sigma_calibration
from .ensemble import ensemble_combine, fuse_min_variance
from ..errors import Cancelled, SpemrError
from ..progress import PREDICT, Count, CountProgress
from ..preprocessing.preprocess import standardise
from .rrnet import RRNet

CPU_CONV_CHUNK = 32  # spectra per convolution call on CPU: keeps activations in cache


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when available, else CPU; asking for absent CUDA is a user error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpemrError("device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    return device


@dataclass
class Prediction:
    """Fused labels with 1-sigma errors plus everything behind them (physical units)."""

    labels: list[str]
    submodels: list[str]
    fused_over: list[str]
    mean: np.ndarray  # (n, L)
    sigma: np.ndarray  # (n, L)
    winner: np.ndarray  # (n, L) int, index into submodels (-1: no prediction)
    sub_mean: np.ndarray  # (n, S, L)
    sub_sigma: np.ndarray  # (n, S, L)
    member_mean: np.ndarray  # (n, S, M, L)
    # (L,) factors already applied to sigma and sub_sigma (sigma_calibration); None: none
    sigma_scale: np.ndarray | None = None

    def ensemble_sigma(self) -> np.ndarray:
        """(n, L) fused sigma as eq. 1 gives it, before any calibration factor."""
        return self.sigma if self.sigma_scale is None else self.sigma / self.sigma_scale

    def __len__(self) -> int:
        return len(self.mean)

    def winner_names(self) -> np.ndarray:
        """(n, L) names of the winning sub-models ("" where there is no prediction)."""
        names = np.array([*self.submodels, ""], dtype=object)
        return names[np.where(self.winner < 0, len(self.submodels), self.winner)]

    def expand(self, rows: np.ndarray, n: int) -> "Prediction":
        """A prediction for n spectra where ``rows`` hold this one and the rest are NaN
        (winner -1): unusable spectra keep their place instead of being dropped."""

        def spread(array: np.ndarray, fill) -> np.ndarray:
            out = np.full((n, *array.shape[1:]), fill, dtype=array.dtype)
            out[rows] = array
            return out

        return Prediction(
            self.labels,
            self.submodels,
            self.fused_over,
            spread(self.mean, np.nan),
            spread(self.sigma, np.nan),
            spread(self.winner, -1),
            spread(self.sub_mean, np.nan),
            spread(self.sub_sigma, np.nan),
            spread(self.member_mean, np.nan),
            self.sigma_scale,
        )


def full_precision():
    """Context without TF32 convolutions (cuDNN's default): labels should not depend on
    the GPU generation, and CPU and GPU results agree to float32 rounding."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    )


def recurrent_features(net: RRNet, convolved: torch.Tensor) -> torch.Tensor:
    """``net.sequence`` for post-RNN nets, written out for inference: the input projections
    of all N_s steps in one matrix product, and no hidden-state product at the first step
    (h0 = 0), which saves 1 of 2 N_s large products. Other modes use ``net.sequence``."""
    rnn = getattr(net, "rnn", None)
    if net.config.mode != "post-RNN" or rnn is None or not rnn.bias:
        return net.sequence(convolved)
    batch, steps = convolved.shape[0], net.config.n_rnn_steps
    inputs = convolved.permute(0, 2, 1).reshape(batch * steps, -1)
    bias = rnn.bias_ih_l0 + rnn.bias_hh_l0
    projected = torch.addmm(bias, inputs, rnn.weight_ih_l0.t()).reshape(batch, steps, -1)
    outputs = torch.empty_like(projected)
    hidden = torch.tanh(projected[:, 0])
    outputs[:, 0] = hidden
    for step in range(1, steps):
        hidden = torch.tanh(torch.addmm(projected[:, step], hidden, rnn.weight_hh_l0.t()))
        outputs[:, step] = hidden
    return outputs.reshape(batch, -1)


class _SharedHeads(nn.Module):
    """One member/network and one input group: the base RRNet plus the group's fc1 heads
    stacked row-wise (the base's own fc1 first when the group holds the base)."""

    def __init__(self, net: RRNet, fc1_layers: list[nn.Linear], holds_base: bool = True):
        super().__init__()
        self.net = net
        self.n_heads = len(fc1_layers)
        self.weight = nn.Parameter(torch.cat([layer.weight for layer in fc1_layers]), requires_grad=False)
        self.bias = nn.Parameter(torch.cat([layer.bias for layer in fc1_layers]), requires_grad=False)
        if holds_base:  # the base fc1 becomes a view: no second copy
            width = fc1_layers[0].out_features
            net.fc1[0].weight = nn.Parameter(self.weight[:width], requires_grad=False)
            net.fc1[0].bias = nn.Parameter(self.bias[:width], requires_grad=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F) features -> mean, variance (B, S, n_labels) in standardised units."""
        batch = features.shape[0]
        hidden = torch.nn.functional.linear(features, self.weight, self.bias)
        hidden = self.net.fc1[1:](hidden.reshape(batch * self.n_heads, -1))  # ReLU, Dropout
        hidden = self.net.fc2(hidden)
        mean, variance = self.net.mu(hidden), self.net.sigma(hidden)
        return mean.reshape(batch, self.n_heads, -1), variance.reshape(batch, self.n_heads, -1)


@dataclass(frozen=True)
class InputGroup:
    """Sub-models that read the same standardised input: one feature pass per group."""

    flux_mean: np.ndarray
    flux_std: np.ndarray
    submodels: tuple[int, ...]  # indices into SpemrPredictor.submodels, base first when present


def input_groups(bundle: ModelBundle) -> list[InputGroup]:
    """The base and the regions sharing its flux statistics, then one group per distinct
    set of regions' own flux statistics (in region order)."""
    groups: list[InputGroup] = []
    for index, name in enumerate(bundle.submodels):
        statistics = bundle.statistics_of(name)
        for i, group in enumerate(groups):
            if np.array_equal(group.flux_mean, statistics.flux_mean) and np.array_equal(
                group.flux_std, statistics.flux_std
            ):
                groups[i] = InputGroup(group.flux_mean, group.flux_std, (*group.submodels, index))
                break
        else:
            groups.append(InputGroup(statistics.flux_mean, statistics.flux_std, (index,)))
    return groups


class SpemrPredictor:
    """Runs a model bundle on continuum-normalised spectra; build once, predict many times."""

    def __init__(self, bundle: ModelBundle | str | Path, device: str | torch.device = "auto", batch_size: int = 256):
        self.bundle = bundle if isinstance(bundle, ModelBundle) else load_bundle(bundle)
        self.device = resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        self.conv_chunk = CPU_CONV_CHUNK if self.device.type == "cpu" else self.batch_size
        self.submodels = self.bundle.submodels
        self.fused_over = [r.name for r in self.bundle.regions] or [BASE]
        self.groups = input_groups(self.bundle)
        own = [self.bundle.statistics_of(name) for name in self.submodels]  # (S, L) label scales
        self._label_std = np.stack([np.asarray(s.label_std, dtype=np.float64) for s in own])
        self._label_mean = np.stack([np.asarray(s.label_mean, dtype=np.float64) for s in own])
        calibration = self.bundle.sigma_calibration
        self._sigma_factors = None if calibration is None else calibration.factors(list(self.bundle.labels))
        self._heads = [
            {network: self._load(member, network) for network in self.bundle.networks}
            for member in range(self.bundle.members)
        ]

    def _load(self, member: int, network: str) -> list[_SharedHeads]:
        """One _SharedHeads per input group, all on the one base network."""
        net = self.bundle.build_network(member, network, device=self.device)
        layers = [net.fc1[0]] + [
            self.bundle.build_region_fc1(member, network, r.name, self.device)[0]  # type: ignore[index]
            for r in self.bundle.regions
        ]
        fc1_layers = [layer for layer in layers if isinstance(layer, nn.Linear)]
        if len(fc1_layers) != len(layers):
            raise TypeError(f"{self.bundle.path}: fc1 heads are not linear layers")
        # built in place: .to() would unshare fc1
        return [
            _SharedHeads(net, [fc1_layers[i] for i in group.submodels], holds_base=group.submodels[0] == 0).eval()
            for group in self.groups
        ]

    # ------------------------------------------------------------------ public
    def predict(
        self, flux: np.ndarray, progress: CountProgress | None = None, cancel: Callable[[], bool] | None = None
    ) -> Prediction:
        """(n, n_pixels) continuum-normalised flux -> Prediction. A row with non-finite
        flux gives NaN labels for that row only."""
        means, variances = self.outputs(flux, progress, cancel)
        return self.combine(means, variances)

    def outputs(
        self, flux: np.ndarray, progress: CountProgress | None = None, cancel: Callable[[], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_pixels) continuum-normalised flux -> every member's mean and variance in
        standardised label units (each sub-model's own), each (n, S, M, L) float32 (S: base
        then regions). Each input group standardises the flux with its own statistics."""
        flux = self._check_input(flux)
        return self._outputs(
            len(flux),
            lambda start, stop: [
                standardise(flux[start:stop], group.flux_mean, group.flux_std) for group in self.groups
            ],
            progress,
            cancel,
        )

    def standardised_outputs(
        self, x: np.ndarray, progress: CountProgress | None = None, cancel: Callable[[], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """As ``outputs`` from input already standardised with the bundle's statistics: only
        for bundles whose sub-models all share them (one input group)."""
        if len(self.groups) != 1:
            raise SpemrError(
                f"{self.bundle.path}: regions with their own statistics need the flux itself (use outputs or predict)"
            )
        return self._outputs(len(x), lambda start, stop: [x[start:stop]], progress, cancel)

    # ----------------------------------------------------------------- private
    def _outputs(
        self,
        n: int,
        inputs: Callable[[int, int], list[np.ndarray]],
        progress: CountProgress | None,
        cancel: Callable[[], bool] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        shape = (n, len(self.submodels), self.bundle.members, len(self.bundle.labels))
        means, variances = np.empty(shape, np.float32), np.empty(shape, np.float32)
        for start in range(0, n, self.batch_size):
            if cancel is not None and cancel():
                raise Cancelled(f"prediction cancelled after {start} of {n} spectra")
            stop = min(n, start + self.batch_size)
            batches = [
                torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device) for x in inputs(start, stop)
            ]
            self._run_batch(batches, means[start:stop], variances[start:stop])
            if progress is not None:
                progress(Count(PREDICT, done=stop, total=n))
        return means, variances

    @torch.inference_mode()
    def _run_batch(self, batches: list[torch.Tensor], means: np.ndarray, variances: np.ndarray) -> None:
        with full_precision():
            self._run_networks(batches, means, variances)

    def _run_networks(self, batches: list[torch.Tensor], means: np.ndarray, variances: np.ndarray) -> None:
        """One feature pass per member, network and input group (``batches``: one
        standardised batch per group)."""
        for member, heads_by_network in enumerate(self._heads):
            for network, groups in heads_by_network.items():
                columns = self.bundle.label_indices(network)
                for group, heads, batch in zip(self.groups, groups, batches):
                    features = self._features(heads.net, batch)
                    mean, variance = (value.cpu().numpy() for value in heads(features))
                    if len(group.submodels) == len(self.submodels):  # one group: every sub-model
                        means[:, :, member, columns] = mean
                        variances[:, :, member, columns] = variance
                        continue
                    for j, submodel in enumerate(group.submodels):
                        means[:, submodel, member, columns] = mean[:, j]
                        variances[:, submodel, member, columns] = variance[:, j]

    def _features(self, net: RRNet, batch: torch.Tensor) -> torch.Tensor:
        convolved = torch.cat([net.convolve(chunk) for chunk in batch.split(self.conv_chunk)])
        return recurrent_features(net, convolved)

    def _check_input(self, flux: np.ndarray) -> np.ndarray:
        flux = np.asarray(flux)
        n_pixels = self.bundle.architecture.len_spectrum
        if flux.ndim == 1:
            flux = flux[np.newaxis]
        if flux.ndim != 2 or flux.shape[1] != n_pixels:
            raise SpemrError(f"{self.bundle.path}: expected flux of shape (n, {n_pixels}), got {flux.shape}")
        return flux

    def combine(self, means: np.ndarray, variances: np.ndarray) -> Prediction:
        """Standardised (n, S, M, L) member outputs -> Prediction: destandardise (each
        sub-model with its own label statistics), combine members per sub-model (eq. 1),
        fuse the regions per label (eqs. 2-3)."""
        scale, offset = self._label_std[:, np.newaxis, :], self._label_mean[:, np.newaxis, :]  # (S, 1, L)
        member_mean = means.astype(np.float64) * scale + offset  # (n, S, M, L)
        member_var = variances.astype(np.float64) * scale**2
        n, n_sub, n_members, n_labels = member_mean.shape
        flat = (n_members, n * n_sub, n_labels)  # members first, as eq. 1 wants
        sub_mean, sub_var = ensemble_combine(
            np.moveaxis(member_mean, 2, 0).reshape(flat), np.moveaxis(member_var, 2, 0).reshape(flat)
        )
        sub_mean = sub_mean.reshape(n, n_sub, n_labels)
        sub_var = sub_var.reshape(n, n_sub, n_labels)
        first = self.submodels.index(self.fused_over[0])
        mean, var, winner = fuse_min_variance(
            np.moveaxis(sub_mean[:, first:], 1, 0), np.moveaxis(sub_var[:, first:], 1, 0)
        )
        winner = np.where(np.isnan(mean), -1, winner + first)
        prediction = Prediction(
            labels=list(self.bundle.labels),
            submodels=list(self.submodels),
            fused_over=list(self.fused_over),
            mean=mean,
            sigma=np.sqrt(var),
            winner=winner,
            sub_mean=sub_mean,
            sub_sigma=np.sqrt(sub_var),
            member_mean=member_mean,
        )
        return prediction if self._sigma_factors is None else sigma_calibration.apply(prediction, self._sigma_factors)
