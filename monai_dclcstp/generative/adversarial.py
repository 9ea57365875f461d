"""Patch adversarial losses for the autoencoder, on top of MONAI's ``PatchAdversarialLoss``.

MONAI's ``PatchDiscriminator`` returns the list of its intermediate feature maps with the patch logits last; the
generator and discriminator terms of the VAE-GAN (Esser et al., "Taming Transformers", https://arxiv.org/abs/2012.09841,
as in MONAI's generative tutorials) are computed on those logits only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import PatchAdversarialLoss
from torch import nn

__all__ = ["PatchGeneratorLoss", "PatchDiscriminatorLoss"]


def _logits(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The patch logits: the tensor itself, or the last item of a ``PatchDiscriminator`` output list."""
    if isinstance(output, torch.Tensor):
        return output
    if not output:
        raise ValueError("the discriminator returned an empty list.")
    return output[-1]


class PatchGeneratorLoss(nn.Module):
    """``weight * adversarial(D(fake) -> real)``: the generator wants its reconstructions judged real.

    Args:
        weight: weight of the term in the generator objective (MONAI tutorials: ``0.01``).
        criterion: ``"least_squares"``, ``"bce"`` or ``"hinge"`` (see ``monai.losses.PatchAdversarialLoss``).

    ``forward(fake_output)`` takes the discriminator output (tensor or ``PatchDiscriminator`` list) on the
    reconstructions and returns a scalar.
    """

    def __init__(self, weight: float = 0.01, criterion: str = "least_squares") -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"adversarial weight must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.adversarial = PatchAdversarialLoss(criterion=criterion)

    def forward(self, fake_output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        logits = _logits(fake_output).float()
        return self.weight * self.adversarial(logits, target_is_real=True, for_discriminator=False)


class PatchDiscriminatorLoss(nn.Module):
    """``weight * (adversarial(D(real) -> real) + adversarial(D(fake) -> fake)) / 2``.

    Args:
        weight: weight of the discriminator objective.
        criterion: ``"least_squares"``, ``"bce"`` or ``"hinge"``.

    ``forward(real_output, fake_output)`` takes the discriminator outputs on real images and on (detached)
    reconstructions and returns a scalar.
    """

    def __init__(self, weight: float = 1.0, criterion: str = "least_squares") -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"discriminator weight must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.adversarial = PatchAdversarialLoss(criterion=criterion)

    def forward(
        self, real_output: torch.Tensor | Sequence[torch.Tensor], fake_output: torch.Tensor | Sequence[torch.Tensor]
    ) -> torch.Tensor:
        real = self.adversarial(_logits(real_output).float(), target_is_real=True, for_discriminator=True)
        fake = self.adversarial(_logits(fake_output).float(), target_is_real=False, for_discriminator=True)
        return self.weight * 0.5 * (real + fake)
