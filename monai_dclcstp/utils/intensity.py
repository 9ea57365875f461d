"""Input intensity scaling that is recorded with the exported encoder and rebuilt from that record downstream.

Pretraining describes how it scaled images with :func:`intensity_description` (a small JSON-able dict stored in the
``encoder.json`` sidecar, Contract 2); classification and segmentation bundles rebuild exactly the same transform with
:func:`intensity_transform` from the sidecar, so the encoder always sees the intensities it was trained on::

    "intensity": "$monai_dclcstp.utils.read_encoder_info(@pretrained_encoder)['intensity']",
    ... "$monai_dclcstp.utils.intensity_transform(@intensity, keys='image')" ...

Modes (every mode outputs ``float32`` in ``output_range``, default ``[0, 1]``):

- ``auto`` (default): 8-bit images (PNG/JPEG/BMP loaded with ``LoadImage(dtype=None)``, i.e. ``uint8``) are divided
  by 255; any other type (16-bit PNG, DICOM, NIfTI, float) is scaled per image between its ``lower`` and ``upper``
  percentiles (0.5 and 99.5) and clipped.
- ``divide``: ``x / divisor`` (e.g. 255 or 65535), clipped.
- ``percentile``: per image, percentiles ``lower``/``upper`` → output range, clipped.
- ``minmax``: per image, min/max → output range.
- ``window``: fixed window ``a_min``/``a_max`` (e.g. CT Hounsfield units ``-1000, 1000``) → output range, clipped.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

__all__ = [
    "INTENSITY_MODES",
    "intensity_description",
    "IntensityFromDescription",
    "IntensityFromDescriptiond",
    "intensity_transform",
]

INTENSITY_MODES = ("auto", "divide", "percentile", "minmax", "window")
_DEFAULTS: dict[str, dict[str, Any]] = {
    "auto": {"uint8_divisor": 255.0, "lower": 0.5, "upper": 99.5},
    "divide": {"divisor": 255.0},
    "percentile": {"lower": 0.5, "upper": 99.5},
    "minmax": {},
    "window": {"a_min": -1000.0, "a_max": 1000.0},
}
_TEXT = {
    "auto": "8-bit images / {uint8_divisor:g}; other types per-image percentiles {lower:g}-{upper:g} -> {lo:g}..{hi:g}",
    "divide": "x / {divisor:g}",
    "percentile": "per-image percentiles {lower:g}-{upper:g} -> {lo:g}..{hi:g}",
    "minmax": "per-image min-max -> {lo:g}..{hi:g}",
    "window": "window [{a_min:g}, {a_max:g}] -> {lo:g}..{hi:g}",
}
#: above this many values the percentiles are estimated on a strided subsample (exact enough, much faster)
_MAX_PERCENTILE_VALUES = 4_000_000


def intensity_description(mode: str | Mapping[str, Any] = "auto", **params: Any) -> dict[str, Any]:
    """Complete, validated description of an intensity scaling (what the ``encoder.json`` sidecar records).

    Args:
        mode: one of :data:`INTENSITY_MODES`, or a (possibly partial) description dict with a ``mode`` key.
        params: parameters of the mode (``lower``, ``upper``, ``divisor``, ``a_min``, ``a_max``, ``uint8_divisor``,
            ``output_range``, ``clip``); missing ones take the defaults.

    Returns:
        ``{"mode": ..., <parameters>, "output_range": [lo, hi], "clip": bool, "text": "human-readable summary"}``.

    Raises:
        ValueError: unknown mode, unknown parameter or invalid values.
    """
    if isinstance(mode, Mapping):
        params = {**{k: v for k, v in mode.items() if k != "text"}, **params}
        mode = params.pop("mode", "auto")
    mode = str(mode).lower()
    if mode not in INTENSITY_MODES:
        raise ValueError(f"unknown intensity mode {mode!r}; choose one of {INTENSITY_MODES}.")
    allowed = set(_DEFAULTS[mode]) | {"output_range", "clip"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"intensity mode {mode!r} takes {sorted(allowed)}, got unknown {unknown}.")
    desc: dict[str, Any] = {"mode": mode}
    for k, v in _DEFAULTS[mode].items():
        desc[k] = float(params.get(k, v))
    lo, hi = (float(v) for v in params.get("output_range", (0.0, 1.0)))
    if not lo < hi:
        raise ValueError(f"output_range must be increasing, got {[lo, hi]}.")
    desc["output_range"] = [lo, hi]
    desc["clip"] = bool(params.get("clip", mode != "minmax"))
    if "lower" in desc and not 0.0 <= desc["lower"] < desc["upper"] <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {desc['lower']}, {desc['upper']}.")
    if "a_min" in desc and not desc["a_min"] < desc["a_max"]:
        raise ValueError(f"window must satisfy a_min < a_max, got {desc['a_min']}, {desc['a_max']}.")
    for key in ("divisor", "uint8_divisor"):
        if key in desc and desc[key] <= 0:
            raise ValueError(f"{key} must be positive, got {desc[key]}.")
    desc["text"] = _TEXT[mode].format(lo=lo, hi=hi, **{k: v for k, v in desc.items() if isinstance(v, float)})
    return desc


def _percentiles(x: torch.Tensor, lower: float, upper: float) -> tuple[float, float]:
    flat = x.reshape(-1)
    if flat.numel() > _MAX_PERCENTILE_VALUES:
        flat = flat[:: flat.numel() // _MAX_PERCENTILE_VALUES + 1]
    values = np.percentile(flat.double().cpu().numpy(), [lower, upper])
    return float(values[0]), float(values[1])


class IntensityFromDescription(Transform):
    """Scale an image as a :func:`intensity_description` says (array transform).

    Args:
        description: a description dict (completed with defaults by :func:`intensity_description`), or a mode name.

    ``__call__``: ``(C, *spatial)`` of any dtype → same shape, ``float32`` in ``output_range`` (type kept: a
    ``MetaTensor`` keeps its metadata). Percentiles/min-max are taken over the whole image (all channels).
    """

    def __init__(self, description: str | Mapping[str, Any] = "auto") -> None:
        self.description = intensity_description(description)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        d = self.description
        src = img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(np.asarray(img))
        is_uint8 = src.dtype == torch.uint8
        x = src.float()
        lo, hi = d["output_range"]
        mode = d["mode"]
        if mode == "auto" and is_uint8:
            a, b = 0.0, d["uint8_divisor"]
        elif mode == "divide":
            a, b = 0.0, d["divisor"]
        elif mode in ("auto", "percentile"):
            a, b = _percentiles(x, d["lower"], d["upper"])
        elif mode == "minmax":
            a, b = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
        else:  # window
            a, b = d["a_min"], d["a_max"]
        if b > a:
            x = (x - a) / (b - a) * (hi - lo) + lo
        else:  # a constant image
            x = torch.full_like(x, lo)
        if d["clip"]:
            x = x.clamp(lo, hi)
        out, *_ = convert_to_dst_type(x, img, dtype=torch.float32)
        return out


class IntensityFromDescriptiond(MapTransform):
    """Dictionary wrapper of :class:`IntensityFromDescription`.

    Args:
        keys: keys of the images to scale.
        description: see :class:`IntensityFromDescription`.
        allow_missing_keys: don't raise when a key is missing.
    """

    def __init__(
        self, keys: KeysCollection, description: str | Mapping[str, Any] = "auto", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = IntensityFromDescription(description)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


def intensity_transform(
    description: str | Mapping[str, Any] = "auto", keys: KeysCollection = "image"
) -> IntensityFromDescriptiond:
    """The dictionary transform for ``description``; also accepts a whole ``encoder.json`` dict (its ``intensity``)."""
    if isinstance(description, Mapping) and "intensity" in description and "mode" not in description:
        description = description["intensity"]
    return IntensityFromDescriptiond(keys, description)
