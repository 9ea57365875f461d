"""The exported encoder (DESIGN.md, Contract 2): ``encoder.pt`` (backbone ``state_dict``) + ``encoder.json`` sidecar.

Pretraining writes both with :func:`export_encoder`; downstream bundles call :func:`load_pretrained_encoder`, which
reads the sidecar first and refuses an encoder whose backbone, ``spatial_dims`` or ``in_channels`` differ from the
network it is loaded into, or whose file does not match the recorded hash. Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import atomic_json_dump, atomic_torch_save, sha256_file

__all__ = [
    "ENCODER_FORMAT_VERSION",
    "EncoderMismatchError",
    "export_encoder",
    "read_encoder_info",
    "load_encoder_state",
    "load_pretrained_encoder",
]

ENCODER_FORMAT_VERSION = 1


class EncoderMismatchError(ValueError):
    """The pretrained encoder does not fit the network or configuration it is loaded into."""


def _sidecar(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def export_encoder(
    backbone: nn.Module,
    path: str | os.PathLike,
    *,
    backbone_name: str,
    spatial_dims: int,
    in_channels: int,
    feature_channels: tuple[int, ...] | list[int],
    image_size: int | list[int],
    intensity: Mapping[str, Any],
    method: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``backbone.state_dict()`` to ``path`` (``.pt``) and its description to the ``.json`` beside it.

    Both files are written atomically (temp file + rename), the ``.pt`` first, so the sidecar never describes a
    file that is not there.

    Args:
        backbone: the module whose ``state_dict`` is exported (tensors moved to CPU).
        path: target ``.pt`` path.
        backbone_name, spatial_dims, in_channels, feature_channels, image_size: architecture and input size.
        intensity: how images were scaled/normalised before the network (e.g. ``{"scale": [0, 255, 0, 1]}``).
        method: training method and its settings (``name``, ``lambda_local``, ``temperature``, ``epochs``, ...).
        extra: any further entries (e.g. the full training config).

    Returns:
        the ``.pt`` and ``.json`` paths.
    """
    import monai

    pt_path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    atomic_torch_save(state, pt_path)
    info = {
        "format_version": ENCODER_FORMAT_VERSION,
        "backbone": backbone_name,
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "feature_channels": [int(c) for c in feature_channels],
        "image_size": image_size,
        "intensity": dict(intensity),
        "method": dict(method),
        "monai_version": monai.__version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sha256": sha256_file(pt_path),
        **(dict(extra) if extra else {}),
    }
    json_path = atomic_json_dump(info, _sidecar(pt_path))
    return pt_path, json_path


def read_encoder_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read the ``encoder.json`` sidecar of ``path`` (the ``.pt`` or the ``.json`` itself).

    Raises:
        FileNotFoundError: no sidecar next to the encoder.
        ValueError: the sidecar is not valid JSON or lacks required entries.
    """
    json_path = _sidecar(path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"pretrained encoder {path}: its description {json_path} is missing; export encoders with "
            "monai_dclcstp.utils.export_encoder (the pretraining bundle writes both files)."
        )
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"pretrained encoder description {json_path} is not valid JSON: {e}.") from e
    missing = [k for k in ("format_version", "backbone", "spatial_dims", "in_channels") if k not in info]
    if missing:
        raise ValueError(f"pretrained encoder description {json_path} lacks {missing}.")
    if int(info["format_version"]) > ENCODER_FORMAT_VERSION:
        raise ValueError(
            f"{json_path} has format_version {info['format_version']}, newer than this library understands "
            f"({ENCODER_FORMAT_VERSION}); upgrade monai_dclcstp."
        )
    return info


def load_encoder_state(
    path: str | os.PathLike,
    *,
    backbone: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    verify_hash: bool = True,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Check the sidecar against the expected architecture, then load the state dict with ``weights_only=True``.

    Raises:
        FileNotFoundError: the encoder or its sidecar is missing.
        EncoderMismatchError: backbone, ``spatial_dims`` or ``in_channels`` differ, or the hash does not match.
        ValueError: the file is not a plain tensor state dict (e.g. a pickle with code: refused).
    """
    pt_path = Path(path)
    if not pt_path.is_file():
        raise FileNotFoundError(f"pretrained encoder {pt_path} does not exist.")
    info = read_encoder_info(pt_path)
    expected = {"backbone": backbone, "spatial_dims": spatial_dims, "in_channels": in_channels}
    wrong = [
        f"{k}: encoder has {info[k]!r}, expected {v!r}" for k, v in expected.items() if v is not None and info[k] != v
    ]
    if wrong:
        raise EncoderMismatchError(f"pretrained encoder {pt_path} does not fit this network ({'; '.join(wrong)}).")
    if verify_hash and info.get("sha256") and sha256_file(pt_path) != info["sha256"]:
        raise EncoderMismatchError(
            f"pretrained encoder {pt_path} does not match the sha256 recorded in {_sidecar(pt_path)}: "
            "the file was changed or truncated."
        )
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code and non-tensor objects
        raise ValueError(f"refusing to load {pt_path}: not a plain tensor state dict ({e}).") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{pt_path} is not a state dict of tensors.")
    return dict(state), info


def load_pretrained_encoder(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    backbone: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    strict: bool = True,
) -> dict[str, Any]:
    """Load an exported encoder into ``module`` (a ``ResNetFeatures``-compatible backbone) after checking it fits.

    Args:
        module: the backbone to initialise, e.g. ``FlexibleUNet(...).encoder`` or a classifier's backbone.
        path: the ``encoder.pt``.
        backbone, spatial_dims, in_channels: the downstream configuration (``None`` skips that check).
        strict: require every key to match (shapes are always checked).

    Returns:
        the sidecar description.

    Raises:
        EncoderMismatchError: configuration, keys or shapes do not match, with the first differences listed.
    """
    state, info = load_encoder_state(path, backbone=backbone, spatial_dims=spatial_dims, in_channels=in_channels)
    own = module.state_dict()
    bad_shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if bad_shapes or (strict and (missing or unexpected)):
        details = (
            bad_shapes[:5]
            + [f"missing {missing[:5]}"] * bool(missing)
            + [f"unexpected {unexpected[:5]}"] * bool(unexpected)
        )
        raise EncoderMismatchError(
            f"pretrained encoder {path} does not fit {type(module).__name__}: {'; '.join(details)}."
        )
    module.load_state_dict(state, strict=strict)
    return info
