"""CrossScaleTokenProjection: grid choice, 1-3 scales, softmax/linear attention, 0-2 blocks, 2D/3D; resample_to_grid."""

from __future__ import annotations

import itertools

import pytest
import torch

from monai_dclcstp.networks import CrossScaleTokenProjection, resample_to_grid, sincos_position_embedding

# feature maps of a 45x70 image (C3, C4, C5 of a ResNet) and of a 33x40x27 volume
SIZES_2D = [(6, 9), (3, 5), (2, 3)]
SIZES_3D = [(5, 5, 4), (3, 3, 2), (2, 2, 1)]
CHANNELS = [12, 20, 28]

# [kwargs, input_shapes, expected_shape]: every number of scales x every grid choice, both attentions, 0/1/2 blocks
CASES = []
for spatial_dims, sizes in ((2, SIZES_2D), (3, SIZES_3D)):
    for scales in ((0,), (2,), (0, 1), (1, 2), (0, 1, 2)):
        for grid_scale, (attention, num_layers) in zip(
            range(len(scales)), itertools.cycle([("softmax", 1), ("linear", 2), ("softmax", 0), ("linear", 1)])
        ):
            CASES.append(
                [
                    {
                        "spatial_dims": spatial_dims,
                        "in_channels": [CHANNELS[s] for s in scales],
                        "embed_dim": 16,
                        "num_heads": 2,
                        "num_layers": num_layers,
                        "attention": attention,
                        "grid_scale": grid_scale,
                    },
                    [(2, CHANNELS[s], *sizes[s]) for s in scales],
                    (2, 16, *sizes[scales[grid_scale]]),
                ]
            )
for attention, num_layers in itertools.product(("softmax", "linear"), (0, 1, 2)):  # full matrix on the default grid
    CASES.append(
        [
            {"spatial_dims": 2, "in_channels": CHANNELS, "embed_dim": 16, "num_heads": 4, "num_layers": num_layers}
            | {"attention": attention},
            [(2, c, *s) for c, s in zip(CHANNELS, SIZES_2D)],
            (2, 16, *SIZES_2D[1]),
        ]
    )


@pytest.mark.parametrize("kwargs, input_shapes, expected_shape", CASES)
def test_shape(kwargs, input_shapes, expected_shape):
    torch.manual_seed(0)
    net = CrossScaleTokenProjection(**kwargs).eval()
    with torch.no_grad():
        out = net([torch.randn(*s) for s in input_shapes])
    assert tuple(out.shape) == expected_shape
    assert torch.isfinite(out).all()
    # layer-normalised tokens: zero mean, unit variance over the embedding (LayerNorm weight 1, bias 0 at init)
    tokens = out.flatten(2)
    torch.testing.assert_close(tokens.mean(1), torch.zeros_like(tokens.mean(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.var(1, unbiased=False), torch.ones_like(tokens.mean(1)), atol=1e-3, rtol=0)


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_tokens_mix_across_scales_and_positions(attention):
    """With blocks, changing one C5 cell changes tokens everywhere; without blocks only the cells it resamples to."""
    torch.manual_seed(0)
    feats = [torch.randn(1, c, *s) for c, s in zip(CHANNELS, SIZES_2D)]
    changed = [f.clone() for f in feats]
    changed[2][..., 0, 0] += 5.0
    for num_layers in (0, 1):
        net = CrossScaleTokenProjection(2, CHANNELS, 16, num_layers, num_heads=2, attention=attention).eval()
        with torch.no_grad():
            diff = (net(feats) - net(changed)).abs().amax(1)[0]  # (3, 5)
        if num_layers:
            assert (diff > 1e-6).all()
        else:
            assert diff[0, 0] > 1e-3 and diff[-1, -1] < 1e-6


def test_token_order_follows_position_embedding():
    """Tokens are ordered like flatten(2): a block-free projection of all-zero maps returns LN(scale + pos) per cell."""
    net = CrossScaleTokenProjection(2, [4], embed_dim=8, num_layers=0, num_heads=2, grid_scale=0).eval()
    with torch.no_grad():
        out = net([torch.zeros(1, 4, 3, 5)])
    pos = sincos_position_embedding((3, 5), 8)
    bias = net.proj[0].bias
    expected = torch.nn.functional.layer_norm(pos + bias + net.scale_embed[0], (8,))
    torch.testing.assert_close(out[0].flatten(1).T, expected.detach())


def test_scales_are_fused_by_softmax_weights():
    """With no blocks and an identity-like setting, the fused token is the softmax-weighted sum before the norm."""
    torch.manual_seed(0)
    net = CrossScaleTokenProjection(2, [4, 4], embed_dim=8, num_layers=0, num_heads=2, grid_scale=0).eval()
    with torch.no_grad():
        net.fuse_logits.copy_(torch.tensor([0.3, -1.2]))
        net.scale_embed.zero_()
    feats = [torch.randn(1, 4, 2, 3), torch.randn(1, 4, 2, 3)]
    with torch.no_grad():
        out = net(feats)
        w = torch.softmax(net.fuse_logits, 0)
        pos = sincos_position_embedding((2, 3), 8)
        per_scale = [net.proj[i](feats[i]).flatten(2).transpose(1, 2) + pos for i in range(2)]
        expected = torch.nn.functional.layer_norm(w[0] * per_scale[0] + w[1] * per_scale[1], (8,))
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), expected)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        [{"spatial_dims": 1, "in_channels": [4]}, "spatial_dims"],
        [{"spatial_dims": 2, "in_channels": []}, "at least one"],
        [{"spatial_dims": 2, "in_channels": [4, 4], "grid_scale": 2}, "out of range"],
        [{"spatial_dims": 2, "in_channels": [4], "embed_dim": 10, "num_heads": 4, "grid_scale": 0}, "divisible"],
        [{"spatial_dims": 2, "in_channels": [4], "attention": "flash", "grid_scale": 0}, "attention"],
        [{"spatial_dims": 2, "in_channels": [4], "num_layers": -1, "grid_scale": 0}, "non-negative"],
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        CrossScaleTokenProjection(**kwargs)


def test_wrong_number_of_maps():
    net = CrossScaleTokenProjection(2, [4, 4], embed_dim=8, num_heads=2)
    with pytest.raises(ValueError, match="expected 2 feature maps"):
        net([torch.zeros(1, 4, 2, 2)])


@pytest.mark.parametrize(
    "in_size, grid", [((6, 9), (3, 5)), ((2, 3), (3, 5)), ((3, 5), (3, 5)), ((6, 2), (3, 5)), ((5, 5, 4), (3, 3, 2))]
)
def test_resample_to_grid(in_size, grid):
    x = torch.randn(2, 3, *in_size)
    out = resample_to_grid(x, grid)
    assert tuple(out.shape) == (2, 3, *grid)
    if in_size == grid:
        assert out is x
    # both operations average: a constant map stays constant, and the mean of a map that only shrinks is preserved
    const = resample_to_grid(torch.full((1, 1, *in_size), 2.5), grid)
    torch.testing.assert_close(const, torch.full_like(const, 2.5))
    if all(s % g == 0 for s, g in zip(in_size, grid)):
        torch.testing.assert_close(out.mean(dim=tuple(range(2, out.ndim))), x.mean(dim=tuple(range(2, x.ndim))))


def test_resample_to_grid_pools_exactly():
    """Shrinking 4x6 → 2x3 is the 2x2 block mean."""
    x = torch.arange(24.0).view(1, 1, 4, 6)
    expected = torch.nn.functional.avg_pool2d(x, 2)
    torch.testing.assert_close(resample_to_grid(x, (2, 3)), expected)
