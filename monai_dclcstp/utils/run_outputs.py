"""Protect the results of an earlier run: a new training run must not replace them unless asked to."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from . import dist

__all__ = ["RUN_OUTPUT_PATTERNS", "earlier_run_outputs", "check_earlier_run_outputs"]

logger = logging.getLogger(__name__)

#: files that make up the results of a pretraining run (TensorBoard logs and data caches are left out: they append)
RUN_OUTPUT_PATTERNS = ("encoder.pt", "encoder.json", "checkpoint*.pt", "run_summary.json")


def earlier_run_outputs(output_dir: str | os.PathLike, patterns: Sequence[str] = RUN_OUTPUT_PATTERNS) -> list[Path]:
    """The files of ``output_dir`` matching ``patterns`` (sorted; ``[]`` when the folder does not exist)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def check_earlier_run_outputs(
    output_dir: str | os.PathLike,
    resume: bool = False,
    overwrite: bool = False,
    patterns: Sequence[str] = RUN_OUTPUT_PATTERNS,
) -> list[Path]:
    """Refuse to start a new run over the results of an earlier one, or clear them when ``overwrite`` is given.

    A resumed run continues the earlier run and may update its files; a new run may replace them only with
    ``overwrite``. Without this check a new run that fails half-way would already have replaced the earlier run's
    checkpoints (saved every epoch, and at the failure), leaving neither run usable. When the run is refused nothing
    is written.

    With ``overwrite`` (and not ``resume``) the earlier results are deleted (by the main process only, logged) before
    the new run starts: the checkpoint saver only replaces the files of the epochs it saves itself, so an earlier
    run's other checkpoints (e.g. ``checkpoint_epoch=6.pt`` of a longer run) and its encoder would otherwise stay in the
    folder, look like results of the new run, and be picked up by a later ``--resume`` if the new run were killed
    before its first checkpoint.

    Args:
        output_dir: the run's output folder.
        resume: the run continues the checkpoints in ``output_dir``.
        overwrite: the user accepts that this run replaces them.
        patterns: which files count as results.

    Returns:
        the earlier results found (to be continued, or which were deleted).

    Raises:
        FileExistsError: results exist and neither ``resume`` nor ``overwrite`` is set, listing them and the options.
    """
    found = earlier_run_outputs(output_dir, patterns)
    if not found or resume:
        return found
    if not overwrite:
        names = ", ".join(p.name for p in found[:6]) + (" ..." if len(found) > 6 else "")
        raise FileExistsError(
            f"{output_dir} already holds the results of an earlier run ({names}). Nothing was changed. Pass "
            "--resume True to continue that run, --overwrite True to replace its results, or --output_dir DIR to "
            "write somewhere else."
        )
    if dist.is_main_process():
        logger.warning(
            "overwrite: deleting the results of an earlier run in %s: %s", output_dir, ", ".join(p.name for p in found)
        )
        for path in found:
            path.unlink(missing_ok=True)
    return found
