"""token_centres / positive_mask against hand-computed geometry and against real crops and flips of coordinate maps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_dclcstp.losses import identity_geometry, positive_mask, token_centres


def _geometry(start, size, flip):
    return torch.tensor([start, size, flip], dtype=torch.float32)[None]  # (1, 3, N_dims)


def _centres_by_pixels(shape, start, size, flip, grid):
    """Token centres as the mean coordinate of the pixels each token covers, in the order of tensor.flatten(2).

    Built from the pixels, not from the formula: a coordinate map of the image, super-sampled ``k`` times so that every
    token covers whole sub-pixels, is cut with slicing, flipped with ``torch.flip`` and average-pooled to the grid.
    """
    k = math.lcm(*grid)
    coords = torch.stack(torch.meshgrid([(torch.arange(s * k) + 0.5) / k for s in shape], indexing="ij")).float()
    view = coords[(slice(None), *[slice(a * k, (a + s) * k) for a, s in zip(start, size)])]
    dims = [i + 1 for i, f in enumerate(flip) if f]
    view = torch.flip(view, dims)[None] if dims else view[None]
    pooled = F.adaptive_avg_pool2d(view, grid) if len(grid) == 2 else F.adaptive_avg_pool3d(view, grid)
    return pooled.flatten(2)[0].T  # (N, N_dims)


# view a = left half of an 8x8 image; view b = right 3/4, flipped horizontally
GEOM_A = _geometry((0, 0), (8, 4), (0, 0))
GEOM_B = _geometry((0, 2), (8, 6), (0, 1))


def test_token_centres_2x2_by_hand():
    ca, bins_a = token_centres(GEOM_A, (2, 2))
    cb, bins_b = token_centres(GEOM_B, (2, 2))
    torch.testing.assert_close(ca[0], torch.tensor([[2.0, 1.0], [2.0, 3.0], [6.0, 1.0], [6.0, 3.0]]))
    # flipped columns: the first token column of view b sits at the right end of its box
    torch.testing.assert_close(cb[0], torch.tensor([[2.0, 6.5], [2.0, 3.5], [6.0, 6.5], [6.0, 3.5]]))
    torch.testing.assert_close(bins_a[0], torch.tensor([4.0, 2.0]))
    torch.testing.assert_close(bins_b[0], torch.tensor([4.0, 3.0]))


def test_positive_mask_2x2_by_hand():
    # bin diagonals: a sqrt(4^2 + 2^2) = 4.47, b sqrt(4^2 + 3^2) = 5 → positive when the centre distance < 0.7 * 5 = 3.5
    # a(2,1)-b(2,3.5): 2.5 yes; a(2,3)-b(2,3.5): 0.5 yes; a(2,3)-b(2,6.5): 3.5 not < 3.5; rows 6 likewise
    expected = torch.tensor(
        [
            [False, True, False, False],
            [False, True, False, False],
            [False, False, False, True],
            [False, False, False, True],
        ]
    )
    mask = positive_mask(GEOM_A, GEOM_B, (2, 2), (2, 2))
    assert mask.dtype == torch.bool and mask.shape == (1, 4, 4)
    assert torch.equal(mask[0], expected)
    assert torch.equal(positive_mask(GEOM_B, GEOM_A, (2, 2), (2, 2))[0], expected.T)
    # a larger threshold admits a(2,3)-b(2,6.5) (distance 3.5 < 0.8 * 5 = 4)
    loose = positive_mask(GEOM_A, GEOM_B, (2, 2), (2, 2), threshold=0.8)[0]
    assert torch.equal(loose, expected | torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]).bool())


def _reference_mask(cases, grids, threshold, shape):
    """Pixel-based reference: centres from real crops/flips of a coordinate map, bins = box size / grid."""
    (sa, za, fa), (sb, zb, fb) = cases
    ca = _centres_by_pixels(shape, sa, za, fa, grids[0])
    cb = _centres_by_pixels(shape, sb, zb, fb, grids[1])
    diag_a = math.sqrt(sum((z / g) ** 2 for z, g in zip(za, grids[0])))
    diag_b = math.sqrt(sum((z / g) ** 2 for z, g in zip(zb, grids[1])))
    scale = max(diag_a, diag_b)
    mask = torch.zeros(len(ca), len(cb), dtype=torch.bool)
    for i in range(len(ca)):
        for j in range(len(cb)):
            mask[i, j] = math.dist(ca[i].tolist(), cb[j].tolist()) / scale < threshold
    return mask


# [(view a box, view b box), (grid a, grid b), threshold, image shape]; boxes are (start, size, flip)
MASK_CASES = [
    [(((0, 0), (8, 4), (0, 0)), ((0, 2), (8, 6), (0, 1))), ((4, 4), (4, 4)), 0.7, (8, 8)],
    [(((0, 0), (8, 4), (0, 0)), ((0, 2), (8, 6), (0, 1))), ((2, 2), (4, 4)), 0.7, (8, 8)],
    [(((0, 0), (8, 8), (1, 0)), ((4, 0), (4, 8), (0, 0))), ((4, 4), (2, 4)), 0.7, (8, 8)],
    [(((2, 1), (12, 8), (1, 1)), ((0, 3), (8, 12), (0, 1))), ((4, 4), (4, 4)), 1.0, (16, 16)],
    [(((0, 0, 0), (8, 4, 8), (0, 0, 1)), ((0, 2, 4), (8, 6, 4), (1, 1, 0))), ((4, 2, 4), (2, 2, 2)), 0.7, (8, 8, 8)],
    [(((0, 0, 0), (8, 8, 4), (0, 1, 0)), ((0, 0, 0), (8, 8, 4), (0, 0, 0))), ((4, 4, 2), (4, 4, 2)), 0.5, (8, 8, 8)],
]


@pytest.mark.parametrize("cases, grids, threshold, shape", MASK_CASES)
def test_positive_mask_matches_pixel_reference(cases, grids, threshold, shape):
    expected = _reference_mask(cases, grids, threshold, shape)
    assert expected.any() and not expected.all()  # the case is not trivial
    ga, gb = (_geometry(*c) for c in cases)
    mask = positive_mask(ga, gb, grids[0], grids[1], threshold)
    assert torch.equal(mask[0], expected)


def test_flip_only_views_match_mirrored_tokens():
    """Whole image vs its horizontal mirror, 4x4 tokens, tight threshold: token (r, c) ↔ token (r, 3 - c) only."""
    mask = positive_mask(_geometry((0, 0), (8, 8), (0, 0)), _geometry((0, 0), (8, 8), (0, 1)), (4, 4), (4, 4), 0.5)[0]
    expected = torch.zeros(16, 16, dtype=torch.bool)
    for r in range(4):
        for c in range(4):
            expected[4 * r + c, 4 * r + 3 - c] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize(
    "box, grid, shape",
    [
        (((1, 2), (6, 4), (0, 0)), (3, 2), (8, 8)),
        (((1, 2), (6, 4), (1, 1)), (2, 4), (8, 8)),
        (((0, 3), (9, 6), (0, 1)), (3, 3), (9, 10)),
        (((1, 0, 2), (4, 6, 2), (1, 0, 1)), (2, 3, 2), (6, 6, 6)),
    ],
)
def test_token_centres_order_matches_flatten(box, grid, shape):
    """Row n of token_centres is the token tensor.flatten(2) puts at n, also for flipped and 3D views."""
    expected = _centres_by_pixels(shape, *box, grid)
    centres, bins = token_centres(_geometry(*box), grid)
    torch.testing.assert_close(centres[0], expected)
    torch.testing.assert_close(bins[0], torch.tensor([s / g for s, g in zip(box[1], grid)]))


def test_batched_and_identity_geometry():
    geom = identity_geometry((8, 6), batch_size=3)
    assert geom.shape == (3, 3, 2)
    torch.testing.assert_close(geom[1], torch.tensor([[0.0, 0.0], [8.0, 6.0], [0.0, 0.0]]))
    assert identity_geometry((4, 4, 4)).shape == (3, 3)
    batch = torch.cat([GEOM_A, GEOM_B, identity_geometry((8, 8), 1)])
    mask = positive_mask(batch, batch.flip(0), (2, 2), (2, 2))
    assert torch.equal(mask[0], positive_mask(GEOM_A, identity_geometry((8, 8), 1), (2, 2), (2, 2))[0])
    assert torch.equal(mask[1], positive_mask(GEOM_B, GEOM_B, (2, 2), (2, 2))[0])
    assert torch.equal(mask[2], positive_mask(identity_geometry((8, 8), 1), GEOM_A, (2, 2), (2, 2))[0])
    # view b's bins are 4x3, so its two tokens in a row (3 apart, 0.6 of the 5-pixel diagonal) are both positives
    assert torch.equal(mask[1], torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]).bool())
    assert torch.equal(positive_mask(geom[:1], geom[:1], (4, 3), (4, 3))[0], torch.eye(12, dtype=torch.bool))


@pytest.mark.parametrize("shape, grid", [((1, 3, 3), (2, 2)), ((1, 2, 2), (2, 2)), ((3, 2), (2, 2)), ((1, 3, 2), (2,))])
def test_bad_geometry(shape, grid):
    with pytest.raises(ValueError, match="geometry must be"):
        token_centres(torch.zeros(shape), grid)
