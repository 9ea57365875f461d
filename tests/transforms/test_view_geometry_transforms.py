"""RandViewResizedCrop / RandViewFlip / TwoViewAugment: the recorded geometry agrees with the pixels.

The images encode their own coordinates (one ramp channel per axis: pixel i holds i + 0.5, its centre), so a view's
pixel values say where in the original image they came from; ``token_centres`` of the recorded geometry must say the
same. This is what makes the dense loss's positives right.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from monai_dclcstp.losses import token_centres
from monai_dclcstp.transforms import (
    GEOMETRY_META_KEY,
    RandViewFlip,
    RandViewResizedCrop,
    TwoViewAugment,
    get_view_geometry,
)


def ramp_image(shape):
    """(N_dims, *shape): channel a holds the coordinate of each pixel centre along axis a."""
    return torch.stack(torch.meshgrid([torch.arange(s) + 0.5 for s in shape], indexing="ij")).float()


def _coords_at(view, grid):
    """Mean ramp value over each token's pixels → (N, N_dims), in flatten(2) order (exact for a linear ramp)."""
    pool = F.adaptive_avg_pool2d if view.ndim == 3 else F.adaptive_avg_pool3d
    return pool(view[None], grid).flatten(2)[0].T


def _check_view(view, geometry, token_grid, pixel_tol, token_tol):
    nd = view.ndim - 1
    assert geometry.shape == (3, nd)
    # every pixel: its ramp value equals the centre of that pixel mapped back through the recorded geometry
    centres, _ = token_centres(geometry[None], view.shape[1:])
    expected = centres[0].T.reshape(view.shape)
    inner = (slice(None), *[slice(2, -2)] * nd)  # resampling clamps at the borders
    err_inner = (view - expected)[inner].abs().max().item()
    err_all = (view - expected).abs().max().item()
    assert err_inner < pixel_tol, (err_inner, geometry)
    assert err_all < 2 * pixel_tol + 0.5 * float(geometry[1].max()) / min(view.shape[1:]), (err_all, geometry)
    # every token of a network-like grid: the pooled ramp equals token_centres
    centres, _ = token_centres(geometry[None], token_grid)
    token_err = (_coords_at(view, token_grid) - centres[0]).abs().max().item()
    assert token_err < token_tol, (token_err, geometry)


# [image shape, view size, scale, token grid]
CASES_2D = [
    [(45, 70), (24, 32), (0.2, 1.0), (3, 4)],  # down-sampling (antialiased)
    [(45, 70), (64, 64), (0.05, 0.3), (4, 4)],  # up-sampling
    [(33, 40), (33, 40), (1.0, 1.0), (3, 5)],  # whole image (only a flip may change it)
]


@pytest.mark.parametrize("shape, size, scale, grid", CASES_2D)
@pytest.mark.parametrize("seed", range(4))
def test_crop_flip_geometry_matches_pixels_2d(shape, size, scale, grid, seed):
    crop = RandViewResizedCrop(size, scale=scale).set_random_state(seed)
    flip = RandViewFlip(0.5).set_random_state(seed + 100)
    view = flip(crop(ramp_image(shape)))
    assert isinstance(view, MetaTensor) and tuple(view.shape) == (2, *size)
    geometry = view.meta[GEOMETRY_META_KEY]
    start, box = geometry[0], geometry[1]
    assert (start >= 0).all() and (start + box <= torch.tensor(shape)).all()
    _check_view(view.as_tensor(), geometry, grid, pixel_tol=0.25, token_tol=0.1)


def test_seeds_cover_flips_and_crops():
    """The seeds above are not degenerate: they include flipped and unflipped axes and proper crops."""
    flips, boxes = set(), set()
    for seed in range(4):
        geometry = (
            RandViewFlip(0.5)
            .set_random_state(seed + 100)(RandViewResizedCrop((24, 32)).set_random_state(seed)(ramp_image((45, 70))))
            .meta[GEOMETRY_META_KEY]
        )
        flips.add(tuple(geometry[2].tolist()))
        boxes.add(tuple(geometry[1].tolist()))
    assert {f[0] for f in flips} == {0.0, 1.0} and {f[1] for f in flips} == {0.0, 1.0}
    assert len(boxes) == 4 and all(b != (45.0, 70.0) for b in boxes)


