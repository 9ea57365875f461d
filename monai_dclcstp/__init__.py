"""monai_dclcstp: DCL-CsTP (dual-stream contrastive learning with cross-scale token projection) for MONAI.

Subpackages: ``networks`` (backbone, cross-scale token projection, heads, dual-stream model), ``losses`` (global and
dense InfoNCE), ``transforms`` (two-view augmentations recording view geometry), ``engines`` and ``handlers`` (Ignite
pretraining trainer and its handlers), ``data`` (dataset layouts → datalists, pre-flight checks), ``generative``
(latent diffusion helpers), ``utils`` (distributed helpers, momentum schedules).
Subpackages are imported on first attribute access, so ``import monai_dclcstp`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("networks", "losses", "transforms", "engines", "handlers", "data", "generative", "utils")
__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
