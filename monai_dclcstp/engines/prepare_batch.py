"""Batch parsing for two-view contrastive pretraining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import PrepareBatch

__all__ = ["PrepareTwoViewBatch"]


class PrepareTwoViewBatch(PrepareBatch):
    """Take the two views and their geometries from a collated batch and move them to ``device``.

    Returns ``((view1, view2), (geometry1, geometry2))`` with views ``(B, C, *spatial)`` and geometries
    ``(B, 3, N_dims)``; geometries are ``None`` when absent from the batch (the dense loss then matches tokens by
    feature similarity).

    Args:
        view_keys: keys of the two views (as written by :class:`~monai_dclcstp.transforms.TwoViewAugmentd`).
        geometry_keys: keys of their geometries.
    """

    def __init__(
        self,
        view_keys: Sequence[str] = ("view1", "view2"),
        geometry_keys: Sequence[str] = ("geometry1", "geometry2"),
    ) -> None:
        self.view_keys = tuple(view_keys)
        self.geometry_keys = tuple(geometry_keys)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor | None, torch.Tensor | None]]:
        missing = [k for k in self.view_keys if k not in batchdata]
        if missing:
            raise KeyError(f"batch has no view key(s) {missing}; available keys: {sorted(batchdata)}.")

        def move(x: Any) -> torch.Tensor:
            x = torch.as_tensor(x)
            if hasattr(x, "as_tensor"):  # MetaTensor → plain tensor: the contrastive step needs no metadata
                x = x.as_tensor()
            return x.to(device=device, non_blocking=non_blocking, **kwargs)

        views = (move(batchdata[self.view_keys[0]]), move(batchdata[self.view_keys[1]]))
        if all(k in batchdata for k in self.geometry_keys):
            geometries = (move(batchdata[self.geometry_keys[0]]), move(batchdata[self.geometry_keys[1]]))
        else:
            geometries = (None, None)
        return views, geometries
