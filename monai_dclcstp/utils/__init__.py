from __future__ import annotations

from .dist import GatherLayer, gather, gather_no_grad, is_distributed, is_main_process, rank, world_size
from .momentum import cosine_schedule, deactivate_requires_grad, update_momentum

__all__ = [
    "GatherLayer",
    "cosine_schedule",
    "deactivate_requires_grad",
    "gather",
    "gather_no_grad",
    "is_distributed",
    "is_main_process",
    "rank",
    "update_momentum",
    "world_size",
]
