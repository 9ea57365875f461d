"""Export the pretrained backbone (``encoder.pt`` + ``encoder.json``, DESIGN.md Contract 2) when training completes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..utils import dist
from ..utils.encoder_io import export_encoder
from ..utils.intensity import intensity_description
from .knn_monitor import KNN_HISTORY_ATTR

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["EncoderExport", "ENCODER_PATH_ATTR"]

#: ``engine.state`` attribute set to the written ``encoder.pt`` path
ENCODER_PATH_ATTR = "encoder_path"


def _backbone_of(network: nn.Module) -> nn.Module:
    model = network.module if isinstance(network, DistributedDataParallel) else network
    encoder = getattr(model, "online", model)
    return getattr(encoder, "backbone", encoder)


def _plain(value: Any) -> Any:
    """JSON-able copy of a config value (tuples → lists, paths → str, other objects → their repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


class EncoderExport:
    """At ``COMPLETED`` (rank 0 only), write the online backbone with :func:`~monai_dclcstp.utils.export_encoder`.

    The sidecar records the architecture (backbone, ``spatial_dims``, ``in_channels``, ``feature_channels`` from the
    backbone), ``image_size``, the ``intensity`` description (so downstream bundles rebuild the same scaling with
    :func:`~monai_dclcstp.utils.intensity_transform`), ``method`` (the given settings plus the epochs and iterations
    actually trained), the kNN monitoring results (first and last evaluation, if a :class:`KNNMonitor` ran) and the
    ``training_config``.

    Args:
        network: a :class:`~monai_dclcstp.networks.DCLCsTPNet` (optionally DDP-wrapped), a ``DualStreamEncoder`` or a
            backbone.
        path: the ``encoder.pt`` path (``encoder.json`` is written beside it).
        image_size: training view size.
        intensity: intensity description (see :func:`~monai_dclcstp.utils.intensity_description`).
        method: method settings, e.g. ``{"name": "dcl-cstp", "lambda_local": 0.5, "temperature": 0.2, ...}``.
        training_config: the run's configuration values to record.
        backbone_name, spatial_dims, in_channels: default to the backbone's own attributes.
        name: logger name (default: this module's logger).
    """

    def __init__(
        self,
        network: nn.Module,
        path: str | os.PathLike,
        image_size: int | Sequence[int],
        intensity: str | Mapping[str, Any] = "auto",
        method: Mapping[str, Any] | None = None,
        training_config: Mapping[str, Any] | None = None,
        backbone_name: str | None = None,
        spatial_dims: int | None = None,
        in_channels: int | None = None,
        name: str | None = None,
    ) -> None:
        self.network = network
        self.path = Path(path)
        self.image_size = image_size
        self.intensity = intensity_description(intensity)
        self.method = dict(method or {})
        self.training_config = dict(training_config or {})
        self.backbone_name = backbone_name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.logger = logging.getLogger(name or __name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> tuple[Path, Path] | None:
        """Write the files (rank 0) and set ``engine.state.encoder_path``."""
        if not dist.is_main_process():
            return None
        backbone = _backbone_of(self.network)
        name = self.backbone_name or getattr(backbone, "backbone_name", None)
        spatial_dims = self.spatial_dims or getattr(backbone, "spatial_dims", None)
        in_channels = self.in_channels or getattr(backbone, "in_channels", None)
        channels = getattr(backbone, "feature_channels", None)
        missing = [k for k, v in {"backbone_name": name, "spatial_dims": spatial_dims, "in_channels": in_channels,
                                  "feature_channels": channels}.items() if v is None]  # fmt: skip
        if missing:
            raise ValueError(f"cannot describe the encoder of {type(backbone).__name__}: give {missing}.")
        method = {"name": "dcl-cstp", **_plain(self.method)}
        method.update(epochs=int(engine.state.epoch), iterations=int(engine.state.iteration))
        history = getattr(engine.state, KNN_HISTORY_ATTR, None) or []
        monitoring = {"knn_start": history[0], "knn_final": history[-1]} if history else {}
        image_size = list(self.image_size) if isinstance(self.image_size, Sequence) else int(self.image_size)
        pt, js = export_encoder(
            backbone,
            self.path,
            backbone_name=str(name),
            spatial_dims=int(spatial_dims),
            in_channels=int(in_channels),
            feature_channels=list(channels),
            image_size=image_size,
            intensity=self.intensity,
            method=method,
            extra={"monitoring": _plain(monitoring), "training_config": _plain(self.training_config)},
        )
        setattr(engine.state, ENCODER_PATH_ATTR, str(pt))
        self.logger.info("exported the pretrained encoder to %s (description: %s)", pt, js)
        return pt, js
