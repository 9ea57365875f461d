"""Reconstruction objective of a MONAI ``AutoencoderKL``: L1 + KL (+ optional perceptual), as in latent diffusion.

Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", https://arxiv.org/abs/2112.10752:
the first stage is trained with a pixel loss, a small KL penalty towards ``N(0, I)`` (so the latent space stays
smooth) and optionally a perceptual loss; the patch adversarial part lives in
:mod:`~monai_dclcstp.generative.adversarial`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["kl_divergence", "AutoencoderKLLoss"]


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL divergence ``KL(N(mu, sigma^2) || N(0, 1))`` summed over the latent elements, averaged over the batch.

    This is the form of MONAI's generative tutorials (sum over ``C, H, W[, D]``, mean over ``B``).

    Args:
        z_mu: posterior means ``(B, C_latent, *latent_spatial)``.
        z_sigma: posterior standard deviations, same shape, positive.

    Returns:
        scalar tensor.
    """
    if z_mu.shape != z_sigma.shape:
        raise ValueError(f"z_mu {tuple(z_mu.shape)} and z_sigma {tuple(z_sigma.shape)} must have the same shape.")
    var = z_sigma.float().pow(2)
    kl = 0.5 * (z_mu.float().pow(2) + var - torch.log(var.clamp_min(1e-12)) - 1.0)
    return kl.flatten(1).sum(1).mean()


class AutoencoderKLLoss(nn.Module):
    """``l1_weight * |x - x_rec| + kl_weight * KL + perceptual_weight * perceptual(x_rec, x)``.

    Args:
        l1_weight: weight of the mean absolute reconstruction error.
        kl_weight: weight of :func:`kl_divergence` (MONAI tutorials: ``1e-6``).
        perceptual_loss: a module ``f(reconstruction, target) -> scalar`` (e.g. from
            :func:`~monai_dclcstp.generative.perceptual.build_perceptual_loss`), or ``None`` for none.
        perceptual_weight: weight of the perceptual term (ignored without ``perceptual_loss``).

    Returns (``forward``):
        a dict of scalar tensors: ``loss`` (the weighted sum, for backprop), ``loss_l1``, ``loss_kl`` and
        ``loss_perceptual`` (unweighted; 0 without a perceptual loss).
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        kl_weight: float = 1e-6,
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 0.001,
    ) -> None:
        super().__init__()
        for name, value in (
            ("l1_weight", l1_weight),
            ("kl_weight", kl_weight),
            ("perceptual_weight", perceptual_weight),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.l1_weight = float(l1_weight)
        self.kl_weight = float(kl_weight)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)

    def forward(
        self, reconstruction: torch.Tensor, target: torch.Tensor, z_mu: torch.Tensor, z_sigma: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            reconstruction: decoder output ``(B, C, H, W[, D])``.
            target: input images, same shape.
            z_mu: posterior means ``(B, C_latent, *latent_spatial)``.
            z_sigma: posterior standard deviations, same shape as ``z_mu``.
        """
        if reconstruction.shape != target.shape:
            raise ValueError(
                f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} differ in shape."
            )
        l1 = (reconstruction.float() - target.float()).abs().mean()
        kl = kl_divergence(z_mu, z_sigma)
        total = self.l1_weight * l1 + self.kl_weight * kl
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            perceptual = self.perceptual_loss(reconstruction.float(), target.float())
            total = total + self.perceptual_weight * perceptual
        else:
            perceptual = torch.zeros((), device=l1.device)
        return {"loss": total, "loss_l1": l1, "loss_kl": kl, "loss_perceptual": perceptual}
