"""Distributed helpers: rank, world size and gradient-correct gather (no-ops in a single process).

Follows ``lightly/utils/dist.py``: every function works without an initialised process group, so the single-process
path needs no special casing in the callers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "is_main_process", "gather", "gather_no_grad", "GatherLayer"]


def is_distributed() -> bool:
    """``True`` when ``torch.distributed`` is available and a process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Rank of this process (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """``True`` on rank 0 (and always in a single process): the rank that logs, checkpoints and exports."""
    return rank() == 0


class GatherLayer(torch.autograd.Function):
    """All-gather that keeps the gradient path: backward returns this rank's slice of the summed gradients.

    Same construction as lightly's ``GatherLayer`` (and SimCLR's): the forward result of every rank is
    ``cat(x_0, ..., x_{W-1})``, and since every rank's loss may depend on every slice, the gradient of slice ``r`` is the
    sum over ranks of the gradients they computed for it (``all_reduce``), which DDP then averages like any other.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        output = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(output, x.contiguous())
        return tuple(output)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` of shape ``(B, ...)`` from all ranks along dim 0 → ``(W * B, ...)``, differentiable.

    All ranks must pass the same batch size. Returns ``x`` itself in a single process.
    """
    if world_size() == 1:
        return x
    return torch.cat(GatherLayer.apply(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather` without autograd (for momentum keys, embeddings for kNN monitoring)."""
    if world_size() == 1:
        return x
    output = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(output, x.contiguous())
    return torch.cat(output, dim=0)
