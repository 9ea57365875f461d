from __future__ import annotations

from .blocks import *  # noqa: F401,F403
from .blocks import __all__ as _blocks_all
from .nets import *  # noqa: F401,F403
from .nets import __all__ as _nets_all

__all__ = [*_blocks_all, *_nets_all]
