"""Per-image segmentation report (Dice, IoU, HD95 ...) written when an evaluation completes.

The numbers come from MONAI's metric handlers run with ``save_details=True`` (``MeanDice``, ``MeanIoUHandler``,
``HausdorffDistance``), which leave one value per image and class in ``engine.state.metric_details``; this handler
pairs them with the image and mask file names of each batch and writes, atomically:

- ``metrics.json``: ``{"summary": {metric: {mean, std, median, min, max, n, n_undefined}}, "per_class": ...,
  "images": [{"image", "label", metric: value, ...}], ...}``,
- ``metrics.csv``: one row per image (``image,label,<metric>...`` and ``<metric>_<class>`` columns when there are
  several foreground classes),
- ``metrics_summary.csv``: one row per metric.

Undefined values (HD95 when the prediction or the ground truth is empty, Dice of an empty mask predicted empty) are
``null`` in JSON, empty in CSV, and left out of the summary statistics (counted in ``n_undefined``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, min_version, optional_import, string_list_all_gather

from ..utils.dist import rank
from ..utils.io import atomic_json_dump, atomic_write

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["SegmentationReportWriter", "summarize"]

logger = logging.getLogger(__name__)


def _filename(value: Any) -> str:
    if isinstance(value, MetaTensor):
        value = value.meta.get("filename_or_obj", "")
    elif isinstance(value, Mapping):
        value = value.get("filename_or_obj", "")
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return os.fspath(value) if value is not None else ""


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def summarize(values: Sequence[float | None]) -> dict[str, Any]:
    """``{mean, std, median, min, max, n, n_undefined}`` over the finite values (``None`` when there are none)."""
    ok = _finite(values)
    stats: dict[str, Any] = {"n": len(ok), "n_undefined": len(values) - len(ok)}
    if ok:
        a = np.asarray(ok, dtype=np.float64)
        stats.update(
            mean=float(a.mean()), std=float(a.std()), median=float(np.median(a)), min=float(a.min()), max=float(a.max())
        )
    else:
        stats.update(mean=None, std=None, median=None, min=None, max=None)
    return stats


class SegmentationReportWriter:
    """Write the per-image metric report of an evaluator run (see the module docstring for the files).

    Args:
        output_dir: folder of the report files (created).
        metrics: report column name → name of the metric in the evaluator (``key_val_metric`` /
            ``additional_metrics`` keys), e.g. ``{"dice": "val_mean_dice", "iou": "val_iou", "hd95": "val_hd95"}``.
            Each must be run with ``save_details=True``.
        class_names: names of the classes the metrics cover, in channel order (foreground classes when
            ``include_background=False``); per-class columns are added when there are several.
        image_key: batch key of the image (its ``MetaTensor`` gives the file name).
        label_key: batch key of the ground-truth mask, ``None`` to omit it.
        extra: entries copied into ``metrics.json`` (e.g. the checkpoint, image size).
        prefix: file name prefix: ``f"{prefix}metrics.json"`` etc.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics: Mapping[str, str],
        class_names: Sequence[str] | None = None,
        image_key: str = "image",
        label_key: str | None = "label",
        extra: Mapping[str, Any] | None = None,
        prefix: str = "",
    ) -> None:
        if not metrics:
            raise ValueError("metrics must name at least one evaluator metric.")
        self.output_dir = Path(output_dir)
        self.metrics = dict(metrics)
        self.class_names = list(class_names) if class_names is not None else None
        self.image_key = image_key
        self.label_key = label_key
        self.extra = dict(extra) if extra else {}
        self.prefix = prefix
        self._images: list[str] = []
        self._labels: list[str] = []
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (an evaluator): reset at start, collect file names per iteration, write at end."""
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._images, self._labels = [], []

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        for item in items:
            image = item.get(self.image_key) if isinstance(item, Mapping) else None
            names = [_filename(image)]
            if isinstance(image, MetaTensor) and image.is_batch:  # not decollated: one name per batch element
                names = [_filename(f) for f in image.meta.get("filename_or_obj", [])]
            self._images += names
            if self.label_key is not None:
                label = item.get(self.label_key) if isinstance(item, Mapping) else None
                lnames = [_filename(label)] * len(names)
                if isinstance(label, MetaTensor) and label.is_batch:
                    lnames = [_filename(f) for f in label.meta.get("filename_or_obj", [])]
                self._labels += lnames

    def _details(self, engine: Engine, name: str) -> np.ndarray:
        details = getattr(engine.state, "metric_details", {}) or {}
        if name not in details:
            raise KeyError(
                f"metric {name!r} has no per-image details; run it with save_details=True and check its name "
                f"(found: {sorted(details)})."
            )
        value = details[name]
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return arr.reshape(arr.shape[0], -1).astype(np.float64)

    def __call__(self, engine: Engine) -> None:
        images, labels = self._images, self._labels
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            images = string_list_all_gather(images)
            labels = string_list_all_gather(labels) if labels else labels
        per_metric = {col: self._details(engine, name) for col, name in self.metrics.items()}
        n = len(images)
        for col, arr in per_metric.items():
            if arr.shape[0] != n:
                raise RuntimeError(f"metric {col}: {arr.shape[0]} per-image values for {n} images.")
        if rank() != 0:
            return
        n_classes = max(arr.shape[1] for arr in per_metric.values()) if per_metric else 1
        names = self.class_names if self.class_names and len(self.class_names) == n_classes else None
        names = names or [f"class_{i}" for i in range(n_classes)]

        def value(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        rows = []
        for i in range(n):
            row: dict[str, Any] = {"image": images[i]}
            if self.label_key is not None:
                row["label"] = labels[i] if i < len(labels) else ""
            for col, arr in per_metric.items():
                finite = arr[i][np.isfinite(arr[i])]
                row[col] = float(finite.mean()) if finite.size else None
                if n_classes > 1:
                    for c in range(arr.shape[1]):
                        row[f"{col}_{names[c]}"] = value(arr[i, c])
            rows.append(row)
        report: dict[str, Any] = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "num_images": n,
            "summary": {col: summarize([r[col] for r in rows]) for col in per_metric},
            **self.extra,
        }
        if n_classes > 1:
            report["per_class"] = {
                names[c]: {col: summarize([value(x) for x in arr[:, c]]) for col, arr in per_metric.items()}
                for c in range(n_classes)
            }
        report["images"] = rows
        self.output_dir.mkdir(parents=True, exist_ok=True)
        atomic_json_dump(report, self.output_dir / f"{self.prefix}metrics.json")
        self._write_csv(self.output_dir / f"{self.prefix}metrics.csv", rows)
        summary_rows = [{"metric": col, **stats} for col, stats in report["summary"].items()]
        self._write_csv(self.output_dir / f"{self.prefix}metrics_summary.csv", summary_rows)
        self.report = report
        text = ", ".join(
            f"{col} {s['mean']:.4f}" if s["mean"] is not None else f"{col} n/a" for col, s in report["summary"].items()
        )
        logger.info("segmentation report (%d images): %s -> %s", n, text, self.output_dir)

    @staticmethod
    def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
        fields: list[str] = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields or ["image"], lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in r.items()})

        def _write(tmp: Path) -> None:
            tmp.write_text(buf.getvalue(), encoding="utf-8")

        atomic_write(path, _write, overwrite=True)
