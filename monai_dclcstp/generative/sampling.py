"""Sampling through MONAI's inferers, with class labels and classifier-free guidance.

``DiffusionInferer.sample``/``LatentDiffusionInferer.sample`` call ``diffusion_model(x, timesteps=..., context=...)``
and nothing else, so class labels (and guidance on them) are bound into a small callable that the inferer runs in
place of the network; the inferer's own loop, scheduler stepping and decoding are used as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import DiffusionInferer, LatentDiffusionInferer
from monai.networks.schedulers import DDPMScheduler
from torch import nn

__all__ = ["sample_images", "class_conditioned"]


def class_conditioned(
    diffusion_model: nn.Module,
    class_labels: torch.Tensor,
    guidance_scale: float | None = None,
    null_class_label: int | None = None,
) -> Callable[..., torch.Tensor]:
    """Bind class labels (and optional classifier-free guidance) to a class-conditional ``DiffusionModelUNet``.

    Args:
        diffusion_model: a ``DiffusionModelUNet`` with ``num_class_embeds`` (or ``ClassConditionalDiffusionUNet``).
        class_labels: ``(B,)`` integer labels, one per sample.
        guidance_scale: ``w`` of classifier-free guidance, output ``= e_uncond + w * (e_cond - e_uncond)``;
            ``None`` or ``1`` means plain conditional sampling (one network call per step).
        null_class_label: the "no class" label the network was trained with (needed when guiding).

    Returns:
        a callable ``f(x, timesteps, context=None) -> prediction`` with the network's output shape.
    """
    labels = torch.as_tensor(class_labels).long().reshape(-1)
    guided = guidance_scale is not None and float(guidance_scale) != 1.0
    if guided and null_class_label is None:
        raise ValueError("classifier-free guidance needs null_class_label (the 'no class' label used in training).")

    def forward(x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if labels.numel() != x.shape[0]:
            raise ValueError(f"got {labels.numel()} class labels for a batch of {x.shape[0]} samples.")
        y = labels.to(x.device)
        if not guided:
            return diffusion_model(x, timesteps=timesteps, context=context, class_labels=y)
        ctx = None if context is None else torch.cat([context, context], dim=0)
        both = diffusion_model(
            torch.cat([x, x], dim=0),
            timesteps=timesteps,
            context=ctx,
            class_labels=torch.cat([torch.full_like(y, int(null_class_label)), y]),
        )
        uncond, cond = both.chunk(2)
        return uncond + float(guidance_scale) * (cond - uncond)

    return forward


@torch.no_grad()
def sample_images(
    diffusion_model: nn.Module,
    scheduler: nn.Module,
    noise: torch.Tensor,
    *,
    autoencoder: nn.Module | None = None,
    scale_factor: float = 1.0,
    num_inference_steps: int | None = None,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float | None = None,
    null_class_label: int | None = None,
    verbose: bool = False,
) -> torch.Tensor:
    """Run the reverse diffusion from ``noise`` and decode, via ``LatentDiffusionInferer`` (or ``DiffusionInferer``).

    Args:
        diffusion_model: trained ``DiffusionModelUNet`` (in eval mode).
        scheduler: any MONAI scheduler or :class:`DiffusersSchedulerAdapter` (e.g. from ``build_scheduler``).
        noise: initial noise ``(B, C_latent, *latent_spatial)`` (or image-shaped without an autoencoder), on the
            models' device.
        autoencoder: trained ``AutoencoderKL`` for latent diffusion; ``None`` samples in image space.
        scale_factor: latent scale factor used in training.
        num_inference_steps: if given, ``scheduler.set_timesteps(num_inference_steps)`` is called first (this also
            resets multistep solvers); if ``None`` the scheduler's current timesteps are used. MONAI's
            ``DDPMScheduler`` needs all ``num_train_timesteps`` steps (``ValueError`` otherwise).
        class_labels: ``(B,)`` labels for a class-conditional network, else ``None``.
        guidance_scale: classifier-free guidance scale (see :func:`class_conditioned`).
        null_class_label: the "no class" label for guidance.
        verbose: show the inferer's progress bar.

    Returns:
        images ``(B, C_out, H, W[, D])`` (latent-decoded), or the final sample without an autoencoder.
    """
    if num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    elif getattr(scheduler, "num_inference_steps", None) is None:
        scheduler.set_timesteps(scheduler.num_train_timesteps)
    if isinstance(scheduler, DDPMScheduler) and len(scheduler.timesteps) != scheduler.num_train_timesteps:
        # MONAI's DDPMScheduler.step steps from t to t - 1 whatever the timesteps are: with fewer steps the chain
        # stops at a high noise level (on the bundle's model: KID x1e3 17678 with 50 steps, 45 with 1000)
        raise ValueError(
            f"MONAI's DDPMScheduler ('ddpm') samples correctly only with all {scheduler.num_train_timesteps} steps, "
            f"got {len(scheduler.timesteps)}; for fewer stochastic steps use 'sde_dpm_solver++', 'ddim' with eta=1 "
            "or 'diffusers_ddpm'."
        )
    model = diffusion_model
    if class_labels is not None:
        model = class_conditioned(diffusion_model, class_labels, guidance_scale, null_class_label)
    elif getattr(diffusion_model, "num_class_embeds", None) is not None:
        raise ValueError("diffusion_model is class-conditional (num_class_embeds is set): pass class_labels.")
    if autoencoder is None:
        return DiffusionInferer(scheduler).sample(noise, model, scheduler=scheduler, verbose=verbose)
    inferer = LatentDiffusionInferer(scheduler, scale_factor=scale_factor)
    return inferer.sample(noise, autoencoder, model, scheduler=scheduler, verbose=verbose)
