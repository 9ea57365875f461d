"""Build, export and load the LDM bundle's networks (``AutoencoderKL``, ``DiffusionModelUNet``).

Exported files (written by :class:`~monai_dclcstp.generative.export_handler.GenerativeModelExport`)::

    models/autoencoder.pt     plain state dict (tensors only; torch.load(weights_only=True))
    models/autoencoder.json   {"format_version", "network": "AutoencoderKL", "kwargs": {...}, "sha256", ...}
    models/diffusion.pt / .json   the same for the diffusion U-Net, plus "scale_factor", "latent_shape",
                              "num_classes", "classes", "noise_schedule", ...

The ``.json`` description lets the next stage rebuild the exact architecture (:func:`build_network`), so the
architecture is written in one config only. :func:`load_generative_weights` also reads checkpoints of the older
MONAI Generative package (``generative.networks.nets``), whose attention and upsampling layers had other names,
through the networks' own ``load_old_state_dict``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import monai
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from torch import nn

from ..utils.io import atomic_json_dump, atomic_torch_save, sha256_file
from .conditional_unet import ClassConditionalDiffusionUNet

__all__ = [
    "MODEL_FORMAT_VERSION",
    "NETWORKS",
    "build_network",
    "build_diffusion_unet",
    "export_generative_model",
    "read_model_info",
    "resolve_model_info",
    "load_generative_weights",
    "is_old_state_dict",
]

logger = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = 1
#: networks that :func:`build_network` may create from a description (nothing else is imported from a JSON file).
NETWORKS: dict[str, type[nn.Module]] = {
    "AutoencoderKL": AutoencoderKL,
    "DiffusionModelUNet": DiffusionModelUNet,
    "ClassConditionalDiffusionUNet": ClassConditionalDiffusionUNet,
}
_WRAPPER_KEYS = ("state_dict", "model", "network", "model_state_dict", "autoencoder", "diffusion", "unet", "net")


def _sidecar(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".json")


def build_network(name: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Create one of :data:`NETWORKS` from its class name and constructor arguments (e.g. a description's)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown generative network {name!r}; expected one of {sorted(NETWORKS)}.")
    try:
        return NETWORKS[name](**dict(kwargs))
    except TypeError as e:
        raise ValueError(f"invalid arguments for {name}: {e}") from e


def build_diffusion_unet(num_classes: int = 0, null_class: bool = False, **kwargs: Any) -> DiffusionModelUNet:
    """``DiffusionModelUNet(**kwargs)``, or a :class:`ClassConditionalDiffusionUNet` when ``num_classes > 0``.

    Args:
        num_classes: number of classes for class-conditional training; 0 for an unconditional model.
        null_class: add a "no class" embedding (index ``num_classes``) for classifier-free guidance.
        kwargs: ``DiffusionModelUNet`` arguments (without ``num_class_embeds``).
    """
    if "num_class_embeds" in kwargs:
        raise ValueError("set num_classes (and null_class) instead of num_class_embeds.")
    num_classes = int(num_classes or 0)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
    if num_classes == 0:
        return DiffusionModelUNet(**kwargs)
    return ClassConditionalDiffusionUNet(num_class_embeds=num_classes + int(bool(null_class)), **kwargs)


def network_description(network: nn.Module, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    name = type(network).__name__
    if name not in NETWORKS:
        raise ValueError(f"cannot describe {name}; expected one of {sorted(NETWORKS)}.")
    kwargs = dict(kwargs)
    if name == "ClassConditionalDiffusionUNet" or getattr(network, "num_class_embeds", None) is not None:
        kwargs["num_class_embeds"] = int(network.num_class_embeds)
    return {"network": name, "kwargs": kwargs}


def export_generative_model(
    network: nn.Module,
    path: str | os.PathLike,
    kwargs: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``network``'s state dict to ``path`` and its description to ``path`` with suffix ``.json``, atomically.

    Args:
        network: an ``AutoencoderKL``, ``DiffusionModelUNet`` or ``ClassConditionalDiffusionUNet``.
        path: target ``.pt`` file.
        kwargs: the constructor arguments the network was built with (JSON-able).
        info: further entries of the description (scale factor, image size, intensity, classes, ...).

    Returns:
        ``(pt_path, json_path)``.
    """
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    pt_path = atomic_torch_save(state, path)
    desc: dict[str, Any] = {"format_version": MODEL_FORMAT_VERSION, **network_description(network, kwargs)}
    desc.update(dict(info or {}))
    desc.update(
        sha256=sha256_file(pt_path),
        monai_version=monai.__version__,
        torch_version=torch.__version__.split("+")[0],
    )
    json_path = atomic_json_dump(json.loads(json.dumps(desc, default=_jsonable)), _sidecar(pt_path))
    return Path(pt_path), Path(json_path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (torch.device, Path)):
        return str(obj)
    if hasattr(obj, "__float__"):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def read_model_info(path: str | os.PathLike, required: bool = True) -> dict[str, Any]:
    """The description ``.json`` beside an exported ``.pt`` (``{}`` when missing and not ``required``).

    Raises:
        FileNotFoundError: no description (and ``required``). ValueError: invalid JSON or too new a format.
    """
    json_path = _sidecar(path)
    if not json_path.is_file():
        if not required:
            return {}
        raise FileNotFoundError(
            f"{path}: its description {json_path} is missing. Export models with the LDM bundle's training configs, "
            "or (e.g. for an old MONAI Generative checkpoint) set the architecture keys in the config yourself."
        )
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"model description {json_path} is not valid JSON: {e}.") from e
    if int(info.get("format_version", 0)) > MODEL_FORMAT_VERSION:
        raise ValueError(f"{json_path} has format_version {info['format_version']}; upgrade monai_dclcstp.")
    return info


