"""Small collectives the handlers need so that every rank takes the same decision (no-ops in a single process)."""

from __future__ import annotations

import torch

from ..utils import dist

__all__ = ["collective_device", "any_rank"]


def collective_device() -> torch.device:
    """Where tensors of a collective must live for the process group's backend (the current CUDA device for NCCL)."""
    if dist.is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """``True`` when ``flag`` is true on at least one rank (``flag`` itself in a single process)."""
    if dist.world_size() == 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=collective_device())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)
