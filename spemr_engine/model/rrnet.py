"""RRNet backbone as published (reference doc section 3), with the published
state_dict key layout so published weights load unchanged."""

from __future__ import annotations

import torch
from torch import nn

from ..config import RRNetConfig

MODES = ("raw", "pre-RNN", "post-RNN")


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.ResBlock = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1),
        )
        self.downsample = (
            nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel_size=1)) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.ResBlock(x) + shortcut


def feature_length(config: RRNetConfig) -> int:
    """Length of the flattened conv(+RNN) features that fc1 sees."""
    length = config.len_spectrum
    for _ in config.resblock_channels:
        length //= 2
    return config.resblock_channels[-1] * length


class RRNet(nn.Module):
    """One RRNet: conv residual blocks, an RNN over N_s sub-bands, and mean/variance heads.

    ``features`` (everything before fc1) is separate from ``head`` so that region
    sub-models, which differ only in fc1, can share one feature pass.
    """

    def __init__(self, config: RRNetConfig, n_labels: int):
        super().__init__()
        if config.mode not in MODES:
            raise ValueError(f"unknown RRNet mode {config.mode!r} (choose from {MODES})")
        self.config = config
        self.n_labels = n_labels
        n_flat = feature_length(config)
        steps = config.n_rnn_steps
        if config.mode == "post-RNN" and n_flat % steps:
            raise ValueError(f"features ({n_flat}) do not split into {steps} RNN steps")
        if config.mode == "pre-RNN" and config.len_spectrum % steps:
            raise ValueError(f"spectrum ({config.len_spectrum}) does not split into {steps} RNN steps")

        blocks, in_channels = [], 1
        for out_channels in config.resblock_channels:
            blocks.append(nn.Sequential(ResidualBlock(in_channels, out_channels), nn.AvgPool1d(2)))
            in_channels = out_channels
        self.ResBlock_list = nn.ModuleList(blocks)
        if config.mode == "post-RNN":
            size = n_flat // steps
            self.rnn = nn.RNN(size, size, num_layers=1, nonlinearity="tanh", batch_first=True)
        elif config.mode == "pre-RNN":
            size = config.len_spectrum // steps
            self.rnn = nn.RNN(size, size, num_layers=1, nonlinearity="tanh", batch_first=True)
        self.fc1 = nn.Sequential(nn.Linear(n_flat, config.fc1_width), nn.ReLU(), nn.Dropout(config.dropout))
        self.fc2 = nn.Sequential(nn.Linear(config.fc1_width, config.fc2_width), nn.ReLU(), nn.Dropout(config.dropout))
        self.mu = nn.Linear(config.fc2_width, n_labels)
        self.sigma = nn.Sequential(nn.Linear(config.fc2_width, n_labels), nn.Softplus())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) standardised spectra -> (B, F) flattened features fed to fc1."""
        return self.sequence(self.convolve(x))

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        """First stage of ``features``: (B, L) -> (B, C, L') after the residual blocks and ReLU
        (a pre-RNN net runs its RNN here). Separate because on CPU it is fastest in small
        batches (cache-bound), while ``sequence`` wants large ones (matmul-bound)."""
        if self.config.mode == "pre-RNN":
            batch = x.shape[0]
            x, _ = self.rnn(x.reshape(batch, self.config.n_rnn_steps, -1))
            x = x.reshape(batch, -1)
        x = x.unsqueeze(1)
        for block in self.ResBlock_list:
            x = block(x)
        return torch.relu(x)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Second stage of ``features``: (B, C, L') -> (B, F), the post-RNN over N_s sub-bands."""
        batch = x.shape[0]
        if self.config.mode == "post-RNN":
            x = x.permute(0, 2, 1).reshape(batch, self.config.n_rnn_steps, -1)
            x, _ = self.rnn(x)
        return x.reshape(batch, -1)

    def head(self, features: torch.Tensor, fc1: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features -> (mean, variance) in standardised label units; ``fc1`` swaps in a region's fc1."""
        hidden = self.fc2((fc1 or self.fc1)(features))
        return self.mu(hidden), self.sigma(hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.features(x))


def gaussian_nll(
    mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, min_var: float = 1e-6
) -> torch.Tensor:
    """Published loss: mean of log(var)/2 + (y - mu)^2 / (2 var) + 5 over labels that are present.

    ``mask`` (same shape, True = label known) lets a spectrum with a missing label
    still teach the others; NaN targets are treated as missing too.
    """
    present = ~torch.isnan(target)
    if mask is not None:
        present = present & mask.bool()
    var = var.clamp_min(min_var)
    target = torch.where(present, target, mean.detach())
    per_label = 0.5 * torch.log(var) + (target - mean) ** 2 / (2 * var) + 5.0
    per_label = torch.where(present, per_label, torch.zeros_like(per_label))
    return per_label.sum() / present.sum().clamp_min(1)
