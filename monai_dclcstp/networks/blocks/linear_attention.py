"""Transformer block with ReLU linear attention (EfficientViT, Cai et al. 2023, Sec. 3.1)."""

from __future__ import annotations

import torch
from monai.networks.blocks import MLPBlock
from torch import nn

__all__ = ["LinearAttentionBlock"]


class LinearAttentionBlock(nn.Module):
    """Pre-norm transformer block whose attention is ``ReLU(Q) (ReLU(K)^T V) / (ReLU(Q) ReLU(K)^T 1)``.

    Costs ``O(N d^2)`` instead of softmax attention's ``O(N^2 d)``, so 3D token grids (thousands of tokens) stay cheap.
    Reference: Cai et al., "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense Prediction",
    ICCV 2023 (https://arxiv.org/abs/2205.14756), Eq. 2-3.

    Args:
        hidden_size: token width ``E``.
        mlp_dim: hidden width of the feed-forward block.
        num_heads: number of heads; ``E`` must be divisible by it.
        dropout_rate: dropout in the feed-forward block.
        eps: guards the normaliser against division by zero.
    """

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_heads: int, dropout_rate: float = 0.0, eps: float = 1e-6
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.eps = eps
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.mlp = MLPBlock(hidden_size, mlp_dim, dropout_rate)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, E)`` → ``(B, N, E)``."""
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        q, k = torch.relu(q), torch.relu(k)
        kv = torch.einsum("bhnd,bhne->bhde", k, v)  # (B, h, d, d)
        num = torch.einsum("bhnd,bhde->bhne", q, kv)  # (B, h, N, d)
        den = torch.einsum("bhnd,bhd->bhn", q, k.sum(dim=2)).unsqueeze(-1)  # (B, h, N, 1)
        out = num / (den + self.eps)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, e))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, E)`` → ``(B, N, E)``."""
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))
