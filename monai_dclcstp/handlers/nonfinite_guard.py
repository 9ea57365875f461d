"""Stop (or skip the step) when the training loss is NaN or infinite, before the weights are touched."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from ..engines.pretrainer import SKIP_STEP_KEY
from .collective import any_rank

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["NonFiniteLossGuard", "NonFiniteLossError"]

ACTIONS = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _value(x: Any) -> float:
    try:
        return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)
    except (TypeError, ValueError):
        return math.nan


class NonFiniteLossGuard:
    """Check the loss at ``IterationEvents.LOSS_COMPLETED`` (before the backward pass) and react to NaN/Inf.

    :class:`~monai_dclcstp.engines.DCLCsTPTrainer` puts the loss and its parts in ``engine.state.output`` before
    firing ``LOSS_COMPLETED``, so the guard sees a bad loss while the weights are still intact:

    - ``action="stop"``: raise :class:`NonFiniteLossError` naming the epoch, iteration and the three loss values,
      with the usual remedies. MONAI's ``CheckpointSaver`` (``save_final=True``) then saves the still-good state, so the
      run can be resumed with a lower learning rate.
    - ``action="skip"``: veto this step (no backward, no optimiser or momentum update) with a warning, and stop as
      above after ``max_consecutive`` bad steps in a row. Note that the loss has already put this step's keys into the
      negative queue.

    Steps the trainer skipped itself because the gradient norm was not finite count as bad steps too. Under
    ``torch.distributed`` the ranks agree (one all-reduce of a flag per step): a bad loss on any rank stops or skips
    the step on every rank, so no rank is left waiting for the others' gradients.

    Args:
        action: ``"stop"`` or ``"skip"``.
        max_consecutive: with ``"skip"``, stop after this many consecutive bad steps.
        name: logger name (default: this module's logger).
    """

    def __init__(self, action: str = "stop", max_consecutive: int = 10, name: str | None = None) -> None:
        action = str(action).lower()
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}.")
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be positive, got {max_consecutive}.")
        self.action = action
        self.max_consecutive = int(max_consecutive)
        self.logger = logging.getLogger(name or __name__)
        self.consecutive = 0
        self.skipped = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._after_step)

    def _raise(self, engine: Engine, what: str) -> None:
        where = f"at epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        # the vetoed step did not happen: the checkpoint written on the way out must not count it as done
        engine.state.iteration = max(0, engine.state.iteration - 1)
        raise NonFiniteLossError(
            f"{what} {where}. Training stopped before this "
            "step changed the weights (the bundles save them as checkpoint_final.pt). Usual remedies: a lower lr (--lr), a longer warmup "
            "(--warmup_epochs), gradient clipping (--grad_clip_norm), a higher temperature, or checking the input "
            "images for NaN/constant values; resume with --resume true. To skip bad steps instead, set "
            "--nonfinite_action skip."
        )

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output or {}
        values = {k: _value(output.get(k)) for k in (CommonKeys.LOSS, "loss_global", "loss_local") if k in output}
        bad_here = not all(math.isfinite(v) for v in values.values())
        if not any_rank(bad_here):  # under torch.distributed all ranks decide together (or DDP would hang)
            return
        what = "non-finite loss (" + ", ".join(f"{k}={v}" for k, v in values.items()) + ")"
        if not bad_here:
            what = f"non-finite loss on another rank (here: {', '.join(f'{k}={v}' for k, v in values.items())})"
        if self.action == "stop":
            self._raise(engine, what)
        self._count_bad(engine, what)
        output[SKIP_STEP_KEY] = True

    def _count_bad(self, engine: Engine, what: str) -> None:
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive >= self.max_consecutive:
            self._raise(engine, f"{what}; {self.consecutive} bad steps in a row")
        self.logger.warning(
            "%s at epoch %d, iteration %d: step skipped (%d in a row, %d in total).",
            what,
            engine.state.epoch,
            engine.state.iteration,
            self.consecutive,
            self.skipped,
        )

    def _after_step(self, engine: Engine) -> None:
        output = engine.state.output or {}
        if not output.get(SKIP_STEP_KEY, False):
            self.consecutive = 0
            return
        grad_norm = _value(output.get("grad_norm"))
        losses_finite = math.isfinite(_value(output.get(CommonKeys.LOSS)))
        if losses_finite and not math.isfinite(grad_norm):  # the trainer skipped the step itself
            if self.action == "stop":
                self._raise(engine, f"non-finite gradient norm ({grad_norm})")
            self._count_bad(engine, f"non-finite gradient norm ({grad_norm})")
