from __future__ import annotations

from .prepare_batch import PrepareTwoViewBatch
from .pretrainer import DCLCsTPTrainer

__all__ = ["DCLCsTPTrainer", "PrepareTwoViewBatch"]
