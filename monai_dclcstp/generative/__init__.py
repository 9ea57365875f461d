"""Latent diffusion data expansion: schedulers, latent helpers, class-conditional sampling and synthetic datalists.

Import-light: submodules are loaded on first attribute access, and diffusers only when a diffusers solver is built
(``build_scheduler("sde_dpm_solver++")``, ``DiffusersSchedulerAdapter``). Bundle configs can use
``"_target_": "monai_dclcstp.generative.build_scheduler"`` or ``"$monai_dclcstp.generative.compute_scale_factor(...)"``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # schedulers
    "build_scheduler": "schedulers",
    "SCHEDULER_NAMES": "schedulers",
    "EtaDDIMScheduler": "schedulers",
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
    "resolve_class_counts": "conditional",
    "infer_num_classes": "conditional",
    "label_counts": "conditional",
    "LatentScaleFactor": "scale_factor",
    "LatentClippedModel": "latent_clipping",
    "clip_bounds": "latent_clipping",
    "ema_avg_fn": "ema",
    "build_ema": "ema",
    "ModelEMAUpdater": "ema",
    # autoencoder training
    "kl_divergence": "autoencoder_loss",
    "AutoencoderKLLoss": "autoencoder_loss",
    "PatchGeneratorLoss": "adversarial",
    "PatchDiscriminatorLoss": "adversarial",
    "EncoderPerceptualLoss": "perceptual",
    "build_perceptual_loss": "perceptual",
    "PERCEPTUAL_NETWORKS": "perceptual",
    "AutoencoderKLTrainer": "autoencoder_trainer",
    # networks: build, export, load (incl. old MONAI Generative checkpoints)
    "NETWORKS": "model_io",
    "build_network": "model_io",
    "build_diffusion_unet": "model_io",
    "export_generative_model": "model_io",
    "read_model_info": "model_io",
    "resolve_model_info": "model_io",
    "load_generative_weights": "model_io",
    "is_old_state_dict": "model_io",
    # bundle handlers
    "GenerativeModelExport": "export_handler",
    "TensorBoardImageGrid": "image_grid",
    "image_grid": "image_grid",
    "DiffusionSamplePreview": "sample_preview",
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
    from .adversarial import PatchDiscriminatorLoss, PatchGeneratorLoss
    from .autoencoder_loss import AutoencoderKLLoss, kl_divergence
    from .autoencoder_trainer import AutoencoderKLTrainer
    from .conditional import class_counts, class_sampling_plan, infer_num_classes, label_counts, resolve_class_counts
    from .conditional_unet import ClassConditionalDiffusionUNet
    from .ema import ModelEMAUpdater, build_ema, ema_avg_fn
    from .export_handler import GenerativeModelExport
    from .image_grid import TensorBoardImageGrid, image_grid
    from .latent import compute_scale_factor, decode_latents, encode_latents, latent_shape
    from .latent_clipping import LatentClippedModel, clip_bounds
    from .model_io import (
        NETWORKS,
        build_diffusion_unet,
        build_network,
        export_generative_model,
        is_old_state_dict,
        load_generative_weights,
        read_model_info,
        resolve_model_info,
    )
    from .perceptual import PERCEPTUAL_NETWORKS, EncoderPerceptualLoss, build_perceptual_loss
    from .prepare_batch import LatentDiffusionPrepareBatch
    from .sample_preview import DiffusionSamplePreview
    from .sampling import class_conditioned, sample_images
    from .scale_factor import LatentScaleFactor
    from .scheduler_adapter import SUPPORTED_DIFFUSERS_SCHEDULERS, DiffusersSchedulerAdapter
    from .schedulers import SCHEDULER_NAMES, EtaDDIMScheduler, build_scheduler
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
