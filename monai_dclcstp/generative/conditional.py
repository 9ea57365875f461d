"""Class-conditional sampling plan: how many synthetic images per class, and in which batches.

Pure Python, no torch: the plan is decided before any sampling so that the output file names are known up front
(and a name clash is reported before hours of sampling, not after).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["class_counts", "class_sampling_plan", "resolve_class_counts", "infer_num_classes", "label_counts"]


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


def label_counts(items: Sequence[Mapping[str, Any]], num_classes: int, key: str = "label") -> list[int]:
    """How many of ``items`` have each int label ``0 .. num_classes - 1`` (items without a label are skipped)."""
    counts = [0] * int(num_classes)
    for it in items:
        label = it.get(key)
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < num_classes:
            counts[label] += 1
    return counts


def infer_num_classes(
    items: Sequence[Mapping[str, Any]],
    conditional: bool | str = "auto",
    classes: Sequence[Any] | None = None,
    key: str = "label",
) -> int:
    """Number of classes for class-conditional training, or 0 for an unconditional model.

    Args:
        items: training items (Contract 1).
        conditional: ``True`` (labels required), ``False`` (0), or ``"auto"``: conditional when every item has an int
            label and there are at least two classes.
        classes: the datalist's class names (their count wins over the largest label + 1).
        key: label key.

    Raises:
        ValueError: ``conditional=True`` but some items have no int label.
    """
    mode = str(conditional).lower()
    if mode not in ("true", "false", "auto"):
        raise ValueError(f"conditional must be true, false or 'auto', got {conditional!r}.")
    if mode == "false":
        return 0
    labels = [it.get(key) for it in items]
    unlabeled = [
        it.get("image")
        for it, lab in zip(items, labels)
        if not isinstance(lab, int) or isinstance(lab, bool) or lab < 0
    ]
    if unlabeled or not labels:
        if mode == "true":
            raise ValueError(
                f"conditional=true needs an int class label on every training item; {len(unlabeled)} of "
                f"{len(items)} have none, e.g. {unlabeled[:3]}."
            )
        return 0
    n = max(len(classes or []), max(labels) + 1)
    if n < 2 and mode == "auto":
        return 0
    return n


def resolve_class_counts(
    num_samples: int,
    num_classes: int,
    counts: Sequence[int] | Mapping[Any, int] | None = None,
    weights: str | Sequence[float] | None = None,
    train_counts: Sequence[int] | None = None,
) -> list[int]:
    """Per-class numbers of synthetic images, from explicit counts or from a weighting rule.

    Args:
        num_samples: total number of images (ignored when ``counts`` is given).
        num_classes: number of classes of the model.
        counts: explicit per-class counts: a list indexed by class, or a mapping ``{class: count}`` (keys may be
            strings, as in JSON; missing classes get 0).
        weights: ``None``/``"uniform"``: equal shares; ``"proportional"``: like the real training set
            (``train_counts``); ``"inverse"``: proportional to ``1 / train_counts``; ``"balance"``: fill up the
            smaller classes first so that real + synthetic counts become as equal as possible (e.g. mostly normal
            images for PneumoniaMNIST's 388 normal / 3494 pneumonia); or a list of relative weights.
        train_counts: images per class in the real training set (for the rules that need it).

    Returns:
        ``counts`` with ``len(counts) == num_classes``.

    Raises:
        ValueError: bad counts, classes outside ``[0, num_classes)``, unknown rule or missing ``train_counts``.
    """
    if num_classes < 1:
        raise ValueError(f"per-class counts need a class-conditional model (num_classes >= 1), got {num_classes}.")
    if counts is not None:
        items = list(counts.items()) if isinstance(counts, Mapping) else list(enumerate(counts))
        out = [0] * num_classes
        for c, n in items:
            try:
                c_i, n_i = int(c), int(n)
            except (TypeError, ValueError):
                raise ValueError(f"class counts must map class indices to integers, got {c!r}: {n!r}.") from None
            if not 0 <= c_i < num_classes or n_i < 0 or n_i != n:
                raise ValueError(
                    f"class count {c!r}: {n!r} is invalid (classes 0..{num_classes - 1}, counts non-negative integers)."
                )
            out[c_i] += n_i
        return out
    rule = weights.lower() if isinstance(weights, str) else weights
    if rule is None or rule == "uniform":
        return class_counts(num_samples, num_classes=num_classes)
    if not isinstance(rule, str):
        if len(rule) != num_classes:
            raise ValueError(f"got {len(rule)} class weights for {num_classes} classes.")
        return class_counts(num_samples, weights=rule)
    if rule not in ("proportional", "inverse", "balance"):
        raise ValueError(f"unknown class weighting {weights!r}; use uniform, proportional, inverse, balance or a list.")
    if train_counts is None or len(train_counts) != num_classes:
        raise ValueError(f"class weighting {rule!r} needs the real per-class counts of the {num_classes} classes.")
    real = [int(n) for n in train_counts]
    if rule == "proportional":
        return class_counts(num_samples, weights=real)
    if rule == "inverse":
        if min(real) <= 0:
            raise ValueError(f"class weighting 'inverse' needs every class in the training set, got counts {real}.")
        return class_counts(num_samples, weights=[1.0 / n for n in real])
    out = [0] * num_classes  # balance: one image at a time to the class with the fewest real + synthetic
    heap = [(n, c) for c, n in enumerate(real)]
    heapq.heapify(heap)
    for _ in range(int(num_samples)):
        n, c = heapq.heappop(heap)
        out[c] += 1
        heapq.heappush(heap, (n + 1, c))
    return out
