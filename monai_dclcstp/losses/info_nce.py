"""Global-stream InfoNCE with in-batch keys, an optional MoCo negative queue and cross-rank key gathering."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import dist

__all__ = ["GlobalInfoNCELoss"]


class GlobalInfoNCELoss(nn.Module):
    """InfoNCE between queries and their keys; the other keys of the (global) batch and the queue are negatives.

    For query ``q_i`` with positive key ``k_i`` (Oord et al. 2018; MoCo, He et al. 2020, Eq. 1):

    ``L_i = -log( exp(q_i·k_i / T) / (sum_j exp(q_i·k_j / T) + sum_m exp(q_i·u_m / T)) )``

    where ``j`` runs over the keys of all ranks (gathered; the labels are shifted by ``rank * B``, as in lightly's
    ``NTXentLoss``) and ``u_m`` over the queue. Inputs are expected L2-normalised. With ``queue_size=0`` this is the
    MoCo v3 loss. The queue (a buffer, so it is checkpointed) is updated **after** the loss is computed, with the
    gathered keys of the step, FIFO, so it never holds the current positives.

    Args:
        temperature: softmax temperature ``T`` (> 0).
        queue_size: number of negative keys kept (0 disables the queue).
        embed_dim: key width (needed for the queue buffer).
        gather_distributed: gather keys from all ranks under ``torch.distributed`` (no-op in a single process).
    """

    def __init__(
        self, temperature: float = 0.2, queue_size: int = 0, embed_dim: int = 128, gather_distributed: bool = True
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if queue_size < 0:
            raise ValueError(f"queue_size must be non-negative, got {queue_size}.")
        self.temperature = temperature
        self.queue_size = queue_size
        self.gather_distributed = gather_distributed
        self.register_buffer("queue", torch.zeros(queue_size, embed_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def queued_keys(self) -> torch.Tensor:
        """The valid part of the queue ``(M, D)``, ``M <= queue_size`` (the queue fills up over the first steps)."""
        return self.queue[: int(self.queue_filled)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(K, D)`` into the ring buffer, oldest first out."""
        if self.queue_size == 0:
            return
        keys = keys.detach().to(self.queue.dtype)[-self.queue_size :]
        k = keys.shape[0]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(k, device=self.queue.device) + ptr) % self.queue_size
        self.queue[idx] = keys
        self.queue_ptr.fill_((ptr + k) % self.queue_size)
        self.queue_filled.fill_(min(int(self.queue_filled) + k, self.queue_size))

    def logits(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, W*B + M)`` of this rank's queries and the matching labels ``(B,)``."""
        b = query.shape[0]
        if self.gather_distributed and dist.world_size() > 1:
            keys = dist.gather(key)  # (W*B, D); differentiable when the keys are
            offset = dist.rank() * b
        else:
            keys, offset = key, 0
        negatives = self.queued_keys()
        candidates = torch.cat([keys, negatives.to(keys.dtype)], dim=0) if negatives.numel() else keys
        logits = query @ candidates.T / self.temperature  # (B, W*B + M)
        labels = torch.arange(b, device=query.device) + offset
        return logits, labels

    def forward(self, query: torch.Tensor, key: torch.Tensor, update_queue: bool = True) -> torch.Tensor:
        """``query, key`` ``(B, D)``, row ``i`` of each a positive pair → scalar loss (mean over this rank's queries).

        Args:
            update_queue: enqueue the (gathered) keys after computing the loss; callers that compute several terms
                per step (symmetric loss) pass ``False`` and call :meth:`enqueue` once.
        """
        if query.ndim != 2 or query.shape != key.shape:
            raise ValueError(f"query and key must both be (B, D), got {tuple(query.shape)} and {tuple(key.shape)}.")
        logits, labels = self.logits(query, key)
        loss = F.cross_entropy(logits, labels)
        if update_queue:
            self.enqueue(dist.gather_no_grad(key.detach()) if self.gather_distributed else key.detach())
        return loss
