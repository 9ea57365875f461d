"""Class-conditional sampling plan: how many synthetic images per class, and in which batches.

Pure Python, no torch: the plan is decided before any sampling so that the output file names are known up front
(and a name clash is reported before hours of sampling, not after).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

__all__ = ["class_counts", "class_sampling_plan"]


def class_counts(num_samples: int, num_classes: int | None = None, weights: Sequence[float] | None = None) -> list[int]:
    """Split ``num_samples`` into exact integer per-class counts (largest remainder, ties to the lower class).

    Args:
        num_samples: total number of synthetic images.
        num_classes: number of classes for a uniform split (ignored when ``weights`` is given).
        weights: non-negative relative class weights, e.g. the class frequencies of the real training set for a
            proportional expansion, or ``1 / frequency`` for a balancing one.

    Returns:
        ``counts`` with ``sum(counts) == num_samples``; ``counts[c]`` is the count of class ``c``.

    Raises:
        ValueError: negative total, no classes, negative or all-zero weights.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    if weights is None:
        if num_classes is None or num_classes < 1:
            raise ValueError(f"give num_classes >= 1 or weights, got num_classes={num_classes}.")
        weights = [1.0] * num_classes
    w = [float(x) for x in weights]
    if not w or any(x < 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"class weights must be non-negative with a positive sum, got {list(weights)}.")
    quotas = [num_samples * x / sum(w) for x in w]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(w)), key=lambda c: (-(quotas[c] - counts[c]), c))
    for c in by_remainder[: num_samples - sum(counts)]:
        counts[c] += 1
    return counts


def class_sampling_plan(
    counts: Sequence[int] | Mapping[int, int], batch_size: int, shuffle: bool = False, seed: int | None = None
) -> list[list[int]]:
    """Turn per-class counts into batches of class labels for conditional sampling.

    Every class ``c`` appears exactly ``counts[c]`` times over all batches; all batches have ``batch_size`` labels
    except possibly the last.

    Args:
        counts: per-class counts, as a list indexed by class or a mapping ``{class_index: count}``.
        batch_size: labels per batch.
        shuffle: mix classes across batches (seeded by ``seed``); otherwise labels are in class order.
        seed: seed of the shuffle.

    Returns:
        list of batches, each a list of int class labels.

    Raises:
        ValueError: non-positive ``batch_size``, negative count or class index.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    items = sorted(counts.items()) if isinstance(counts, Mapping) else list(enumerate(counts))
    labels: list[int] = []
    for c, n in items:
        if int(c) < 0 or int(n) < 0 or int(n) != n:
            raise ValueError(f"class indices and counts must be non-negative integers, got class {c}: {n}.")
        labels.extend([int(c)] * int(n))
    if shuffle:
        random.Random(seed).shuffle(labels)
    return [labels[i : i + batch_size] for i in range(0, len(labels), batch_size)]
