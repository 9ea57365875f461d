"""Class imbalance for classification training: class counts, weighted cross-entropy weights, a weighted sampler.

The classification bundle's ``class_weighting`` key picks one remedy:

- ``"none"``: plain cross-entropy, uniform shuffling;
- ``"loss"``: cross-entropy weighted by :func:`class_weights` (inverse class frequency, mean 1);
- ``"sampler"``: :func:`balanced_sampler` draws every class equally often (with replacement), unweighted loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import WeightedRandomSampler

__all__ = [
    "CLASS_WEIGHTING_MODES",
    "check_class_weighting",
    "class_counts",
    "class_weights",
    "sample_weights",
    "balanced_sampler",
]

CLASS_WEIGHTING_MODES = ("none", "loss", "sampler")


def check_class_weighting(mode: str | None) -> str:
    """Normalise and check a ``class_weighting`` value (``None``/``False`` mean ``"none"``).

    Raises:
        ValueError: not one of :data:`CLASS_WEIGHTING_MODES`.
    """
    value = "none" if mode in (None, False, "", "null") else str(mode).strip().lower()
    if value not in CLASS_WEIGHTING_MODES:
        raise ValueError(f"class_weighting must be one of {', '.join(CLASS_WEIGHTING_MODES)}; got {mode!r}.")
    return value


def _label(item: Mapping, index: int) -> int:
    label = item.get("label")
    if isinstance(label, bool) or not isinstance(label, int):
        image = item.get("image", f"item {index}")
        raise ValueError(
            f"{image}: label {label!r} is not a single int class index (multi-label items are not supported by the "
            "classification bundle)."
        )
    return label


def class_counts(items: Sequence[Mapping], num_classes: int) -> list[int]:
    """Number of items of each class ``0..num_classes-1``.

    Raises:
        ValueError: an item has no int label, or a label outside ``0..num_classes-1`` (naming the image).
    """
    counts = [0] * int(num_classes)
    for i, item in enumerate(items):
        label = _label(item, i)
        if not 0 <= label < num_classes:
            raise ValueError(f"{item.get('image', f'item {i}')}: label {label} is outside 0..{num_classes - 1}.")
        counts[label] += 1
    return counts


def class_weights(items: Sequence[Mapping], num_classes: int, mode: str = "loss") -> torch.Tensor | None:
    """Cross-entropy class weights ``n / (k * n_c)`` (inverse frequency, mean 1 over the present classes).

    Classes absent from ``items`` get weight 0 (they cannot occur as targets anyway).

    Args:
        items: the training items.
        num_classes: number of classes.
        mode: a ``class_weighting`` value; weights are returned only for ``"loss"``.

    Returns:
        float tensor ``(num_classes,)``, or ``None`` when ``mode`` is not ``"loss"``.
    """
    if check_class_weighting(mode) != "loss":
        return None
    counts = torch.tensor(class_counts(items, num_classes), dtype=torch.float32)
    present = counts > 0
    weights = torch.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def sample_weights(items: Sequence[Mapping], num_classes: int) -> torch.Tensor:
    """Per-item sampling weights ``1 / n_class`` (each class drawn equally often), float64 ``(len(items),)``.

    Also the ``weights`` of MONAI's ``DistributedWeightedRandomSampler`` in multi-GPU runs.
    """
    counts = class_counts(items, num_classes)
    return torch.tensor([1.0 / counts[_label(item, i)] for i, item in enumerate(items)], dtype=torch.double)


def balanced_sampler(
    items: Sequence[Mapping],
    num_classes: int,
    mode: str = "sampler",
    seed: int = 0,
    num_samples: int | None = None,
) -> WeightedRandomSampler | None:
    """A seeded sampler that draws each present class equally often (items weighted by ``1 / n_class``).

    Args:
        items: the training items (the dataset's order).
        num_classes: number of classes.
        mode: a ``class_weighting`` value; a sampler is returned only for ``"sampler"``.
        seed: seed of the sampler's generator.
        num_samples: draws per epoch (default ``len(items)``).

    Returns:
        a ``WeightedRandomSampler`` (use it with ``shuffle=False``), or ``None`` when ``mode`` is not ``"sampler"``.
    """
    if check_class_weighting(mode) != "sampler":
        return None
    weights = sample_weights(items, num_classes)
    generator = torch.Generator().manual_seed(int(seed))
    n = len(items) if num_samples is None else int(num_samples)
    return WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
