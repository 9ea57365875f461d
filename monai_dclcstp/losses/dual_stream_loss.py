"""DCL-CsTP objective: ``(1 - lambda) * global InfoNCE + lambda * local dense InfoNCE``, symmetrised over the views."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..utils import dist
from .dense_info_nce import DenseInfoNCELoss
from .info_nce import GlobalInfoNCELoss

__all__ = ["DualStreamLoss"]


class DualStreamLoss(nn.Module):
    """Dual-stream loss of DCL-CsTP (IEEE Access 2025): ``L = (1 - λ) L_global + λ L_local``.

    Both terms are symmetric over the views: ``L_global = (G(q1, k2) + G(q2, k1)) / 2`` with
    :class:`GlobalInfoNCELoss` ``G`` (queries from the online encoder, keys from the momentum encoder), and likewise
    ``L_local`` with :class:`DenseInfoNCELoss` on the token maps and the views' geometry. The queue (if any) is updated
    once per step, after both global terms, with the keys of both views. The outputs of an asymmetric network
    (``DCLCsTPNet(symmetric=False)``: only ``*_q1`` and ``*_k2``) give the one-sided terms ``G(q1, k2)`` and
    ``L(q1, k2)``, and only ``k2`` enters the queue (as MoCo v2 and DenseCL).

    Args:
        lambda_local: weight ``λ`` in ``[0, 1]`` of the local stream (0 = global only, 1 = local only).
        temperature: temperature of the global loss.
        local_temperature: temperature of the local loss (default: ``temperature``).
        queue_size: global negative queue length (0 = no queue).
        embed_dim: embedding width (for the queue).
        pos_threshold: geometric positive threshold of the local loss.
        local_negatives: ``"batch"`` or ``"image"``, see :class:`DenseInfoNCELoss`.
        gather_distributed: gather global keys across ranks.
    """

    def __init__(
        self,
        lambda_local: float = 0.5,
        temperature: float = 0.2,
        local_temperature: float | None = None,
        queue_size: int = 0,
        embed_dim: int = 128,
        pos_threshold: float = 0.7,
        local_negatives: str = "batch",
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda_local <= 1.0:
            raise ValueError(f"lambda_local must be in [0, 1], got {lambda_local}.")
        self.lambda_local = lambda_local
        self.global_loss = GlobalInfoNCELoss(temperature, queue_size, embed_dim, gather_distributed)
        self.local_loss = DenseInfoNCELoss(
            temperature if local_temperature is None else local_temperature, pos_threshold, local_negatives
        )

    def forward(
        self,
        outputs: Mapping[str, torch.Tensor],
        geometry1: torch.Tensor | None = None,
        geometry2: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``outputs`` of :class:`~monai_dclcstp.networks.DCLCsTPNet` and view geometries ``(B, 3, N_dims)``
        → ``{"loss", "loss_global", "loss_local"}`` (scalars; a skipped term is a zero tensor)."""
        zero = outputs["global_q1"].new_zeros(())
        loss_global, loss_local = zero, zero
        symmetric = "global_q2" in outputs
        if self.lambda_local < 1.0:
            g = self.global_loss
            loss_global = g(outputs["global_q1"], outputs["global_k2"], update_queue=False)
            if symmetric:
                loss_global = 0.5 * (loss_global + g(outputs["global_q2"], outputs["global_k1"], update_queue=False))
            if g.queue_size:
                keys = torch.cat([outputs["global_k1"], outputs["global_k2"]]) if symmetric else outputs["global_k2"]
                keys = keys.detach()
                g.enqueue(dist.gather_no_grad(keys) if g.gather_distributed else keys)
        if self.lambda_local > 0.0:
            loss_local = self.local_loss(outputs["local_q1"], outputs["local_k2"], geometry1, geometry2)
            if symmetric:
                loss_local = 0.5 * (
                    loss_local + self.local_loss(outputs["local_q2"], outputs["local_k1"], geometry2, geometry1)
                )
        loss = (1.0 - self.lambda_local) * loss_global + self.lambda_local * loss_local
        return {"loss": loss, "loss_global": loss_global, "loss_local": loss_local}
