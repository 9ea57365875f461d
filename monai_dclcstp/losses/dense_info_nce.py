"""Local-stream dense InfoNCE over tokens, positives from view geometry (PixPro) or feature matching (DenseCL)."""

from __future__ import annotations

import torch
from torch import nn

from .correspondence import positive_mask

__all__ = ["DenseInfoNCELoss"]


class DenseInfoNCELoss(nn.Module):
    """Multi-positive InfoNCE between the tokens of two views of the same images.

    For query token ``i`` of view ``a`` with positive set ``P(i)`` among the candidate key tokens ``K``:

    ``L_i = -log( sum_{p in P(i)} exp(q_i·k_p / T) / sum_{j in K} exp(q_i·k_j / T) )``

    averaged over the query tokens that have at least one positive. ``P(i)`` comes from the views' known geometry
    (:func:`positive_mask`, PixPro: Xie et al. 2021) when given, else from the most similar key token of the same image
    (DenseCL: Wang et al. 2021, Sec. 3.3). Candidates ``K`` are the tokens of the same image (``negatives="image"``) or
    of every image of this rank's batch (``negatives="batch"``); the loss never crosses ranks.

    Args:
        temperature: softmax temperature ``T`` (> 0).
        pos_threshold: normalised centre distance below which two tokens are positives.
        negatives: ``"batch"`` or ``"image"``.
    """

    def __init__(self, temperature: float = 0.2, pos_threshold: float = 0.7, negatives: str = "batch") -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if pos_threshold <= 0:
            raise ValueError(f"pos_threshold must be positive, got {pos_threshold}.")
        if negatives not in ("batch", "image"):
            raise ValueError(f"negatives must be 'batch' or 'image', got {negatives!r}.")
        self.temperature = temperature
        self.pos_threshold = pos_threshold
        self.negatives = negatives

    def positives(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        geometry_q: torch.Tensor | None,
        geometry_k: torch.Tensor | None,
    ) -> torch.Tensor:
        """Positive mask ``(B, N_q, N_k)`` within each image, from geometry or by feature matching."""
        if (geometry_q is None) != (geometry_k is None):
            raise ValueError("give the geometry of both views or of neither.")
        if geometry_q is not None and geometry_k is not None:
            return positive_mask(geometry_q, geometry_k, query.shape[2:], key.shape[2:], self.pos_threshold)
        with torch.no_grad():
            sim = torch.einsum("bdn,bdm->bnm", query.flatten(2), key.flatten(2))  # (B, N_q, N_k)
            return torch.zeros_like(sim, dtype=torch.bool).scatter_(2, sim.argmax(dim=2, keepdim=True), True)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        geometry_q: torch.Tensor | None = None,
        geometry_k: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token maps ``(B, D, *grid_q)`` and ``(B, D, *grid_k)`` (L2-normalised along ``D``), geometries ``(B, 3, N_dims)``
        → scalar loss."""
        if query.ndim < 3 or query.shape[:2] != key.shape[:2]:
            raise ValueError(f"query and key must be (B, D, *grid) maps, got {tuple(query.shape)}, {tuple(key.shape)}.")
        pos = self.positives(query, key, geometry_q, geometry_k)  # (B, N_q, N_k)
        b, n_q, n_k = pos.shape
        q = query.flatten(2).transpose(1, 2)  # (B, N_q, D)
        k = key.flatten(2).transpose(1, 2)  # (B, N_k, D)
        if self.negatives == "image":
            logits = torch.bmm(q, k.transpose(1, 2)) / self.temperature  # (B, N_q, N_k)
        else:
            logits = torch.einsum("bnd,cmd->bncm", q, k).reshape(b, n_q, b * n_k) / self.temperature  # (B, N_q, B*N_k)
            eye = torch.eye(b, dtype=torch.bool, device=pos.device)
            pos = (eye[:, None, :, None] & pos[:, :, None, :]).reshape(b, n_q, b * n_k)
        log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        pos_log_prob = torch.logsumexp(log_prob.masked_fill(~pos, float("-inf")), dim=-1)  # (B, N_q)
        valid = pos.any(dim=-1)
        if not bool(valid.any()):
            return logits.sum() * 0.0  # no overlapping tokens: zero loss that keeps the graph
        return -pos_log_prob[valid].mean()
