"""Fixed N-D sine-cosine positional embedding for token grids of any size."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["sincos_position_embedding"]


def sincos_position_embedding(
    grid_size: Sequence[int], embed_dim: int, temperature: float = 10000.0, device: torch.device | None = None
) -> torch.Tensor:
    """Sine-cosine embedding of the integer positions of a ``grid_size`` grid → ``(prod(grid_size), embed_dim)``.

    The N-D generalisation of the 2D embedding of MAE (He et al. 2022, following Vaswani et al. 2017, Sec. 3.5): each
    spatial axis gets ``2 * (embed_dim // (2 * N))`` channels of ``sin/cos(pos * temperature^(-k / K))``; leftover
    channels (when ``embed_dim`` is not a multiple of ``2 * N``) are zero, so any width works in 2D and 3D.
    Tokens are ordered like ``tensor.flatten(2)`` orders a ``(B, C, *grid_size)`` map.
    """
    n = len(grid_size)
    per_axis = embed_dim // (2 * n)
    if per_axis < 1:
        raise ValueError(f"embed_dim={embed_dim} is too small for a {n}-D sine-cosine embedding (need >= {2 * n}).")
    omega = 1.0 / temperature ** (torch.arange(per_axis, dtype=torch.float32, device=device) / per_axis)
    axes = torch.meshgrid([torch.arange(s, dtype=torch.float32, device=device) for s in grid_size], indexing="ij")
    parts = []
    for coord in axes:
        angles = coord.reshape(-1, 1) * omega  # (N_tokens, per_axis)
        parts += [torch.sin(angles), torch.cos(angles)]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < embed_dim:
        emb = torch.nn.functional.pad(emb, (0, embed_dim - emb.shape[1]))
    return emb
