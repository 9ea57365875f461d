"""Classification metrics from class probabilities: the evaluation report's numbers and the decision threshold.

Per-class sensitivity, specificity, precision and F1 come from MONAI's ``compute_confusion_matrix_metric`` on the
one-vs-rest counts of the ``K x K`` confusion matrix, ROC-AUC from MONAI's ``compute_roc_auc``. For two classes the
headline numbers are those of ``positive_class`` (sensitivity = its recall, specificity = the other class's recall);
for more classes they are macro averages. Undefined values (e.g. AUC when one class is absent) are ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric, compute_roc_auc

__all__ = ["confusion_matrix", "select_threshold", "predict_classes", "classification_metrics"]

_PER_CLASS = {"sensitivity": "sensitivity", "specificity": "specificity", "precision": "precision", "f1": "f1 score"}


def _as_tensors(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64) if not isinstance(probs, torch.Tensor) else probs)
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long().reshape(-1)
    p = p.double()
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"need probabilities (N, K) and labels (N,), got {tuple(p.shape)} and {tuple(y.shape)}.")
    if p.shape[1] < 2:
        raise ValueError(f"need at least two class columns, got {p.shape[1]}.")
    if y.numel() and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must be in 0..{p.shape[1] - 1}, got [{int(y.min())}, {int(y.max())}].")
    return p, y


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """``(K, K)`` int matrix: row = true class, column = predicted class."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(predictions, dtype=np.int64).reshape(-1)
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def predict_classes(probs: Any, threshold: float | None = None, positive_class: int = 1) -> np.ndarray:
    """Predicted class per row: argmax, or for two classes ``positive_class`` when its probability >= ``threshold``."""
    p = np.asarray(probs.detach().cpu() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if threshold is None or p.shape[1] != 2:
        return p.argmax(axis=1)
    return np.where(p[:, positive_class] >= threshold, positive_class, 1 - positive_class)


def select_threshold(probs: Any, labels: Any, positive_class: int = 1) -> float:
    """Decision threshold on the positive-class probability that maximises Youden's J (sensitivity + specificity - 1).

    Candidates are the midpoints between consecutive distinct scores; ties go to the one closest to 0.5. With a single
    class present, 0.5 is returned.

    Args:
        probs: ``(N, 2)`` class probabilities.
        labels: ``(N,)`` true classes.
        positive_class: 0 or 1.

    Returns:
        the threshold (a positive prediction is ``p[:, positive_class] >= threshold``).
    """
    p, y = _as_tensors(probs, labels)
    if p.shape[1] != 2:
        raise ValueError(f"threshold selection needs two classes, got {p.shape[1]}.")
    score = p[:, positive_class].numpy()
    pos = y.numpy() == positive_class
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    values = np.unique(score)
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    tpr = np.array([(score[pos] >= t).sum() for t in candidates]) / n_pos
    tnr = np.array([(score[~pos] < t).sum() for t in candidates]) / n_neg
    j = tpr + tnr - 1.0
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def _clean(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    return value


def classification_metrics(
    probs: Any,
    labels: Any,
    threshold: float | None = None,
    positive_class: int = 1,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, sensitivity, specificity, precision, F1, ROC-AUC and the confusion matrix.

    Args:
        probs: ``(N, K)`` class probabilities (rows sum to 1).
        labels: ``(N,)`` true class indices.
        threshold: two classes only: predict ``positive_class`` when its probability >= ``threshold``;
            ``None`` = argmax.
        positive_class: the class whose sensitivity/specificity/precision/F1 are the headline for two classes.
        classes: class names (default ``class_<i>``).

    Returns:
        ``{"num_samples", "num_classes", "classes", "positive_class", "threshold", "accuracy", "balanced_accuracy",
        "sensitivity", "specificity", "precision", "f1", "auc", "per_class": {name: {"support", "sensitivity",
        "specificity", "precision", "f1", "auc"}}, "confusion_matrix": [[...]]}``; undefined values are ``None``.
    """
    p, y = _as_tensors(probs, labels)
    n, k = p.shape
    names = list(classes) if classes is not None else [f"class_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} probability columns.")
    if k == 2 and positive_class not in (0, 1):
        raise ValueError(f"positive_class must be 0 or 1 for two classes, got {positive_class}.")
    pred = predict_classes(p, threshold if k == 2 else None, positive_class)
    cm = confusion_matrix(y.numpy(), pred, k)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    counts = torch.as_tensor(np.stack([tp, fp, tn, fn], axis=1))  # (K, 4): MONAI's [TP, FP, TN, FN] per class
    per_metric = {key: compute_confusion_matrix_metric(name, counts).numpy() for key, name in _PER_CLASS.items()}
    onehot = torch.nn.functional.one_hot(y, k).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class absent: MONAI warns and returns nan
        aucs = compute_roc_auc(p, onehot, average="none") if n else [float("nan")] * k
    support = cm.sum(axis=1)
    per_class = {
        names[c]: {
            "support": int(support[c]),
            **{key: _clean(per_metric[key][c]) for key in _PER_CLASS},
            "auc": _clean(aucs[c]),
        }
        for c in range(k)
    }
    recalls = [per_metric["sensitivity"][c] for c in range(k) if support[c] > 0]
    out: dict[str, Any] = {
        "num_samples": int(n),
        "num_classes": int(k),
        "classes": names,
        "positive_class": int(positive_class) if k == 2 else None,
        "threshold": float(threshold) if (threshold is not None and k == 2) else None,
        "accuracy": _clean(float(tp.sum() / n) if n else float("nan")),
        "balanced_accuracy": _clean(float(np.mean(recalls)) if recalls else float("nan")),
    }
    if k == 2:
        head = per_class[names[positive_class]]
        out.update({key: head[key] for key in (*_PER_CLASS, "auc")})
    else:
        for key in (*_PER_CLASS, "auc"):
            vals = [v[key] for v in per_class.values() if v[key] is not None]
            out[key] = _clean(float(np.mean(vals))) if vals else None
    out["per_class"] = per_class
    out["confusion_matrix"] = cm.tolist()
    return out
