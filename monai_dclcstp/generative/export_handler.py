"""Ignite handler: export a trained generative network (state dict + description) when training completes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from ..utils import dist
from .model_io import export_generative_model

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["GenerativeModelExport"]


class GenerativeModelExport:
    """At ``COMPLETED`` (and every ``interval`` epochs if set), write ``path`` and its ``.json`` description.

    See :func:`~monai_dclcstp.generative.model_io.export_generative_model`. Only the main process writes.

    Args:
        network: the network to export (unwrapped, not DDP).
        path: target ``.pt`` file, e.g. ``models/autoencoder.pt``.
        kwargs: the network's constructor arguments (recorded so the next stage rebuilds the same architecture).
        info: further description entries; a callable value is called at export time (e.g.
            ``"$lambda: float(@scale_factor)"``) and anything with ``__float__`` is stored as a float.
        interval: also export every ``interval`` epochs (0: only at the end).
        name: logger name.
    """

    def __init__(
        self,
        network: nn.Module,
        path: str | os.PathLike,
        kwargs: Mapping[str, Any],
        info: Mapping[str, Any] | None = None,
        interval: int = 0,
        name: str | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval}.")
        self.network = network
        self.path = path
        self.kwargs = dict(kwargs)
        self.info = dict(info or {})
        self.interval = int(interval)
        self.logger = logging.getLogger(name or __name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def _resolved_info(self, engine: Engine) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for k, v in self.info.items():
            info[k] = v() if isinstance(v, Callable) else v  # type: ignore[arg-type]
        info.setdefault("epochs_trained", int(engine.state.epoch))
        info.setdefault("iterations_trained", int(engine.state.iteration))
        return info

    def __call__(self, engine: Engine) -> None:
        if not dist.is_main_process():
            return
        pt, js = export_generative_model(self.network, self.path, self.kwargs, self._resolved_info(engine))
        self.logger.info("exported %s and %s (epoch %d).", pt, js, engine.state.epoch)
