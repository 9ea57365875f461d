"""Projection heads of the two streams (lightly-style: one generic head, small method subclasses)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionMLP", "GlobalProjectionHead", "LocalProjectionHead"]


class ProjectionMLP(nn.Module):
    """MLP ``Linear → ReLU → ... → Linear`` applied to the last dimension, output L2-normalised.

    Args:
        dims: widths ``(in, hidden..., out)``; at least two entries.
        normalize: L2-normalise the output (cosine similarities in the InfoNCE losses).
    """

    def __init__(self, dims: Sequence[int], normalize: bool = True) -> None:
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"dims needs at least (in, out), got {tuple(dims)}.")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` → ``(..., out)``."""
        x = self.mlp(x)
        return F.normalize(x, dim=-1) if self.normalize else x


class GlobalProjectionHead(ProjectionMLP):
    """Global stream head: mean-pooled tokens → 2-layer MLP → L2-normalised embedding (MoCo v2, Chen et al. 2020)."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__((in_dim, hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token map ``(B, E, *grid)`` → ``(B, out_dim)``."""
        return super().forward(x.flatten(2).mean(dim=2))


class LocalProjectionHead(ProjectionMLP):
    """Local stream head: the same 2-layer MLP on every token (DenseCL's 1x1-conv head, Wang et al. 2021, Sec. 3.2)."""

    def __init__(self, in_dim: int = 256, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__((in_dim, hidden_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Token map ``(B, E, *grid)`` → ``(B, out_dim, *grid)``."""
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)
