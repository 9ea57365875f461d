"""Dictionary wrappers of :mod:`monai_dclcstp.transforms.array` (MONAI's ``...d`` convention)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, RandomizableTransform
from monai.utils import MAX_SEED, ensure_tuple_rep

from .array import RandIntensityJitter, RandShotNoise, RandViewFlip, RandViewResizedCrop, TwoViewAugment

__all__ = [
    "TwoViewAugmentd",
    "TwoViewAugmentD",
    "TwoViewAugmentDict",
    "RandViewResizedCropd",
    "RandViewResizedCropD",
    "RandViewResizedCropDict",
    "RandViewFlipd",
    "RandViewFlipD",
    "RandViewFlipDict",
    "RandIntensityJitterd",
    "RandIntensityJitterD",
    "RandIntensityJitterDict",
    "RandShotNoised",
    "RandShotNoiseD",
    "RandShotNoiseDict",
]


class TwoViewAugmentd(Randomizable, MapTransform):
    """Dictionary wrapper of :class:`TwoViewAugment`: ``data[key]`` → two views and their geometries.

    Writes ``data[view_keys[i]]`` ``(C, *spatial_size)`` and ``data[geometry_keys[i]]`` ``(3, N_dims)`` for
    ``i = 0, 1``; the source image is removed unless ``keep_source``. Only one source key is supported.

    Args:
        keys: the image key (one).
        view_keys: keys of the two views.
        geometry_keys: keys of the two view geometries.
        keep_source: keep ``data[key]`` in the output.
        allow_missing_keys: don't raise when the key is missing.
        kwargs: parameters of :class:`TwoViewAugment` (``spatial_size``, ``scale``, ...).
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_keys: Sequence[str] = ("view1", "view2"),
        geometry_keys: Sequence[str] = ("geometry1", "geometry2"),
        keep_source: bool = False,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"TwoViewAugmentd takes exactly one image key, got {self.keys}.")
        if len(view_keys) != 2 or len(geometry_keys) != 2:
            raise ValueError("view_keys and geometry_keys must each name two keys.")
        self.view_keys = tuple(view_keys)
        self.geometry_keys = tuple(geometry_keys)
        self.keep_source = keep_source
        self.augment = TwoViewAugment(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewAugmentd:
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def randomize(self, data=None) -> None:  # draws happen in the inner transforms
        pass

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            v1, g1, v2, g2 = self.augment(d[key])
            d[self.view_keys[0]], d[self.geometry_keys[0]] = v1, g1
            d[self.view_keys[1]], d[self.geometry_keys[1]] = v2, g2
            if not self.keep_source:
                d.pop(key)
        return d


class _RandWrapperd(RandomizableTransform, MapTransform):
    """Apply one inner randomizable array transform to every key with one draw (shared by the ``...d`` classes)."""

    array_class: type

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.inner = self.array_class(**kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> _RandWrapperd:
        super().set_random_state(seed, state)
        self.inner.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        first = True
        for key in self.key_iterator(d):
            d[key] = self.inner(d[key], randomize=first)
            first = False
        return d


class RandViewResizedCropd(_RandWrapperd):
    """Dictionary wrapper of :class:`RandViewResizedCrop` (the same box for every key, e.g. image and mask).

    Args:
        keys: keys to crop.
        mode: interpolation per key (``"linear"`` or ``"nearest"``; one value for all keys or one per key), e.g.
            ``("linear", "nearest")`` for an image and its mask.
        allow_missing_keys: don't raise when a key is missing.
        kwargs: other parameters of :class:`RandViewResizedCrop`.
    """

    array_class = RandViewResizedCrop

    def __init__(
        self,
        keys: KeysCollection,
        mode: str | Sequence[str] = "linear",
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys, **kwargs)
        self.modes = ensure_tuple_rep(mode, len(self.keys))

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        first = True
        for key, mode in self.key_iterator(d, self.modes):
            d[key] = self.inner(d[key], randomize=first, mode=mode)
            first = False
        return d


class RandViewFlipd(_RandWrapperd):
    """Dictionary wrapper of :class:`RandViewFlip` (the same flips for every key)."""

    array_class = RandViewFlip


class RandIntensityJitterd(_RandWrapperd):
    """Dictionary wrapper of :class:`RandIntensityJitter` (the same factors for every key)."""

    array_class = RandIntensityJitter


class RandShotNoised(_RandWrapperd):
    """Dictionary wrapper of :class:`RandShotNoise` (the same peak and noise seed for every key)."""

    array_class = RandShotNoise


TwoViewAugmentD = TwoViewAugmentDict = TwoViewAugmentd
RandViewResizedCropD = RandViewResizedCropDict = RandViewResizedCropd
RandViewFlipD = RandViewFlipDict = RandViewFlipd
RandIntensityJitterD = RandIntensityJitterDict = RandIntensityJitterd
RandShotNoiseD = RandShotNoiseDict = RandShotNoised