def resolve_model_info(path: str | os.PathLike, required: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    """The description of ``path`` (if any) with every non-``None`` override applied; checks ``required`` keys.

    Used by ``sample.json``/``train_diffusion.json``: each config key defaults to ``null`` (take the exported value)
    and can be set to use a model without a description, e.g. an old MONAI Generative checkpoint.

    Raises:
        ValueError: a required entry is neither in the description nor given, listing them.
    """
    info = read_model_info(path, required=False)
    info.update({k: v for k, v in overrides.items() if v is not None})
    missing = [k for k in required if info.get(k) is None]
    if missing:
        where = f"its description {_sidecar(path)}" if _sidecar(path).is_file() else f"no description {_sidecar(path)}"
        raise ValueError(
            f"model {path} ({where}): {', '.join(missing)} unknown; set them in the config (keys of the same name)."
        )
    return info


def _unwrap_state_dict(obj: Any, key: str | None, path: Path) -> dict[str, torch.Tensor]:
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise KeyError(
                f"{path} has no entry {key!r} (top-level keys: {list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__})."
            )
        obj = obj[key]
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for k in _WRAPPER_KEYS:
            inner = obj.get(k)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    found = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"{path} holds no state dict of tensors (found {found}); set the checkpoint key.")


def is_old_state_dict(network: nn.Module, state: Mapping[str, Any]) -> bool:
    """Whether ``state`` does not match ``network``'s keys but the network can translate old MONAI Generative keys."""
    own = set(network.state_dict())
    return set(state) != own and hasattr(network, "load_old_state_dict")


def load_generative_weights(
    network: nn.Module,
    path: str | os.PathLike,
    key: str | None = None,
    old_format: bool | str = "auto",
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load weights from ``path`` into ``network`` and return the network.

    Args:
        network: ``AutoencoderKL`` or ``DiffusionModelUNet`` (or subclass) with the checkpoint's architecture.
        path: a ``.pt`` file: a plain state dict, or a dict holding one (``key``, or one of ``state_dict``, ``model``,
            ``network``, ...; e.g. this bundle's ``checkpoint_final.pt``).
        key: entry of the state dict inside the file, if nested.
        old_format: ``True``: the file is from MONAI Generative (``generative.networks.nets``), translate its keys
            with ``network.load_old_state_dict``; ``False``: current MONAI layout, strict; ``"auto"`` (default): use
            the translation when the keys do not match the network's.
        map_location: ``torch.load`` map location.

    Raises:
        FileNotFoundError: missing file. ValueError: not a tensor state dict, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights {path} do not exist (train that stage first, or fix the path).")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # weights_only refuses pickled code (e.g. a whole pickled model)
        raise ValueError(f"refusing to load {path}: not a plain tensor checkpoint ({e}).") from e
    state = _unwrap_state_dict(obj, key, path)
    mode = str(old_format).lower()
    if mode not in ("true", "false", "auto"):
        raise ValueError(f"old_format must be true, false or 'auto', got {old_format!r}.")
    use_old = mode == "true" or (mode == "auto" and is_old_state_dict(network, state))
    try:
        if use_old:
            if not hasattr(network, "load_old_state_dict"):
                raise ValueError(f"{type(network).__name__} has no load_old_state_dict.")
            network.load_old_state_dict(dict(state))
            logger.info(
                "loaded %s into %s (old MONAI Generative key layout, translated).", path, type(network).__name__
            )
        else:
            network.load_state_dict(state, strict=True)
            logger.info("loaded %s into %s.", path, type(network).__name__)
    except (KeyError, RuntimeError) as e:
        own = set(network.state_dict())
        missing, unexpected = sorted(own - set(state))[:5], sorted(set(state) - own)[:5]
        raise ValueError(
            f"weights {path} do not fit {type(network).__name__} "
            f"({'old' if use_old else 'current'} key layout): {type(e).__name__}: {str(e)[:300]}; "
            f"missing e.g. {missing}, unexpected e.g. {unexpected}. Check the architecture keys "
            "(or load_old_checkpoint)."
        ) from e
    return network
