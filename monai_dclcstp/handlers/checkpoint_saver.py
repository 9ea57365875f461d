"""MONAI ``CheckpointSaver`` whose files are written atomically (temp file + rename)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AtomicCheckpointSaver"]


class AtomicCheckpointSaver(CheckpointSaver):
    """:class:`monai.handlers.CheckpointSaver` with atomic writes: a crash while saving never leaves a truncated file.

    MONAI 1.6 creates Ignite's ``DiskSaver`` with ``atomic=False`` (so that files get group/other read permission);
    Ignite's atomic mode writes to a temporary file in the same folder, renames it over the target and then adds
    group/other read permission itself, so both properties hold.

    Args:
        engine_key: also save the engine it is attached to under this key (e.g. ``"trainer"``, so that epoch and
            iteration are restored on resume) without a circular reference in the bundle config; ``None`` to skip.
        args, kwargs: those of :class:`monai.handlers.CheckpointSaver`.
    """

    def __init__(self, *args, engine_key: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.engine_key = engine_key
        for checkpoint in self._checkpoints():
            handler = getattr(checkpoint, "save_handler", None)
            if handler is not None and hasattr(handler, "_atomic"):
                handler._atomic = True

    def _checkpoints(self) -> list:
        return [
            c for c in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint) if c is not None
        ]

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
            for checkpoint in self._checkpoints():
                checkpoint.to_save[self.engine_key] = engine
        super().attach(engine)
