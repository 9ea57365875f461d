"""Mix synthetic images (from the LDM bundle's datalist, Contract 1 with ``"synthetic": true``) into a training list.

From the pretraining bundle config::

    "synthetic_items": "$monai_dclcstp.utils.load_synthetic_items(@synthetic_datalist, spatial_dims=@spatial_dims,
                        in_channels=@in_channels, skip_invalid=@skip_invalid)",
    "train#items": "$monai_dclcstp.utils.mix_synthetic(@real_items, @synthetic_items, @synthetic_ratio, seed=@seed)",
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["load_synthetic_items", "mix_synthetic", "synthetic_fraction"]

logger = logging.getLogger(__name__)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in ("", "None", "null"))


def load_synthetic_items(
    synthetic_datalist: str | os.PathLike | None,
    *,
    spatial_dims: int,
    in_channels: int,
    skip_invalid: bool = False,
) -> list[dict]:
    """Items of a synthetic datalist (every split), flagged ``synthetic=True`` and checked before training.

    Args:
        synthetic_datalist: path of the datalist JSON written by the LDM bundle; empty/``None`` returns ``[]``.
        spatial_dims, in_channels: as configured for the network (the pre-flight check uses them).
        skip_invalid: drop bad files with a warning instead of raising.

    Raises:
        monai_dclcstp.data.DatalistError: the file is missing or malformed, or (unless ``skip_invalid``) an image is bad.
    """
    if _is_empty(synthetic_datalist):
        return []
    from ..data import load_datalist, validate_datalist

    datalist = load_datalist(synthetic_datalist, None, task="pretrain", val_fraction=0.0, stratify_key=None)
    items = [
        dict(it, synthetic=True) for split in ("training", "validation", "test") for it in datalist.get(split) or []
    ]
    checked = validate_datalist(
        items, spatial_dims=spatial_dims, in_channels=in_channels, task="pretrain", skip_invalid=skip_invalid
    )
    return list(checked.items)


def mix_synthetic(
    real: Sequence[Mapping],
    synthetic: Sequence[Mapping],
    ratio: float = 0.5,
    seed: int = 0,
) -> list[dict]:
    """Training list where a fraction ``ratio`` of the items is synthetic; every item carries a ``synthetic`` flag.

    With ``n`` real items, ``round(n * ratio / (1 - ratio))`` synthetic items are drawn (seeded, without replacement);
    when fewer are available all are used and a warning says which fraction was reached. Real items keep their own
    ``synthetic`` flag (default ``False``); synthetic ones are set to ``True``.

    Args:
        real: the real training items.
        synthetic: candidate synthetic items.
        ratio: wanted synthetic fraction of the mixed list, in ``[0, 1)``; ``0`` uses no synthetic item.
        seed: seed of the draw.

    Raises:
        ValueError: ``ratio`` outside ``[0, 1)``.
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ValueError(f"synthetic_ratio must be in [0, 1), got {ratio}.")
    out = [dict(it, synthetic=bool(it.get("synthetic", False))) for it in real]
    if not synthetic or ratio == 0:
        return out
    wanted = int(round(len(out) * ratio / (1.0 - ratio)))
    n = min(wanted, len(synthetic))
    if n < wanted:
        warnings.warn(
            f"synthetic_ratio={ratio} needs {wanted} synthetic items for {len(out)} real ones, but only "
            f"{len(synthetic)} are available; using all of them (synthetic fraction {n / (n + len(out)):.2f}).",
            stacklevel=2,
        )
    chosen = np.random.RandomState(seed).choice(len(synthetic), size=n, replace=False)
    out += [dict(synthetic[int(i)], synthetic=True) for i in sorted(chosen)]
    logger.info("training items: %d real + %d synthetic (fraction %.2f)", len(real), n, n / max(len(out), 1))
    return out


def synthetic_fraction(items: Sequence[Mapping]) -> float:
    """Fraction of ``items`` flagged ``synthetic`` (0 for an empty list)."""
    return sum(bool(it.get("synthetic", False)) for it in items) / len(items) if items else 0.0
