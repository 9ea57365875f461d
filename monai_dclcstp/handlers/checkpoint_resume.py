"""Resume training from the newest readable checkpoint of a folder (``resume`` key of the bundles)."""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["LatestCheckpointLoader", "find_checkpoints"]

_NUMBER = re.compile(r"=(\d+)\.pt$")


def find_checkpoints(directory: str | os.PathLike, prefix: str = "checkpoint") -> list[Path]:
    """``<prefix>*.pt`` files of ``directory``, newest first (modification time, then the number in the name)."""
    folder = Path(directory)
    if not folder.is_dir():
        return []

    def key(p: Path) -> tuple[float, int]:
        m = _NUMBER.search(p.name)
        return p.stat().st_mtime, int(m.group(1)) if m else -1

    return sorted((p for p in folder.glob(f"{prefix}*.pt") if p.is_file()), key=key, reverse=True)


def _intact(path: Path) -> str | None:
    """``None`` when ``path`` is a complete ``torch.save`` zip archive (CRC of every member checked), else why not."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return None if bad is None else f"corrupt member {bad}"
    except (zipfile.BadZipFile, OSError) as e:
        return f"not a complete torch.save archive ({e})"


class LatestCheckpointLoader:
    """At ``STARTED``, restore ``load_dict`` from the newest intact checkpoint in ``directory``, with MONAI's loader.

    Candidates are the ``<prefix>*.pt`` files (MONAI ``CheckpointSaver`` names: ``checkpoint_epoch=N.pt``,
    ``checkpoint_final.pt`` ...), newest first; a truncated or unreadable one is skipped with a warning and the next
    one is tried, so an interrupted save never blocks a resume. Loading is done by
    :class:`monai.handlers.CheckpointLoader` (``torch.load(weights_only=True)``, then Ignite's
    ``Checkpoint.load_objects``), which also restores the trainer's epoch and iteration: the run continues with the
    next epoch. With no checkpoint the run starts from scratch (logged), unless ``required``.

    Args:
        directory: folder of the checkpoints.
        load_dict: objects to restore, e.g. ``{"network": net, "optimizer": opt, "lr_scheduler": sched,
            "loss": loss, "trainer": trainer}`` (the ``save_dict`` of the saver).
        prefix: checkpoint file name prefix.
        map_location: passed to ``torch.load`` (e.g. the training device).
        strict: require every key of the state dicts to match.
        required: raise ``FileNotFoundError`` when no checkpoint exists.
        engine_key: also restore the engine this handler is attached to from this key of the checkpoint (written by
            :class:`AtomicCheckpointSaver` with the same ``engine_key``); ``None`` to skip.
        name: logger name (default: this module's logger).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        load_dict: Mapping[str, Any],
        prefix: str = "checkpoint",
        map_location: Any = None,
        strict: bool = True,
        required: bool = False,
        engine_key: str | None = "trainer",
        name: str | None = None,
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name at least one object to restore.")
        self.directory = Path(directory)
        self.load_dict = dict(load_dict)
        self.prefix = prefix
        self.map_location = str(map_location) if isinstance(map_location, torch.device) else map_location
        self.strict = strict
        self.required = required
        self.engine_key = engine_key
        self.logger = logging.getLogger(name or __name__)
        self.loaded_path: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        candidates = find_checkpoints(self.directory, self.prefix)
        load_dict = dict(self.load_dict)
        if self.engine_key is not None:
            load_dict[self.engine_key] = engine
        for path in candidates:
            problem = _intact(path)
            if problem is None:
                try:
                    loader = CheckpointLoader(
                        str(path), dict(load_dict), map_location=self.map_location, strict=self.strict
                    )
                    loader.logger = self.logger
                    loader(engine)
                except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as e:
                    problem = f"cannot be restored ({type(e).__name__}: {e})"
            if problem is not None:
                self.logger.warning("skipping checkpoint %s: %s; trying an older one.", path, problem)
                continue
            self.loaded_path = path
            self.logger.info(
                "resumed from %s: epoch %d, iteration %d done; continuing to epoch %d.",
                path,
                engine.state.epoch,
                engine.state.iteration,
                engine.state.max_epochs,
            )
            return
        what = "no usable checkpoint" if candidates else "no checkpoint"
        if self.required:
            raise FileNotFoundError(f"resume: {what} ({self.prefix}*.pt) in {self.directory}.")
        self.logger.info("resume: %s (%s*.pt) in %s; starting from scratch.", what, self.prefix, self.directory)
