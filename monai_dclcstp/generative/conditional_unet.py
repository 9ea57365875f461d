"""``DiffusionModelUNet`` that also takes class labels through ``context``, so MONAI's inferers can pass them.

MONAI's ``DiffusionInferer``/``LatentDiffusionInferer`` (training ``__call__`` and ``sample``) and
``DiffusionPrepareBatch(condition_name=...)`` hand the condition to the network as ``context=`` only; the class
embedding of ``DiffusionModelUNet(num_class_embeds=...)`` needs ``class_labels=``. This subclass routes an integer-valued
``context`` to ``class_labels`` when the network has no cross-attention, so class-conditional training and sampling run
with MONAI's ``SupervisedTrainer`` and inferers unchanged. The state dict is that of ``DiffusionModelUNet``
(``load_old_state_dict`` works as well).
"""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet

__all__ = ["ClassConditionalDiffusionUNet"]


class ClassConditionalDiffusionUNet(DiffusionModelUNet):
    """Class-conditional diffusion U-Net (Ho & Salimans, classifier-free guidance, https://arxiv.org/abs/2207.12598).

    Same arguments as ``monai.networks.nets.DiffusionModelUNet``; ``num_class_embeds`` is required. To train for
    classifier-free guidance use ``num_class_embeds = num_classes + 1`` and the extra index ``num_classes`` as the
    "no class" label (see ``LatentDiffusionPrepareBatch(label_dropout=..., null_label=...)``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.num_class_embeds is None:
            raise ValueError("ClassConditionalDiffusionUNet needs num_class_embeds (number of class labels).")

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            x: noisy input ``(B, C, H, W[, D])``.
            timesteps: ``(B,)`` or ``(1,)`` diffusion timesteps.
            context: without cross-attention (``with_conditioning=False``): class labels ``(B,)`` or ``(B, 1)``
                with integer values; with cross-attention: the cross-attention context ``(B, N, cross_attention_dim)``.
            class_labels: class labels ``(B,)``; takes precedence over ``context``.

        Returns:
            the prediction, shaped like ``x``.
        """
        if class_labels is None and context is not None and not self.with_conditioning:
            class_labels, context = context, None
        if class_labels is not None:
            class_labels = self._check_labels(class_labels, x.shape[0])
        return super().forward(
            x,
            timesteps,
            context=context,
            class_labels=class_labels,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
        )

    def _check_labels(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.numel() != batch:
            raise ValueError(f"expected {batch} class labels (one per image), got shape {tuple(labels.shape)}.")
        labels = labels.reshape(batch)
        if labels.is_floating_point():
            if not torch.equal(labels, labels.round()):
                raise ValueError(f"class labels must be integers, got {labels.tolist()}.")
        labels = labels.long()
        if labels.min() < 0 or labels.max() >= self.num_class_embeds:
            raise ValueError(
                f"class labels must be in [0, {self.num_class_embeds}) (num_class_embeds), got {labels.tolist()}."
            )
        return labels
