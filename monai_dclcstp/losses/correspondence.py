"""Token correspondences between two augmented views from their recorded crop boxes and flips (PixPro-style).

View geometry format (written by :mod:`monai_dclcstp.transforms`, one per view): a float tensor ``(3, N_dims)``
(batched ``(B, 3, N_dims)``) whose rows are the crop box ``start`` and ``size`` in pixels/voxels of the original image
and the ``flip`` flags (1 where the view was flipped along that spatial axis after cropping).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["token_centres", "positive_mask", "identity_geometry"]


def identity_geometry(spatial_shape: Sequence[int], batch_size: int | None = None) -> torch.Tensor:
    """Geometry of a view that is the whole, unflipped image: ``(3, N_dims)`` or ``(B, 3, N_dims)``."""
    shape = torch.as_tensor(spatial_shape, dtype=torch.float32)
    geom = torch.stack([torch.zeros_like(shape), shape, torch.zeros_like(shape)])
    return geom if batch_size is None else geom.expand(batch_size, -1, -1).clone()


def token_centres(geometry: torch.Tensor, grid: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of a view's token grid in original-image coordinates.

    Args:
        geometry: ``(B, 3, N_dims)`` view geometry (start, size, flip).
        grid: token grid of the view, e.g. ``(h, w)``; tokens are ordered like ``tensor.flatten(2)``.

    Returns:
        centres ``(B, N, N_dims)`` in pixels of the original image, and the tokens' bin size ``(B, N_dims)``.
    """
    if geometry.ndim != 3 or geometry.shape[1] != 3 or geometry.shape[2] != len(grid):
        raise ValueError(f"geometry must be (B, 3, {len(grid)}) for a {len(grid)}-D grid, got {tuple(geometry.shape)}.")
    geometry = geometry.float()
    start, size, flip = geometry[:, 0], geometry[:, 1], geometry[:, 2] > 0.5
    axes = [(torch.arange(g, device=geometry.device, dtype=torch.float32) + 0.5) / g for g in grid]
    unit = torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1).reshape(-1, len(grid))  # (N, N_dims) in (0, 1)
    unit = torch.where(flip[:, None, :], 1.0 - unit[None], unit[None])  # (B, N, N_dims)
    centres = start[:, None, :] + unit * size[:, None, :]
    bins = size / torch.as_tensor(grid, device=geometry.device, dtype=torch.float32)
    return centres, bins


def positive_mask(
    geometry_a: torch.Tensor,
    geometry_b: torch.Tensor,
    grid_a: Sequence[int],
    grid_b: Sequence[int],
    threshold: float = 0.7,
) -> torch.Tensor:
    """Which token pairs of views ``a`` and ``b`` of the same image cover the same place → bool ``(B, N_a, N_b)``.

    A pair is positive when the distance of the two token centres in the original image, divided by the larger of the
    two views' token-bin diagonals, is below ``threshold`` (PixPro, Xie et al. 2021, Sec. 3.1, Eq. 1, threshold 0.7).
    """
    ca, bins_a = token_centres(geometry_a, grid_a)
    cb, bins_b = token_centres(geometry_b, grid_b)
    dist = torch.cdist(ca, cb)  # (B, N_a, N_b)
    scale = torch.maximum(bins_a.norm(dim=-1), bins_b.norm(dim=-1)).clamp_min(1e-6)  # (B,)
    return dist / scale[:, None, None] < threshold
