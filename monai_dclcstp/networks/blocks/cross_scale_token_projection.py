"""Cross-scale token projection (CsTP): multi-scale CNN maps → one token grid mixed by a small transformer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from monai.networks.layers import Conv
from torch import nn

from .linear_attention import LinearAttentionBlock
from .position_embedding import sincos_position_embedding

__all__ = ["CrossScaleTokenProjection", "resample_to_grid"]


def resample_to_grid(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Resample ``(B, C, *size)`` to ``(B, C, *grid)``: area pooling where it shrinks, linear interpolation where it grows.

    Axes that shrink are averaged (``adaptive_avg_pool``, anti-aliased and exact for sizes that are not multiples);
    axes that grow are interpolated (bilinear/trilinear, ``align_corners=False``). Identity when sizes match.
    """
    grid = tuple(int(g) for g in grid)
    size = tuple(x.shape[2:])
    if size == grid:
        return x
    pooled = tuple(min(s, g) for s, g in zip(size, grid))
    if pooled != size:
        x = F.adaptive_avg_pool2d(x, pooled) if x.ndim == 4 else F.adaptive_avg_pool3d(x, pooled)
    if pooled != grid:
        x = F.interpolate(x, size=grid, mode="bilinear" if x.ndim == 4 else "trilinear", align_corners=False)
    return x


class CrossScaleTokenProjection(nn.Module):
    """Project C3–C5 maps to tokens of one width on a common grid and mix them across scales.

    DCL-CsTP (IEEE Access 2025), cross-scale token projection: for every scale ``s``

    1. a 1x1 convolution maps ``C_s`` channels to ``embed_dim`` (applied after pooling when the map shrinks to the grid
       and before interpolation when it grows: both are linear, so the result is the same and the cost the smallest);
    2. the map is resampled to the common grid (the grid of scale ``grid_scale``, C4 by default), see
       :func:`resample_to_grid`;
    3. a learnable scale embedding and a fixed sine-cosine positional embedding are added;

    then the ``S * N`` tokens of all scales are mixed by ``num_layers`` pre-norm transformer blocks (MONAI's
    ``TransformerBlock`` with PyTorch's fused attention, or :class:`LinearAttentionBlock`), and the ``S`` tokens of each
    grid cell are fused by a learned softmax-weighted sum and layer-normalised.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of each input scale, e.g. ``(128, 256, 512)``.
        embed_dim: token width ``E``.
        num_layers: transformer blocks mixing the tokens (0 = no mixing: projection + embeddings only).
        num_heads: attention heads; ``embed_dim`` must be divisible by it.
        mlp_ratio: hidden width of the blocks' feed-forward layers, relative to ``embed_dim``.
        grid_scale: index of the scale whose spatial size is the common grid (default: the middle scale, C4 of
            C3–C5, or the only one).
        attention: ``"softmax"`` (exact attention) or ``"linear"`` (ReLU linear attention, for large 3D grids).
        dropout_rate: dropout inside the transformer blocks.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: Sequence[int],
        embed_dim: int = 256,
        num_layers: int = 2,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        grid_scale: int | None = None,
        attention: str = "softmax",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(in_channels) < 1:
            raise ValueError("in_channels must list at least one scale.")
        if grid_scale is None:
            grid_scale = len(in_channels) // 2
        if not -len(in_channels) <= grid_scale < len(in_channels):
            raise ValueError(f"grid_scale {grid_scale} is out of range for {len(in_channels)} scales.")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}.")
        if attention not in ("softmax", "linear"):
            raise ValueError(f"attention must be 'softmax' or 'linear', got {attention!r}.")
        if num_layers < 0:
            raise ValueError(f"num_layers must be non-negative, got {num_layers}.")
        self.spatial_dims = spatial_dims
        self.num_scales = len(in_channels)
        self.embed_dim = embed_dim
        self.grid_scale = grid_scale % len(in_channels)
        conv = Conv[Conv.CONV, spatial_dims]
        self.proj = nn.ModuleList([conv(c, embed_dim, kernel_size=1) for c in in_channels])
        self.scale_embed = nn.Parameter(torch.zeros(self.num_scales, embed_dim))
        nn.init.trunc_normal_(self.scale_embed, std=0.02)
        mlp_dim = int(embed_dim * mlp_ratio)
        blocks: list[nn.Module] = []
        for _ in range(num_layers):
            if attention == "softmax":
                block = TransformerBlock(
                    embed_dim, mlp_dim, num_heads, dropout_rate, qkv_bias=True, use_flash_attention=True
                )
                # MONAI's block always builds ``norm_cross_attn``, which is unused without cross-attention: freeze it,
                # or DDP (find_unused_parameters=False) waits for its gradient and fails on the next iteration.
                block.norm_cross_attn.requires_grad_(False)
                blocks.append(block)
            else:
                blocks.append(LinearAttentionBlock(embed_dim, mlp_dim, num_heads, dropout_rate))
        self.blocks = nn.Sequential(*blocks)
        self.fuse_logits = nn.Parameter(torch.zeros(self.num_scales))
        self.norm = nn.LayerNorm(embed_dim)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def _position_embedding(self, grid: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor:
        key = (grid, ref.device, ref.dtype)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_position_embedding(grid, self.embed_dim, device=ref.device).to(ref.dtype)
        return self._pos_cache[key]

    def project_scale(self, index: int, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """Scale ``index``: ``(B, C_s, *size_s)`` → ``(B, E, *grid)`` (1x1 conv and resampling, cheapest order first)."""
        if all(s >= g for s, g in zip(x.shape[2:], grid)):
            return self.proj[index](resample_to_grid(x, grid))
        return resample_to_grid(self.proj[index](x), grid)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(B, C_s, *size_s) for s in scales]`` → fused token map ``(B, E, *grid)``."""
        if len(features) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} feature maps, got {len(features)}.")
        grid = tuple(features[self.grid_scale].shape[2:])
        b = features[0].shape[0]
        tokens = torch.stack([self.project_scale(i, f, grid).flatten(2) for i, f in enumerate(features)], dim=1)
        n = tokens.shape[-1]  # tokens: (B, S, E, N)
        tokens = tokens.transpose(2, 3) + self.scale_embed[None, :, None, :]  # (B, S, N, E)
        tokens = tokens + self._position_embedding(grid, tokens)  # broadcast (N, E)
        tokens = self.blocks(tokens.reshape(b, self.num_scales * n, self.embed_dim))
        weights = torch.softmax(self.fuse_logits, dim=0)
        fused = torch.einsum("bsne,s->bne", tokens.view(b, self.num_scales, n, self.embed_dim), weights)
        return self.norm(fused).transpose(1, 2).reshape(b, self.embed_dim, *grid)
