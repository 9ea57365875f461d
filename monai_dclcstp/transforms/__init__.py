from __future__ import annotations

from .array import (
    GEOMETRY_META_KEY,
    RandIntensityJitter,
    RandShotNoise,
    RandViewFlip,
    RandViewResizedCrop,
    TwoViewAugment,
    get_view_geometry,
)
from .dictionary import (
    RandIntensityJitterD,
    RandIntensityJitterd,
    RandIntensityJitterDict,
    RandShotNoiseD,
    RandShotNoised,
    RandShotNoiseDict,
    RandViewFlipD,
    RandViewFlipd,
    RandViewFlipDict,
    RandViewResizedCropD,
    RandViewResizedCropd,
    RandViewResizedCropDict,
    TwoViewAugmentD,
    TwoViewAugmentd,
    TwoViewAugmentDict,
)