@pytest.mark.parametrize("seed", range(3))
def test_crop_flip_geometry_matches_pixels_3d(seed):
    crop = RandViewResizedCrop((12, 16, 10), scale=(0.3, 1.0)).set_random_state(seed)
    flip = RandViewFlip(0.5).set_random_state(seed + 7)
    view = flip(crop(ramp_image((33, 40, 27))))
    assert tuple(view.shape) == (3, 12, 16, 10)
    geometry = view.meta[GEOMETRY_META_KEY]
    _check_view(view.as_tensor(), geometry, (3, 4, 2), pixel_tol=0.25, token_tol=0.25)


@pytest.mark.parametrize("seed", range(3))
def test_two_view_augment_geometry_matches_pixels(seed):
    """The full view generator with the intensity steps switched off: both views agree with their geometry."""
    augment = TwoViewAugment((32, 32), jitter_prob=0.0, blur_prob=0.0, noise_prob=0.0).set_random_state(seed)
    v1, g1, v2, g2 = augment(ramp_image((45, 70)))
    for view, geometry in ((v1, g1), (v2, g2)):
        assert type(view) is torch.Tensor and view.dtype == torch.float32
        _check_view(view, geometry, (4, 4), pixel_tol=0.25, token_tol=0.1)
    assert not torch.equal(g1, g2)


def test_geometry_composes_through_a_second_crop():
    """Cropping a view again records the box in original-image pixels (parent start + start * parent scale)."""
    first = RandViewResizedCrop((40, 40), scale=(0.3, 0.6)).set_random_state(1)(ramp_image((60, 80)))
    second = RandViewResizedCrop((20, 20), scale=(0.3, 0.6)).set_random_state(2)(first)
    _check_view(second.as_tensor(), second.meta[GEOMETRY_META_KEY], (4, 4), pixel_tol=0.5, token_tol=0.3)


def test_flip_twice_restores_flags_and_pixels():
    img = ramp_image((8, 6))
    flip = RandViewFlip(prob=1.0)
    once = flip(img)
    assert once.meta[GEOMETRY_META_KEY][2].tolist() == [1.0, 1.0]
    twice = flip(once)
    assert twice.meta[GEOMETRY_META_KEY][2].tolist() == [0.0, 0.0]
    assert torch.equal(twice.as_tensor(), img)


def test_flip_axes_restriction():
    flip = RandViewFlip(prob=1.0, spatial_axes=1)
    view = flip(ramp_image((4, 6)))
    assert view.meta[GEOMETRY_META_KEY][2].tolist() == [0.0, 1.0]
    assert torch.equal(view.as_tensor(), torch.flip(ramp_image((4, 6)), [2]))


def test_get_view_geometry_defaults_to_whole_image():
    assert get_view_geometry(np.zeros((1, 5, 7))).tolist() == [[0, 0], [5, 7], [0, 0]]
    assert get_view_geometry(MetaTensor(torch.zeros(2, 3, 4, 5))).tolist() == [[0, 0, 0], [3, 4, 5], [0, 0, 0]]


@pytest.mark.parametrize(
    "kwargs, error",
    [[{"scale": (0.0, 1.0)}, "scale"], [{"scale": (0.5, 1.2)}, "scale"], [{"ratio": (1.5, 1.0)}, "ratio"]],
)
def test_crop_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        RandViewResizedCrop(8, **kwargs)


def test_crop_rejects_non_image():
    with pytest.raises(ValueError, match="channel-first"):
        RandViewResizedCrop(8)(torch.zeros(1, 16))
