"""DenseInfoNCELoss: explicit-loop reference with geometry, DenseCL fallback, image vs batch negatives, sanity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_dclcstp.losses import DenseInfoNCELoss, identity_geometry, positive_mask


def _unit_map(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=1)


def _reference(query, key, pos, temperature, negatives):
    """Explicit loops over images, query tokens and candidate key tokens.

    ``pos`` (B, N_q, N_k) bool within each image; candidates are the key tokens of the same image ("image") or of all
    images ("batch"). Mean over query tokens with at least one positive of -log(sum_pos exp / sum_all exp).
    """
    b, d = query.shape[:2]
    q = query.reshape(b, d, -1)
    k = key.reshape(b, d, -1)
    n_q, n_k = q.shape[2], k.shape[2]
    losses = []
    for i in range(b):
        for n in range(n_q):
            positives = [m for m in range(n_k) if pos[i, n, m]]
            if not positives:
                continue
            images = [i] if negatives == "image" else range(b)
            denominator = sum(
                math.exp(float(q[i, :, n] @ k[j, :, m]) / temperature) for j in images for m in range(n_k)
            )
            numerator = sum(math.exp(float(q[i, :, n] @ k[i, :, m]) / temperature) for m in positives)
            losses.append(-math.log(numerator / denominator))
    return sum(losses) / len(losses)


GEOMETRIES = {
    # (B=2) view a: left half / whole image; view b: right 3/4 flipped / bottom half
    "a": torch.tensor([[[0, 0], [8, 4], [0, 0]], [[0, 0], [8, 8], [0, 0]]], dtype=torch.float32),
    "b": torch.tensor([[[0, 2], [8, 6], [0, 1]], [[4, 0], [4, 8], [1, 0]]], dtype=torch.float32),
}


@pytest.mark.parametrize("negatives", ["image", "batch"])
@pytest.mark.parametrize(
    "temperature, grid_q, grid_k", [(0.2, (2, 2), (2, 2)), (0.5, (4, 4), (2, 4)), (1.0, (4, 2), (4, 4))]
)
def test_geometry_loss_matches_reference(negatives, temperature, grid_q, grid_k):
    query, key = _unit_map(2, 5, *grid_q, seed=1), _unit_map(2, 5, *grid_k, seed=2)
    loss_fn = DenseInfoNCELoss(temperature=temperature, negatives=negatives)
    loss = loss_fn(query, key, GEOMETRIES["a"], GEOMETRIES["b"])
    pos = positive_mask(GEOMETRIES["a"], GEOMETRIES["b"], grid_q, grid_k)
    assert pos.any() and not pos.all()
    assert loss.ndim == 0
    assert math.isclose(float(loss), _reference(query, key, pos, temperature, negatives), rel_tol=1e-5)


def test_3d_loss_matches_reference():
    geom_a = torch.tensor([[[0, 0, 0], [8, 4, 8], [0, 0, 1]]], dtype=torch.float32)
    geom_b = torch.tensor([[[0, 2, 4], [8, 6, 4], [1, 1, 0]]], dtype=torch.float32)
    query, key = _unit_map(1, 4, 2, 2, 2, seed=3), _unit_map(1, 4, 2, 2, 2, seed=4)
    loss = DenseInfoNCELoss(0.3, negatives="image")(query, key, geom_a, geom_b)
    pos = positive_mask(geom_a, geom_b, (2, 2, 2), (2, 2, 2))
    assert pos.any()
    assert math.isclose(float(loss), _reference(query, key, pos, 0.3, "image"), rel_tol=1e-5)


@pytest.mark.parametrize("negatives", ["image", "batch"])
def test_identical_views_beat_shuffled_tokens(negatives):
    """Same image, same geometry: matching key map → low loss; the key tokens spatially permuted → higher loss."""
    query = _unit_map(2, 16, 4, 4, seed=5)
    geometry = identity_geometry((32, 32), batch_size=2)
    loss_fn = DenseInfoNCELoss(0.2, negatives=negatives)
    same = loss_fn(query, query.clone(), geometry, geometry)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    shuffled_key = query.flatten(2)[:, :, perm].reshape_as(query)
    shuffled = loss_fn(query, shuffled_key, geometry, geometry)
    assert float(same) < float(shuffled) - 1.0
    # identity geometry on a 4x4 grid: each token's only positive is itself (neighbours are 1/sqrt(2) > 0.7 apart)
    assert torch.equal(positive_mask(geometry, geometry, (4, 4), (4, 4))[0], torch.eye(16, dtype=torch.bool))


def test_densecl_fallback_picks_argmax_positive():
    """Without geometry the positive of each query token is its most similar key token of the same image."""
    query = _unit_map(2, 8, 3, 3, seed=6)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    key_tokens = query.flatten(2)[:, :, perm] + 0.05 * torch.randn(2, 8, 9, generator=torch.Generator().manual_seed(2))
    key = F.normalize(key_tokens, dim=1).reshape_as(query)
    loss_fn = DenseInfoNCELoss(0.2, negatives="batch")
    pos = loss_fn.positives(query, key, None, None)
    # the permuted copy is recovered exactly: query token perm[m] matches key token m
    expected = torch.zeros(2, 9, 9, dtype=torch.bool)
    expected[:, perm, torch.arange(9)] = True
    assert torch.equal(pos, expected)
    # and in general it is the argmax of the similarities, one positive per query token
    other = _unit_map(2, 8, 3, 3, seed=7)
    pos_other = loss_fn.positives(query, other, None, None)
    sim = torch.einsum("bdn,bdm->bnm", query.flatten(2), other.flatten(2))
    assert torch.equal(pos_other.float().argmax(2), sim.argmax(2)) and (pos_other.sum(2) == 1).all()
    loss = loss_fn(query, other)
    assert math.isclose(float(loss), _reference(query, other, pos_other, 0.2, "batch"), rel_tol=1e-5)


def test_densecl_fallback_gradient_flows_through_logits_only():
    query = _unit_map(1, 4, 2, 2, seed=8).requires_grad_(True)
    key = _unit_map(1, 4, 2, 2, seed=9)
    DenseInfoNCELoss(0.2)(query, key).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_image_vs_batch_negatives():
    query, key = _unit_map(3, 6, 2, 2, seed=10), _unit_map(3, 6, 2, 2, seed=11)
    geometry = identity_geometry((16, 16), batch_size=3)
    image = DenseInfoNCELoss(0.2, negatives="image")(query, key, geometry, geometry)
    batch = DenseInfoNCELoss(0.2, negatives="batch")(query, key, geometry, geometry)
    assert float(batch) > float(image)  # the other images' tokens only add negatives
    one_image = [
        DenseInfoNCELoss(0.2, negatives=n)(query[:1], key[:1], geometry[:1], geometry[:1]) for n in ("image", "batch")
    ]
    torch.testing.assert_close(one_image[0], one_image[1])


def test_no_overlap_gives_zero_loss_with_graph():
    query = _unit_map(1, 4, 2, 2, seed=12).requires_grad_(True)
    key = _unit_map(1, 4, 2, 2, seed=13)
    left = torch.tensor([[[0, 0], [8, 4], [0, 0]]], dtype=torch.float32)
    right = torch.tensor([[[0, 20], [8, 4], [0, 0]]], dtype=torch.float32)
    loss = DenseInfoNCELoss(0.2)(query, key, left, right)
    assert loss.requires_grad and loss.item() == 0.0
    loss.backward()
    assert torch.equal(query.grad, torch.zeros_like(query))


def test_partial_overlap_averages_over_valid_queries_only():
    """Queries without any positive do not count: the loss equals the loss over the overlapping query tokens."""
    geom_a = torch.tensor([[[0, 0], [8, 8], [0, 0]]], dtype=torch.float32)
    geom_b = torch.tensor([[[0, 4], [8, 8], [0, 0]]], dtype=torch.float32)  # shifted right by half
    query, key = _unit_map(1, 6, 2, 2, seed=14), _unit_map(1, 6, 2, 2, seed=15)
    pos = positive_mask(geom_a, geom_b, (2, 2), (2, 2))
    assert pos.any(2).sum() == 2  # only the right column of view a overlaps
    query.requires_grad_(True)
    loss = DenseInfoNCELoss(0.2, negatives="image")(query, key, geom_a, geom_b)
    assert math.isclose(loss.item(), _reference(query.detach(), key, pos, 0.2, "image"), rel_tol=1e-5)
    loss.backward()  # the rows without positives (all -inf before logsumexp) must not poison the gradient
    assert torch.isfinite(query.grad).all()
    assert query.grad[0, :, :, 0].abs().sum() == 0 and query.grad[0, :, :, 1].abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, error",
    [
        [{"temperature": 0.0}, "temperature"],
        [{"pos_threshold": -1.0}, "pos_threshold"],
        [{"negatives": "all"}, "negatives"],
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        DenseInfoNCELoss(**kwargs)


def test_bad_inputs():
    loss_fn = DenseInfoNCELoss()
    q = _unit_map(2, 4, 2, 2)
    with pytest.raises(ValueError, match="both views or of neither"):
        loss_fn(q, q, identity_geometry((8, 8), 2), None)
    with pytest.raises(ValueError, match="maps"):
        loss_fn(q, _unit_map(3, 4, 2, 2))
    with pytest.raises(ValueError, match="maps"):
        loss_fn(q.flatten(1), q.flatten(1))
