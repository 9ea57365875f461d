"""``output_transform`` functions that turn a classification evaluator's output into metric inputs.

MONAI evaluators decollate their output into a list of per-image dicts; Ignite metrics (``Accuracy``, ``Recall``)
want ``(y_pred (B, K), y (B,))`` and MONAI's ``ROCAUC`` wants ``(y_pred (B, K), y (B, K) one-hot)``. Use them in a
bundle config as ``"output_transform": "$monai_dclcstp.handlers.classification_outputs.probs_and_labels"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = ["probs_and_labels", "probs_and_onehot"]


def _stack(output: Sequence[Mapping] | Mapping, pred_key: str, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(output, Mapping):
        pred, label = torch.as_tensor(output[pred_key]), torch.as_tensor(output[label_key])
    else:
        pred = torch.stack([torch.as_tensor(o[pred_key]).reshape(-1) for o in output])
        label = torch.stack([torch.as_tensor(o[label_key]).reshape(-1) for o in output])
    pred = pred.reshape(pred.shape[0], -1).float()
    label = label.reshape(label.shape[0], -1)
    if label.shape[1] == pred.shape[1] and pred.shape[1] > 1:  # one-hot
        label = label.argmax(dim=1)
    return pred, label.reshape(-1).long()


def probs_and_labels(
    output: Sequence[Mapping] | Mapping, pred_key: str = "pred", label_key: str = "label"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluator output → ``(probabilities (B, K) float, class indices (B,) long)``."""
    return _stack(output, pred_key, label_key)


def probs_and_onehot(
    output: Sequence[Mapping] | Mapping, pred_key: str = "pred", label_key: str = "label"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluator output → ``(probabilities (B, K) float, one-hot labels (B, K) float)``."""
    pred, label = _stack(output, pred_key, label_key)
    return pred, torch.nn.functional.one_hot(label, pred.shape[1]).float()
