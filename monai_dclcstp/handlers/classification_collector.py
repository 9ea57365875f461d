"""Ignite handler that collects per-image class probabilities, labels and file names over an evaluator's run."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.utils import (
    IgniteInfo,
    ImageMetaKey,
    evenly_divisible_all_gather,
    min_version,
    optional_import,
    string_list_all_gather,
)

from ..utils.dist import is_main_process, world_size

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["ClassificationCollector"]

NO_LABEL = -1


def _filename(item: Mapping, image_key: str) -> str:
    image = item.get(image_key)
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and meta.get(ImageMetaKey.FILENAME_OR_OBJ):
        return str(meta[ImageMetaKey.FILENAME_OR_OBJ])
    if isinstance(image, str):
        return image
    meta_dict = item.get(f"{image_key}_meta_dict")
    if isinstance(meta_dict, Mapping) and meta_dict.get(ImageMetaKey.FILENAME_OR_OBJ):
        return str(meta_dict[ImageMetaKey.FILENAME_OR_OBJ])
    return ""


def _label_index(label: Any, num_classes: int) -> int:
    if label is None:
        return NO_LABEL
    t = torch.as_tensor(label).detach().reshape(-1)
    if t.numel() == 0:
        return NO_LABEL
    if t.numel() == 1:
        return int(t.item())
    if t.numel() == num_classes:  # one-hot
        return int(t.argmax().item())
    raise ValueError(f"cannot read a class index from a label of shape {tuple(torch.as_tensor(label).shape)}.")


class ClassificationCollector:
    """Collect ``(probabilities, label, file name)`` per image from an engine's decollated output.

    Attached to a MONAI evaluator whose postprocessing turns ``pred`` into class probabilities (e.g.
    ``Activationsd(keys="pred", softmax=True)``). Buffers reset when an epoch starts; when it completes they are
    gathered from all ranks (``torch.distributed``) and :meth:`finalize` is called on the main rank. Subclasses write
    reports from there; the collected arrays stay available as :attr:`probs`, :attr:`labels`, :attr:`filenames`.

    Args:
        pred_key: output key of the per-image probabilities ``(K,)``.
        label_key: output key of the label (class index, ``(1,)`` or one-hot ``(K,)``; missing → -1).
        image_key: output/batch key whose ``meta["filename_or_obj"]`` names the image.
        softmax: apply softmax to ``pred`` (when the evaluator outputs logits).
    """

    def __init__(
        self, pred_key: str = "pred", label_key: str = "label", image_key: str = "image", softmax: bool = False
    ) -> None:
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.softmax = softmax
        self.logger = logging.getLogger(type(self).__name__)
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        """Empty the buffers."""
        self._probs: list[torch.Tensor] = []
        self._labels: list[int] = []
        self._names: list[str] = []
        self.probs = np.zeros((0, 0))
        self.labels = np.zeros(0, dtype=np.int64)
        self.filenames: list[str] = []

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (EPOCH_STARTED, ITERATION_COMPLETED, EPOCH_COMPLETED)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def __call__(self, engine: Engine) -> None:
        """Append the images of the current iteration."""
        output = engine.state.output
        batch = engine.state.batch
        if isinstance(output, Mapping):  # evaluator run with decollate=False
            output = decollate_batch(output)
        if isinstance(batch, Mapping):
            batch = decollate_batch(batch)
        batch = batch if isinstance(batch, Sequence) and len(batch) == len(output) else [{}] * len(output)
        for item, source in zip(output, batch):
            pred = torch.as_tensor(item[self.pred_key]).detach().float().reshape(-1).cpu()
            if self.softmax:
                pred = torch.softmax(pred, dim=0)
            self._probs.append(pred)
            label = item.get(self.label_key)
            if label is None and isinstance(source, Mapping):
                label = source.get(self.label_key)
            self._labels.append(_label_index(label, pred.numel()))
            name = _filename(item, self.image_key) or (
                _filename(source, self.image_key) if isinstance(source, Mapping) else ""
            )
            self._names.append(name)

    def _completed(self, engine: Engine) -> None:
        probs = torch.stack(self._probs) if self._probs else torch.zeros((0, 0))
        labels = torch.tensor(self._labels, dtype=torch.long)
        names = list(self._names)
        if world_size() > 1:
            probs = evenly_divisible_all_gather(probs, concat=True)
            labels = evenly_divisible_all_gather(labels, concat=True)
            names = string_list_all_gather(names)
        self.probs = probs.numpy().astype(np.float64)
        self.labels = labels.numpy().astype(np.int64)
        self.filenames = names
        if is_main_process():
            self.finalize(engine)

    @property
    def has_labels(self) -> bool:
        """Whether every collected image has a label."""
        return len(self.labels) > 0 and bool((self.labels != NO_LABEL).all())

    def finalize(self, engine: Engine) -> None:
        """Called on the main rank once the epoch's outputs are gathered; subclasses write their files here."""
