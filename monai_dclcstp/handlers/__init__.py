"""Ignite handlers of the bundles (``attach(engine)`` / ``__call__(engine)``, ignite loaded via ``optional_import``).

Pretraining: :class:`KNNMonitor` (kNN accuracy on frozen embeddings), :class:`EncoderExport` (Contract 2 files),
:class:`NonFiniteLossGuard` (NaN/Inf loss: stop or skip), :class:`RunSummary` (what was written where),
:class:`AtomicCheckpointSaver` and :class:`LatestCheckpointLoader` (checkpoints and resume),
:class:`LossProgressBar` (Ignite progress bar with the loss parts).
"""

from __future__ import annotations

from .checkpoint_resume import LatestCheckpointLoader, UnsafeCheckpointError, find_checkpoints
from .checkpoint_saver import AtomicCheckpointSaver
from .encoder_export import ENCODER_PATH_ATTR, EncoderExport
from .knn_monitor import KNN_HISTORY_ATTR, KNNMonitor, balanced_accuracy, embed_images, weighted_knn_predict
from .nonfinite_guard import NonFiniteLossError, NonFiniteLossGuard
from .progress_bar import LossProgressBar
from .run_summary import RunSummary

__all__ = [
    "AtomicCheckpointSaver",
    "ENCODER_PATH_ATTR",
    "EncoderExport",
    "KNNMonitor",
    "KNN_HISTORY_ATTR",
    "LatestCheckpointLoader",
    "UnsafeCheckpointError",
    "LossProgressBar",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "RunSummary",
    "balanced_accuracy",
    "embed_images",
    "find_checkpoints",
    "weighted_knn_predict",
]
