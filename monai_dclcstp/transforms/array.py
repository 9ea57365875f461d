"""Array transforms that make contrastive views and record their geometry.

Every transform here takes a channel-first image ``(C, *spatial)`` (``MetaTensor``, tensor or array, intensities
expected in ``[0, 1]``) and returns a :class:`monai.data.MetaTensor` whose ``meta["view_geometry"]`` holds the view's
geometry ``(3, N_dims)`` in the format of :mod:`monai_dclcstp.losses.correspondence`: crop ``start`` and ``size`` in
pixels of the original image and ``flip`` flags. A transform that receives an image without a geometry treats it as
the whole original image. The intensity transforms return the type they are given (``MetaTensor`` in, ``MetaTensor``
out; plain tensors stay plain, which skips MetaTensor overhead). Random draws use ``self.R`` only, inside ``randomize``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import RandGaussianSmooth, Randomizable, RandomizableTransform, Transform
from monai.utils import MAX_SEED, convert_to_tensor, ensure_tuple_rep

__all__ = [
    "GEOMETRY_META_KEY",
    "get_view_geometry",
    "RandViewResizedCrop",
    "RandViewFlip",
    "RandIntensityJitter",
    "RandShotNoise",
    "TwoViewAugment",
]

GEOMETRY_META_KEY = "view_geometry"


def _split(img: NdarrayOrTensor) -> tuple[torch.Tensor, dict]:
    """Plain float tensor and a copy of the metadata of ``img`` (no MetaTensor dispatch overhead in the math)."""
    if isinstance(img, MetaTensor):
        return img.as_tensor().float(), dict(img.meta)
    return convert_to_tensor(img, dtype=torch.float32, track_meta=False), {}


def _join(x: torch.Tensor, meta: dict, like: NdarrayOrTensor | None = None) -> torch.Tensor:
    """``MetaTensor`` with ``meta``, or a plain tensor when ``like`` is given and is not a ``MetaTensor``."""
    if like is not None and not isinstance(like, MetaTensor):
        return x
    return MetaTensor(x, meta=meta)


def _compose_affine(meta: dict, diag: Sequence[float], offset: Sequence[float]) -> None:
    """Update ``meta["affine"]`` for a view whose voxel ``j`` lies at input voxel ``diag * j + offset`` (per axis)."""
    if "affine" not in meta:
        return
    affine = torch.as_tensor(meta["affine"], dtype=torch.float64)
    r = affine.shape[0] - 1
    t = torch.eye(r + 1, dtype=torch.float64)
    for i, (d, o) in enumerate(zip(diag, offset)):
        if i < r:
            t[i, i], t[i, r] = float(d), float(o)
    meta["affine"] = affine @ t


def get_view_geometry(img: NdarrayOrTensor) -> torch.Tensor:
    """The view geometry ``(3, N_dims)`` recorded on ``img``, or that of the whole, unflipped image."""
    meta = img.meta if isinstance(img, MetaTensor) else {}
    if GEOMETRY_META_KEY in meta:
        return torch.as_tensor(meta[GEOMETRY_META_KEY], dtype=torch.float32).clone()
    shape = torch.as_tensor(img.shape[1:], dtype=torch.float32)
    return torch.stack([torch.zeros_like(shape), shape, torch.zeros_like(shape)])


class RandViewResizedCrop(Randomizable, Transform):
    """Random resized crop (Szegedy et al. 2015; SimCLR's main augmentation) in 2D or 3D, recording the crop box.

    A box covering a fraction ``scale`` of the image area/volume, with per-axis aspect jitter bounded by ``ratio``, is
    cut at a random position and resized to ``spatial_size`` (bilinear with anti-aliasing in 2D, trilinear in 3D).
    The box is recorded in the view geometry (composed with an existing one) and the ``affine`` is updated.

    Args:
        spatial_size: output size, an int for every axis or one per axis.
        scale: range of the box's area (volume) fraction.
        ratio: range of the box's aspect ratio between any two axes, relative to the image's.
        max_attempts: draws before falling back to the whole image.
        mode: ``"linear"`` (bilinear/trilinear, anti-aliased in 2D) or ``"nearest"`` (for label maps and masks).
    """

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        max_attempts: int = 10,
        mode: str = "linear",
    ) -> None:
        if mode not in ("linear", "nearest"):
            raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}.")
        self.mode = mode
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}.")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {tuple(ratio)}.")
        self.spatial_size = spatial_size
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.max_attempts = max_attempts
        self._start: np.ndarray | None = None
        self._size: np.ndarray | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        shape = np.asarray(spatial_shape, dtype=np.float64)
        nd = len(shape)
        for _ in range(self.max_attempts):
            frac = self.R.uniform(*self.scale)
            log_aspect = self.R.uniform(*self.log_ratio, size=nd) / 2.0
            side = np.round(shape * frac ** (1.0 / nd) * np.exp(log_aspect - log_aspect.mean()))
            if np.all(side >= 1) and np.all(side <= shape):
                break
        else:
            side = shape.copy()
        self._size = side.astype(np.int64)
        self._start = np.array([self.R.randint(0, int(s) - int(c) + 1) for s, c in zip(shape, self._size)])

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True, mode: str | None = None) -> MetaTensor:
        """``(C, *spatial)`` → ``(C, *spatial_size)`` with the crop box recorded (``mode`` overrides ``self.mode``)."""
        x, meta = _split(img)
        nd = x.ndim - 1
        if nd not in (2, 3):
            raise ValueError(f"expected a channel-first 2D or 3D image (C, H, W[, D]), got shape {tuple(x.shape)}.")
        if randomize or self._start is None:
            self.randomize(x.shape[1:])
        assert self._start is not None and self._size is not None
        slices = tuple(slice(int(a), int(a + s)) for a, s in zip(self._start, self._size))
        out_size = ensure_tuple_rep(self.spatial_size, nd)
        crop = x[(slice(None), *slices)][None]
        if tuple(crop.shape[2:]) != tuple(out_size):
            if (mode or self.mode) == "nearest":
                crop = F.interpolate(crop, size=out_size, mode="nearest-exact")
            else:
                interp = "bilinear" if nd == 2 else "trilinear"
                crop = F.interpolate(crop, size=out_size, mode=interp, align_corners=False, antialias=nd == 2)
        step = [float(c) / o for c, o in zip(self._size, out_size)]
        _compose_affine(meta, step, [float(a) + 0.5 * st - 0.5 for a, st in zip(self._start, step)])
        parent = get_view_geometry(img)
        scale = parent[1] / torch.as_tensor(x.shape[1:], dtype=torch.float32)
        geometry = torch.stack(
            [
                parent[0] + torch.as_tensor(self._start, dtype=torch.float32) * scale,
                torch.as_tensor(self._size, dtype=torch.float32) * scale,
                torch.zeros(nd),
            ]
        )
        meta[GEOMETRY_META_KEY] = geometry
        return _join(crop[0], meta)


class RandViewFlip(RandomizableTransform):
    """Flip each spatial axis independently with probability ``prob`` and record the flips in the view geometry.

    Args:
        prob: flip probability per axis.
        spatial_axes: axes that may flip (default: all spatial axes).
    """

    def __init__(self, prob: float = 0.5, spatial_axes: Sequence[int] | int | None = None) -> None:
        RandomizableTransform.__init__(self, prob)
        self.spatial_axes = spatial_axes
        self._flips: np.ndarray | None = None

    def randomize(self, nd: int) -> None:  # type: ignore[override]
        self._flips = self.R.rand(nd) < self.prob
        if self.spatial_axes is not None:
            allowed = np.zeros(nd, dtype=bool)
            allowed[list(np.atleast_1d(self.spatial_axes))] = True
            self._flips &= allowed

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> MetaTensor:
        """``(C, *spatial)`` → same shape, flipped axes recorded."""
        x, meta = _split(img)
        if randomize or self._flips is None:
            self.randomize(x.ndim - 1)
        assert self._flips is not None
        geometry = get_view_geometry(img)
        dims = [i + 1 for i in np.flatnonzero(self._flips)]
        if dims:
            x = torch.flip(x, dims)
            n = x.shape[1:]
            _compose_affine(
                meta,
                [-1.0 if f else 1.0 for f in self._flips],
                [float(n[i] - 1) if f else 0.0 for i, f in enumerate(self._flips)],
            )
            geometry[2] = torch.logical_xor(geometry[2] > 0.5, torch.as_tensor(self._flips)).float()
        meta[GEOMETRY_META_KEY] = geometry
        return _join(x, meta)


class RandIntensityJitter(RandomizableTransform):
    """Brightness, contrast and gamma jitter; saturation and hue jitter too when the image has 3 (RGB) channels.

    With probability ``prob``: ``x *= b`` (``b ~ U(1-brightness, 1+brightness)``), ``x = (x - mean) c + mean``,
    ``x = clip(x, 0, 1) ** g``; for RGB, saturation blends with the luma image and hue rotates the chroma plane of YIQ.
    Output is clipped to ``[0, 1]`` (SimCLR's colour distortion, Chen et al. 2020, App. A, with gamma for grey scans).

    Args:
        prob: probability of applying the jitter.
        brightness, contrast, saturation: strengths (0 disables each).
        gamma: range of the gamma exponent (``None`` disables it).
        hue: maximum hue rotation as a fraction of a full turn (0 disables it).
    """

    _RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(
        self,
        prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        gamma: Sequence[float] | None = (0.7, 1.5),
        saturation: float = 0.4,
        hue: float = 0.05,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        self.gamma = None if gamma is None else (float(gamma[0]), float(gamma[1]))
        self._factors: dict[str, float] = {}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._factors = {
            "brightness": self.R.uniform(1 - self.brightness, 1 + self.brightness),
            "contrast": self.R.uniform(1 - self.contrast, 1 + self.contrast),
            "gamma": self.R.uniform(*self.gamma) if self.gamma else 1.0,
            "saturation": self.R.uniform(1 - self.saturation, 1 + self.saturation),
            "hue": self.R.uniform(-self.hue, self.hue) * 2 * math.pi,
        }

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """``(C, *spatial)`` in ``[0, 1]`` → same shape, jittered, in ``[0, 1]``."""
        if randomize or not self._factors:
            self.randomize()
        x, meta = _split(img)
        if not self._do_transform:
            return _join(x, meta, like=img)
        f = self._factors
        x = x * f["brightness"]
        x = (x - x.mean()) * f["contrast"] + x.mean()
        if x.shape[0] == 3 and (self.saturation or self.hue):
            yiq = torch.einsum("ij,j...->i...", self._RGB_TO_YIQ, x)
            c, s = math.cos(f["hue"]), math.sin(f["hue"])
            i, q = yiq[1] * f["saturation"], yiq[2] * f["saturation"]
            yiq = torch.stack([yiq[0], c * i - s * q, s * i + c * q])
            x = torch.einsum("ij,j...->i...", torch.linalg.inv(self._RGB_TO_YIQ), yiq)
        x = x.clamp(0.0, 1.0)
        if f["gamma"] != 1.0:
            x = x.pow(f["gamma"])
        return _join(x, meta, like=img)


class RandShotNoise(RandomizableTransform):
    """Poisson (shot) noise ``x' = Poisson(x * peak) / peak`` with ``peak ~ U(peak_range)`` photons at intensity 1.

    The noise model of low-dose X-ray and CT acquisition (a lower ``peak`` is noisier). Intensities in ``[0, 1]``;
    the result is not clipped (clipping would bias the mean of bright pixels), so it can slightly exceed 1.

    Args:
        prob: probability of adding noise.
        peak_range: range of the photon count at intensity 1.
    """

    def __init__(self, prob: float = 0.2, peak_range: Sequence[float] = (50.0, 1000.0)) -> None:
        RandomizableTransform.__init__(self, prob)
        if not 0 < peak_range[0] <= peak_range[1]:
            raise ValueError(f"peak_range must satisfy 0 < min <= max, got {tuple(peak_range)}.")
        self.peak_range = (float(peak_range[0]), float(peak_range[1]))
        self._peak = 1.0
        self._seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._peak = self.R.uniform(*self.peak_range)
        self._seed = int(self.R.randint(MAX_SEED))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        """``(C, *spatial)`` in ``[0, 1]`` → same shape with shot noise."""
        if randomize:
            self.randomize()
        x, meta = _split(img)
        if self._do_transform:
            gen = torch.Generator(device=x.device).manual_seed(self._seed)
            x = torch.poisson(x.clamp_min(0.0) * self._peak, generator=gen) / self._peak
        return _join(x, meta, like=img)


class TwoViewAugment(Randomizable):
    """Two independent augmentations of one image, each with its recorded geometry (DCL-CsTP's view generator).

    Per view: :class:`RandViewResizedCrop` → :class:`RandViewFlip` → :class:`RandIntensityJitter` →
    MONAI ``RandGaussianSmooth`` → :class:`RandShotNoise`.

    Args:
        spatial_size: size of each view.
        scale, ratio: crop parameters (:class:`RandViewResizedCrop`).
        flip_prob: flip probability per axis; ``flip_axes`` limits the axes.
        jitter_prob, brightness, contrast, gamma, saturation, hue: :class:`RandIntensityJitter` parameters.
        blur_prob, blur_sigma: Gaussian blur probability and sigma range (pixels of the view).
        noise_prob, noise_peak: :class:`RandShotNoise` parameters.
    """

    def __init__(
        self,
        spatial_size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] | int | None = None,
        jitter_prob: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        gamma: Sequence[float] | None = (0.7, 1.5),
        saturation: float = 0.4,
        hue: float = 0.05,
        blur_prob: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 1.0),
        noise_prob: float = 0.2,
        noise_peak: Sequence[float] = (50.0, 1000.0),
    ) -> None:
        sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.crop = RandViewResizedCrop(spatial_size, scale, ratio)
        self.flip = RandViewFlip(flip_prob, flip_axes)
        self.intensity: list[Randomizable] = [
            RandIntensityJitter(jitter_prob, brightness, contrast, gamma, saturation, hue),
            RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=blur_prob),
            RandShotNoise(noise_prob, noise_peak),
        ]
        self.transforms: list[Randomizable] = [self.crop, self.flip, *self.intensity]

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewAugment:
        super().set_random_state(seed, state)
        for t in self.transforms:
            t.set_random_state(seed=int(self.R.randint(MAX_SEED)))
        return self

    def randomize(self, data=None) -> None:  # draws happen in the inner transforms
        pass

    def view(self, img: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One augmented view ``(C, *spatial_size)`` (plain tensor) and its geometry ``(3, N_dims)``."""
        view = self.flip(self.crop(img))
        geometry = view.meta[GEOMETRY_META_KEY]
        x: torch.Tensor = view.as_tensor()
        for t in self.intensity:
            x = t(x)
        if isinstance(x, MetaTensor):  # MONAI's RandGaussianSmooth returns MetaTensors
            x = x.as_tensor()
        return x.float(), geometry

    def __call__(self, img: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(C, *spatial)`` → ``(view1, geometry1, view2, geometry2)``."""
        return (*self.view(img), *self.view(img))
