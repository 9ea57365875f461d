"""Image grids in TensorBoard: reconstructions next to their inputs, or samples of the diffusion model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from ..utils import dist

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["image_grid", "TensorBoardImageGrid"]


def _as_2d(images: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as is; ``(B, C, H, W, D)`` → the central slice of the last axis."""
    images = images.as_tensor() if hasattr(images, "as_tensor") else images
    if images.ndim == 5:
        return images[..., images.shape[-1] // 2]
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W[, D]), got shape {tuple(images.shape)}.")
    return images


def image_grid(
    rows: torch.Tensor | Sequence[torch.Tensor],
    max_images: int = 8,
    intensity_range: Sequence[float] = (0.0, 1.0),
    padding: int = 2,
) -> torch.Tensor:
    """Tile batches of images into one ``(C, H_grid, W_grid)`` image in ``[0, 1]`` (C = 1 grey or 3 RGB).

    Args:
        rows: one batch ``(B, C, H, W[, D])`` (one row of its first ``max_images`` images), or several batches of
            the same image size, one row each (e.g. inputs, reconstructions). 3D images show their central slice
            along the last axis; channel counts other than 1 or 3 show channel 0.
        max_images: images per row.
        intensity_range: the range mapped to ``[0, 1]`` (values outside are clipped).
        padding: pixels between images (filled with 0).
    """
    batches = [rows] if isinstance(rows, torch.Tensor) else list(rows)
    if not batches:
        raise ValueError("image_grid needs at least one batch of images.")
    lo, hi = float(intensity_range[0]), float(intensity_range[1])
    if not hi > lo:
        raise ValueError(f"intensity_range must be (low, high) with high > low, got {tuple(intensity_range)}.")
    prepared = []
    for b in batches:
        b = _as_2d(b).detach().float().cpu()[:max_images]
        if b.shape[1] not in (1, 3):
            b = b[:, :1]
        prepared.append(((b - lo) / (hi - lo)).clamp(0, 1))
    channels = max(b.shape[1] for b in prepared)
    h, w = prepared[0].shape[-2:]
    if any(b.shape[-2:] != (h, w) for b in prepared):
        raise ValueError(f"all rows must have the same image size, got {[tuple(b.shape[-2:]) for b in prepared]}.")
    ncol = max(b.shape[0] for b in prepared)
    grid = torch.zeros(channels, len(prepared) * (h + padding) + padding, ncol * (w + padding) + padding)
    for r, b in enumerate(prepared):
        b = b.expand(-1, channels, -1, -1)
        for c in range(b.shape[0]):
            y, x = padding + r * (h + padding), padding + c * (w + padding)
            grid[:, y : y + h, x : x + w] = b[c]
    return grid


class TensorBoardImageGrid:
    """Every ``interval`` epochs, log ``image_grid(images_fn(engine))`` to TensorBoard under ``tag``.

    Args:
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter``.
        images_fn: ``engine -> batch or list of batches`` (e.g. ``lambda e: [e.state.output['image'],
            e.state.output['pred']]`` for reconstructions, or a
            :class:`~monai_dclcstp.generative.sample_preview.DiffusionSamplePreview`).
        tag: TensorBoard tag.
        interval: epochs between grids.
        max_images: images per row.
        intensity_range: the training intensity range (mapped to black..white).
        global_step_transform: ``engine -> step`` (default: the engine's epoch; an evaluator run by MONAI's
            ``ValidationHandler`` has the trainer's epoch).
    """

    def __init__(
        self,
        summary_writer: Any,
        images_fn: Callable[[Engine], torch.Tensor | Sequence[torch.Tensor]],
        tag: str = "images",
        interval: int = 1,
        max_images: int = 8,
        intensity_range: Sequence[float] = (0.0, 1.0),
        global_step_transform: Callable[[Engine], int] | None = None,
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}.")
        self.summary_writer = summary_writer
        self.images_fn = images_fn
        self.tag = tag
        self.interval = int(interval)
        self.max_images = int(max_images)
        self.intensity_range = tuple(intensity_range)
        self.global_step_transform = global_step_transform or (lambda engine: engine.state.epoch)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        step = int(self.global_step_transform(engine))
        if step % self.interval != 0 or not dist.is_main_process():
            return
        grid = image_grid(self.images_fn(engine), self.max_images, self.intensity_range)
        self.summary_writer.add_image(self.tag, grid, step)
        self.summary_writer.flush()
