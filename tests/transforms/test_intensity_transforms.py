"""RandIntensityJitter (RGB-only colour steps) and RandShotNoise (Poisson statistics), types in = types out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_dclcstp.transforms import RandIntensityJitter, RandShotNoise

COLOUR_ONLY = {"prob": 1.0, "brightness": 0.0, "contrast": 0.0, "gamma": None, "saturation": 0.8, "hue": 0.25}


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 16, 16), (1, 8, 8, 8), (4, 8, 8)])
def test_colour_steps_leave_non_rgb_images_unchanged(shape):
    img = _rand(*shape)
    for seed in range(5):
        out = RandIntensityJitter(**COLOUR_ONLY).set_random_state(seed)(img)
        torch.testing.assert_close(out, img, atol=1e-6, rtol=0)  # brightness/contrast factors are exactly 1


def test_colour_steps_change_rgb_but_keep_luma_and_grey():
    rgb = _rand(3, 16, 16) * 0.5 + 0.25  # away from the clipping range
    luma_weights = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    for seed in range(5):
        jitter = RandIntensityJitter(**COLOUR_ONLY).set_random_state(seed)
        out = jitter(rgb)
        assert (out - rgb).abs().max() > 1e-3
        if out.min() > 0 and out.max() < 1:  # no clipping: saturation and hue act on chroma only
            torch.testing.assert_close((out * luma_weights).sum(0), (rgb * luma_weights).sum(0), atol=1e-5, rtol=0)
        grey_rgb = _rand(1, 16, 16, seed=seed).expand(3, -1, -1)  # R = G = B: no chroma to rotate or scale
        torch.testing.assert_close(jitter(grey_rgb, randomize=False), grey_rgb, atol=1e-5, rtol=0)


def test_brightness_contrast_gamma_reference():
    img = _rand(1, 8, 8)
    jitter = RandIntensityJitter(prob=1.0, brightness=0.3, contrast=0.3, gamma=(0.5, 2.0)).set_random_state(3)
    out = jitter(img)
    f = jitter._factors
    x = img * f["brightness"]
    x = (x - x.mean()) * f["contrast"] + x.mean()
    expected = x.clamp(0, 1) ** f["gamma"]
    torch.testing.assert_close(out, expected)
    assert 0 <= out.min() and out.max() <= 1


def test_jitter_probability_zero_is_identity_and_types_are_kept():
    img = _rand(3, 8, 8)
    assert torch.equal(RandIntensityJitter(prob=0.0)(img), img)
    meta = MetaTensor(img, meta={"filename_or_obj": "x.png"})
    out = RandIntensityJitter(prob=1.0).set_random_state(0)(meta)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png"
    assert type(RandIntensityJitter(prob=1.0)(img)) is torch.Tensor
    assert type(RandIntensityJitter(prob=1.0)(img.numpy())) is torch.Tensor


@pytest.mark.parametrize("value, peak", [(0.3, 100.0), (0.8, 50.0), (0.05, 1000.0)])
def test_shot_noise_statistics(value, peak):
    """Poisson(x * peak) / peak: mean x, variance x / peak (65536 samples: mean within 4 sigma, variance within 4 %)."""
    img = torch.full((1, 256, 256), value)
    out = RandShotNoise(prob=1.0, peak_range=(peak, peak)).set_random_state(0)(img)
    n = out.numel()
    variance = value / peak
    assert abs(out.mean().item() - value) < 4 * (variance / n) ** 0.5
    assert abs(out.var().item() / variance - 1) < 0.04
    # quantised to multiples of 1 / peak
    torch.testing.assert_close(out * peak, (out * peak).round(), atol=1e-3, rtol=0)


def test_shot_noise_is_reproducible_and_respects_probability():
    img = _rand(1, 16, 16)
    a = RandShotNoise(prob=1.0).set_random_state(5)(img)
    b = RandShotNoise(prob=1.0).set_random_state(5)(img)
    c = RandShotNoise(prob=1.0).set_random_state(6)(img)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(RandShotNoise(prob=0.0)(img), img)
    meta_out = RandShotNoise(prob=1.0)(MetaTensor(img))
    assert isinstance(meta_out, MetaTensor)
    with pytest.raises(ValueError, match="peak_range"):
        RandShotNoise(peak_range=(0.0, 10.0))


def test_jitter_uses_only_its_own_random_state():
    img = _rand(3, 8, 8)
    jitter = RandIntensityJitter(prob=1.0).set_random_state(1)
    np.random.seed(0)  # noqa: NPY002  (the global state must not matter)
    torch.manual_seed(0)
    a = jitter(img)
    jitter.set_random_state(1)
    np.random.seed(123)  # noqa: NPY002
    torch.manual_seed(123)
    assert torch.equal(jitter(img), a)
