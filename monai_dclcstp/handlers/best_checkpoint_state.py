"""Resume support for "best model" checkpoints: the best key-metric score survives an interrupted run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.handlers import CheckpointSaver

__all__ = ["BestCheckpointState"]


class BestCheckpointState:
    """``state_dict``/``load_state_dict`` view of a :class:`monai.handlers.CheckpointSaver`'s best-metric record.

    A ``CheckpointSaver(save_key_metric=True)`` on the validation evaluator keeps the best score in memory only, so
    after a resume the first validation would overwrite ``model.pt`` even when it is worse. Put this object in the
    trainer checkpoint's ``save_dict``/``load_dict`` (e.g. ``"best_model": "$monai_dclcstp.handlers.
    best_checkpoint_state.BestCheckpointState(@validate#best_saver)"``) and the record is saved and restored with the
    trainer. Scores are stored as Python floats, so the checkpoint still loads with ``torch.load(weights_only=True)``
    (MONAI metrics often return numpy scalars, which ``weights_only`` refuses).

    Args:
        saver: the evaluator's checkpoint saver with ``save_key_metric=True``.

    Raises:
        ValueError: ``saver`` does not save by key metric.
    """

    def __init__(self, saver: CheckpointSaver) -> None:
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise ValueError("BestCheckpointState needs a CheckpointSaver created with save_key_metric=True.")
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        """``{"_saved": [[score, filename], ...]}`` with plain floats and strings."""
        saved = self.saver._key_metric_checkpoint._saved
        return {"_saved": [[float(item.priority), str(item.filename)] for item in saved]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the record (the ``_saved`` list of Ignite's ``Checkpoint``)."""
        self.saver.load_state_dict({"_saved": [(float(p), str(f)) for p, f in state_dict["_saved"]]})
