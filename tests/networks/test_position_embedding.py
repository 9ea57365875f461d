"""sincos_position_embedding: N-D layout, widths not divisible by 2*N, token order of flatten(2)."""

from __future__ import annotations

import math

import pytest
import torch

from monai_dclcstp.networks import sincos_position_embedding


def _reference(grid, embed_dim, temperature=10000.0):
    """Explicit loops: for axis a, channels [2aK, 2aK+K) hold sin(p_a w_k), [2aK+K, 2aK+2K) cos(p_a w_k); rest 0."""
    n_axes = len(grid)
    per_axis = embed_dim // (2 * n_axes)
    rows = []
    for index in range(math.prod(grid)):
        pos, rest = [], index
        for size in reversed(grid):  # flatten order: the last axis varies fastest
            pos.insert(0, rest % size)
            rest //= size
        row = [0.0] * embed_dim
        for a, p in enumerate(pos):
            for k in range(per_axis):
                w = 1.0 / temperature ** (k / per_axis)
                row[2 * a * per_axis + k] = math.sin(p * w)
                row[2 * a * per_axis + per_axis + k] = math.cos(p * w)
        rows.append(row)
    return torch.tensor(rows)


# [grid, embed_dim]: divisible and non-divisible widths, 2D and 3D
CASES = [[(3, 5), 16], [(3, 5), 10], [(4, 2), 7], [(2, 3, 4), 24], [(2, 3, 4), 20], [(3, 1, 2), 13], [(1, 1), 4]]


@pytest.mark.parametrize("grid, embed_dim", CASES)
def test_matches_reference(grid, embed_dim):
    emb = sincos_position_embedding(grid, embed_dim)
    assert tuple(emb.shape) == (math.prod(grid), embed_dim)
    torch.testing.assert_close(emb, _reference(grid, embed_dim), atol=1e-5, rtol=1e-5)
    used = 2 * len(grid) * (embed_dim // (2 * len(grid)))
    assert (emb[:, used:] == 0).all()
    if math.prod(grid) > 1:  # every position gets its own code
        assert torch.cdist(emb, emb).add(torch.eye(len(emb)) * 10).min() > 1e-3


def test_order_matches_flatten():
    """Row n of the embedding belongs to the cell that flatten(2) puts at n: compare against a coordinate map."""
    grid = (3, 4, 2)
    coords = torch.stack(torch.meshgrid([torch.arange(s) for s in grid], indexing="ij"))[None].float()  # (1, 3, *grid)
    flat = coords.flatten(2)[0].T  # (N, 3)
    emb = sincos_position_embedding(grid, 6)  # one sin and one cos channel per axis, frequency 1
    torch.testing.assert_close(emb[:, 0::2], torch.sin(flat))
    torch.testing.assert_close(emb[:, 1::2], torch.cos(flat))


@pytest.mark.parametrize("grid, embed_dim", [[(3, 3), 3], [(2, 2, 2), 5]])
def test_too_narrow(grid, embed_dim):
    with pytest.raises(ValueError, match="too small"):
        sincos_position_embedding(grid, embed_dim)
