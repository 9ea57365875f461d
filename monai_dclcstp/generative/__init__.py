"""Latent diffusion data expansion: schedulers, latent helpers, class-conditional sampling and synthetic datalists.

Import-light: submodules are loaded on first attribute access, and diffusers only when a diffusers solver is built
(``build_scheduler("dpm_solver++")``, ``DiffusersSchedulerAdapter``). Bundle configs can use
``"_target_": "monai_dclcstp.generative.build_scheduler"`` or ``"$monai_dclcstp.generative.compute_scale_factor(...)"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # schedulers
    "build_scheduler": "schedulers",
    "SCHEDULER_NAMES": "schedulers",
    "DiffusersSchedulerAdapter": "scheduler_adapter",
    "SUPPORTED_DIFFUSERS_SCHEDULERS": "scheduler_adapter",
    # latent space
    "compute_scale_factor": "latent",
    "latent_shape": "latent",
    "encode_latents": "latent",
    "decode_latents": "latent",
    # class conditioning and training
    "ClassConditionalDiffusionUNet": "conditional_unet",
    "LatentDiffusionPrepareBatch": "prepare_batch",
    "class_counts": "conditional",
    "class_sampling_plan": "conditional",
    # sampling and writing
    "sample_images": "sampling",
    "class_conditioned": "sampling",
    "synthesize": "synthesis",
    "write_synthetic_datalist": "synthesis",
    "safe_output_path": "writers",
    "to_uint8": "writers",
    "save_png": "writers",
    "save_nifti": "writers",
    "save_json": "writers",
    "atomic_write": "writers",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .conditional import class_counts, class_sampling_plan
    from .conditional_unet import ClassConditionalDiffusionUNet
    from .latent import compute_scale_factor, decode_latents, encode_latents, latent_shape
    from .prepare_batch import LatentDiffusionPrepareBatch
    from .sampling import class_conditioned, sample_images
    from .scheduler_adapter import SUPPORTED_DIFFUSERS_SCHEDULERS, DiffusersSchedulerAdapter
    from .schedulers import SCHEDULER_NAMES, build_scheduler
    from .synthesis import synthesize, write_synthetic_datalist
    from .writers import atomic_write, safe_output_path, save_json, save_nifti, save_png, to_uint8


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
