"""LinearAttentionBlock against an explicit reference; projection heads' shapes and normalisation."""

from __future__ import annotations

import pytest
import torch

from monai_dclcstp.networks import GlobalProjectionHead, LinearAttentionBlock, LocalProjectionHead, ProjectionMLP


def test_linear_attention_matches_loops():
    torch.manual_seed(0)
    block = LinearAttentionBlock(hidden_size=8, mlp_dim=16, num_heads=2).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        out = block.attention(x)
        q, k, v = block.qkv(x).split(8, dim=-1)
        expected = torch.zeros(2, 5, 8)
        for b in range(2):
            for h in range(2):
                sl = slice(4 * h, 4 * h + 4)
                qh, kh, vh = q[b, :, sl].relu(), k[b, :, sl].relu(), v[b, :, sl]
                for i in range(5):
                    num = sum(torch.dot(qh[i], kh[j]) * vh[j] for j in range(5))
                    den = sum(torch.dot(qh[i], kh[j]) for j in range(5))
                    expected[b, i, sl] = num / (den + block.eps)
        expected = block.out_proj(expected)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_linear_attention_block_shape_and_residual():
    block = LinearAttentionBlock(16, 32, 4)
    x = torch.randn(3, 11, 16, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())
    with pytest.raises(ValueError, match="divisible"):
        LinearAttentionBlock(10, 20, 4)


# [head, input_shape, expected_shape]
HEAD_CASES = [
    [GlobalProjectionHead(16, 32, 8), (2, 16, 3, 5), (2, 8)],
    [GlobalProjectionHead(16, 32, 8), (2, 16, 3, 3, 2), (2, 8)],
    [LocalProjectionHead(16, 32, 8), (2, 16, 3, 5), (2, 8, 3, 5)],
    [LocalProjectionHead(16, 32, 8), (2, 16, 3, 3, 2), (2, 8, 3, 3, 2)],
]


@pytest.mark.parametrize("head, input_shape, expected_shape", HEAD_CASES)
def test_head_shapes_are_unit_norm(head, input_shape, expected_shape):
    out = head(torch.randn(*input_shape))
    assert tuple(out.shape) == expected_shape
    torch.testing.assert_close(out.norm(dim=1), torch.ones_like(out.norm(dim=1)))


def test_local_head_is_per_token_and_global_head_pools():
    torch.manual_seed(0)
    local, glob = LocalProjectionHead(6, 12, 4), GlobalProjectionHead(6, 12, 4)
    x = torch.randn(1, 6, 2, 3)
    out = local(x)
    torch.testing.assert_close(out[0, :, 1, 2], local.mlp(x[0, :, 1, 2]).div(local.mlp(x[0, :, 1, 2]).norm()))
    pooled = glob.mlp(x.mean(dim=(2, 3)))
    torch.testing.assert_close(glob(x), pooled / pooled.norm(dim=1, keepdim=True))


def test_projection_mlp():
    mlp = ProjectionMLP((4, 8, 8, 3), normalize=False)
    assert [type(m).__name__ for m in mlp.mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert mlp(torch.randn(5, 4)).shape == (5, 3)
    with pytest.raises(ValueError, match="at least"):
        ProjectionMLP((4,))
