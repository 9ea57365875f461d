"""Ignite progress bar showing the per-iteration losses (rank 0 only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from ..utils import dist

ProgressBar, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "ProgressBar")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["LossProgressBar"]


class LossProgressBar:
    """Attach Ignite's ``ProgressBar`` (tqdm) with the values ``keys`` of ``engine.state.output`` as its postfix.

    Args:
        keys: output entries to show (scalars; missing ones are left out).
        enabled: ``False`` attaches nothing (e.g. for log files).
        persist: keep each epoch's finished bar on screen.
        kwargs: further ``ProgressBar`` arguments (``bar_format``, ``ncols`` ...).
    """

    def __init__(
        self,
        keys: Sequence[str] = ("loss", "loss_global", "loss_local"),
        enabled: bool = True,
        persist: bool = False,
        **kwargs: Any,
    ) -> None:
        self.keys = tuple(keys)
        self.enabled = enabled
        self.persist = persist
        self.kwargs = kwargs
        self.bar: Any = None

    def _postfix(self, output: Any) -> dict[str, float]:
        if not isinstance(output, dict):
            return {}
        out = {}
        for k in self.keys:
            v = output.get(k)
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = float(v.detach())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
                out[k] = float(v)
        return out

    def attach(self, engine: Engine) -> None:
        if not self.enabled or not dist.is_main_process():
            return
        self.bar = ProgressBar(persist=self.persist, **self.kwargs)
        self.bar.attach(engine, output_transform=self._postfix)
