"""A short end-of-run summary: where everything was written, how long it took, the final kNN accuracy."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

from ..utils import dist
from ..utils.io import atomic_json_dump
from .encoder_export import ENCODER_PATH_ATTR
from .knn_monitor import KNN_HISTORY_ATTR

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["RunSummary"]


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


class RunSummary:
    """At ``COMPLETED`` (rank 0), log a summary and write it as JSON (``summary_file`` in ``output_dir``).

    The summary holds: epochs and iterations done, the training time (``STARTED`` → ``COMPLETED``) and the time since
    this handler was created (≈ since the bundle was parsed), the checkpoint files, the exported encoder and its
    sidecar, the TensorBoard folder, and the first and last kNN evaluations.

    Args:
        output_dir: folder of the run's outputs (checkpoints are listed from it).
        tensorboard_dir: TensorBoard log folder, if any.
        summary_file: name of the JSON file written in ``output_dir`` (``None``: don't write).
        name: logger name (default: this module's logger).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        tensorboard_dir: str | os.PathLike | None = None,
        summary_file: str | None = "run_summary.json",
        name: str | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self.summary_file = summary_file
        self.logger = logging.getLogger(name or __name__)
        self.created = time.perf_counter()
        self.started: float | None = None
        self.summary: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.COMPLETED, self)

    def _start(self, engine: Engine) -> None:
        self.started = time.perf_counter()

    def __call__(self, engine: Engine) -> dict[str, Any]:
        now = time.perf_counter()
        history = getattr(engine.state, KNN_HISTORY_ATTR, None) or []
        encoder = getattr(engine.state, ENCODER_PATH_ATTR, None)
        checkpoints = sorted(str(p) for p in self.output_dir.glob("checkpoint*.pt"))
        self.summary = {
            "epochs": int(engine.state.epoch),
            "iterations": int(engine.state.iteration),
            "training_seconds": round(now - (self.started or self.created), 1),
            "seconds_since_start": round(now - self.created, 1),
            "output_dir": str(self.output_dir),
            "checkpoints": checkpoints,
            "encoder": encoder,
            "encoder_info": str(Path(encoder).with_suffix(".json")) if encoder else None,
            "tensorboard_dir": str(self.tensorboard_dir) if self.tensorboard_dir else None,
            "knn_start": history[0] if history else None,
            "knn_final": history[-1] if history else None,
        }
        if not dist.is_main_process():
            return self.summary
        if self.summary_file:
            self.summary["summary_file"] = str(self.output_dir / self.summary_file)
            atomic_json_dump(self.summary, self.output_dir / self.summary_file)
        lines = [
            f"pretraining finished: {self.summary['epochs']} epochs, {self.summary['iterations']} iterations in "
            f"{_fmt(self.summary['training_seconds'])} ({_fmt(self.summary['seconds_since_start'])} including setup)",
            f"  outputs:      {self.output_dir}",
            f"  encoder:      {encoder or '(not exported)'}",
        ]
        if encoder:
            lines.append(f"  description:  {self.summary['encoder_info']}")
        if checkpoints:
            lines.append(f"  checkpoints:  {', '.join(Path(c).name for c in checkpoints)}")
        if self.tensorboard_dir:
            lines.append(f"  TensorBoard:  tensorboard --logdir {self.tensorboard_dir}")
        if history:
            first, last = history[0], history[-1]
            lines.append(
                f"  kNN accuracy: {first['accuracy']:.4f} (epoch {first['epoch']}) -> {last['accuracy']:.4f} "
                f"(epoch {last['epoch']}); balanced {first['balanced_accuracy']:.4f} -> "
                f"{last['balanced_accuracy']:.4f}"
            )
        if self.summary_file:
            lines.append(f"  summary:      {self.summary['summary_file']}")
        self.logger.info("\n".join(lines))
        return self.summary
