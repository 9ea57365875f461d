"""How many intra-op threads torch should use next to the data loader workers (``num_threads`` key of the bundles)."""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["usable_cores", "resolve_num_threads", "set_num_threads_for_run"]

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_num_threads(num_threads: int | str | None = "auto", num_workers: int = 0) -> int:
    """The number of torch intra-op threads for a training process.

    ``"auto"`` (or ``None``, or a value below 1) means: an explicit ``OMP_NUM_THREADS`` in the environment wins (e.g.
    set by the user, or by ``torchrun`` which sets it to 1 for several processes per node); otherwise the usable
    cores shared by the processes of this node (``LOCAL_WORLD_SIZE`` under ``torchrun``) minus the data loader worker
    processes of this process, at least 1. Oversubscribing the cores is much worse than leaving one idle: torch's
    threads spin-wait for each other, and a training step on 2 threads next to one busy process was measured ~8x
    slower than on 1 thread (2 shared CPU cores).

    Args:
        num_threads: a positive int (used as given) or ``"auto"``.
        num_workers: loader worker processes of this process (they are busy during training).

    Raises:
        ValueError: ``num_threads`` is neither ``"auto"`` nor an integer, or (with ``"auto"``) ``LOCAL_WORLD_SIZE`` is
            set to something other than a non-negative integer.
    """
    if num_threads is not None and str(num_threads).strip().lower() != "auto":
        try:
            value = int(num_threads)
        except (TypeError, ValueError):
            raise ValueError(f"num_threads must be a positive integer or 'auto', got {num_threads!r}.") from None
        if value >= 1:
            return value
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip() or "1"
    if not local.isdigit():
        raise ValueError(
            f"the environment variable LOCAL_WORLD_SIZE must be a positive integer (processes on this node, set by "
            f"torchrun), got {local!r}; unset it or pass num_threads explicitly."
        )
    local_processes = max(1, int(local))
    return max(1, usable_cores() // local_processes - max(0, int(num_workers or 0)))


def set_num_threads_for_run(num_threads: int | str | None = "auto", num_workers: int = 0) -> int:
    """:func:`resolve_num_threads`, applied with ``torch.set_num_threads``; returns (and logs) the number used."""
    n = resolve_num_threads(num_threads, num_workers)
    torch.set_num_threads(n)
    logger.info("torch intra-op threads: %d (num_threads=%r, %d loader workers)", n, num_threads, int(num_workers or 0))
    return n
