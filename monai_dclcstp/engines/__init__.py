from __future__ import annotations

from .prepare_batch import PrepareTwoViewBatch
from .pretrainer import SKIP_STEP_KEY, DCLCsTPTrainer

__all__ = ["DCLCsTPTrainer", "PrepareTwoViewBatch", "SKIP_STEP_KEY"]
