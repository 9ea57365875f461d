"""Exact t-SNE in numpy (van der Maaten & Hinton, JMLR 2008), for the embedding maps of the documentation.

A few hundred points need no Barnes-Hut approximation, and this keeps scikit-learn out of the docs dependencies.
The optimiser follows the paper and scikit-learn's defaults: PCA to ``pca_dims`` first, perplexity-calibrated Gaussian
affinities (binary search on the precision), early exaggeration 12 for 250 iterations with momentum 0.5, then
momentum 0.8, delta-bar-delta gains, learning rate ``max(N / 12 / 4, 50)``, PCA initialisation (std 1e-4).
Deterministic: no random numbers are drawn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pca", "tsne", "joint_probabilities"]


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """Project ``x`` ``(N, F)`` on its first ``dims`` principal components (signs fixed: largest |loading| positive)."""
    x = x - x.mean(axis=0, keepdims=True)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    dims = min(dims, vt.shape[0])
    signs = np.sign(vt[np.arange(dims), np.abs(vt[:dims]).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return (u[:, :dims] * s[:dims]) * signs


def joint_probabilities(x: np.ndarray, perplexity: float = 30.0, tol: float = 1e-5, max_iter: int = 100) -> np.ndarray:
    """Symmetric affinities ``P`` ``(N, N)`` (sum 1) with each row's conditional perplexity equal to ``perplexity``."""
    n = x.shape[0]
    if not 1.0 <= perplexity < n:
        raise ValueError(f"perplexity must be in [1, N) = [1, {n}), got {perplexity}.")
    sq = np.square(x).sum(axis=1)
    d = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        di = np.delete(d[i], i)
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(max_iter):
            w = np.exp(-(di - di.min()) * beta)
            s = w.sum()
            h = np.log(s) + beta * float((di - di.min()) @ w) / s  # entropy (nats) of the conditional
            if abs(h - target) < tol:
                break
            if h > target:
                lo, beta = beta, beta * 2.0 if hi == np.inf else (beta + hi) / 2.0
            else:
                hi, beta = beta, (beta + lo) / 2.0
        p[i, np.arange(n) != i] = w / s
    p = (p + p.T) / (2.0 * n)
    return np.maximum(p, 1e-12)


def tsne(
    x: np.ndarray,
    dims: int = 2,
    perplexity: float = 30.0,
    pca_dims: int = 50,
    n_iter: int = 1000,
    exaggeration: float = 12.0,
    exaggeration_iter: int = 250,
) -> np.ndarray:
    """Embed ``x`` ``(N, F)`` in ``dims`` dimensions → ``(N, dims)``.

    Raises:
        ValueError: fewer than 4 points, or a perplexity that does not fit ``N``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if x.ndim != 2 or n < 4:
        raise ValueError(f"t-SNE needs an (N, F) array with N >= 4, got shape {x.shape}.")
    perplexity = min(perplexity, (n - 1) / 3.0)
    if x.shape[1] > pca_dims:
        x = pca(x, pca_dims)
    p = joint_probabilities(x, perplexity)
    y = pca(x, dims)
    y = y / (y[:, 0].std() + 1e-12) * 1e-4
    lr = max(n / exaggeration / 4.0, 50.0)
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(n_iter):
        exag = exaggeration if it < exaggeration_iter else 1.0
        momentum = 0.5 if it < exaggeration_iter else 0.8
        sq = np.square(y).sum(axis=1)
        num = 1.0 / (1.0 + np.maximum(sq[:, None] + sq[None, :] - 2.0 * y @ y.T, 0.0))  # Student-t kernel
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (exag * p - q) * num  # (N, N)
        grad = 4.0 * (np.diag(w.sum(axis=1)) - w) @ y
        inc = np.sign(grad) != np.sign(velocity)
        gains = np.maximum(np.where(inc, gains + 0.2, gains * 0.8), 0.01)
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(axis=0, keepdims=True)
    return y
