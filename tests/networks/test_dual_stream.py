"""DualStreamEncoder / DCLCsTPNet: shapes (2D grey/RGB, 3D), gradients reach every trainable online parameter and
never the momentum twin, EMA update through the network."""

from __future__ import annotations

import pytest
import torch

from monai_dclcstp.losses import DualStreamLoss, identity_geometry
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder

SMALL = {"embed_dim": 16, "num_heads": 2, "head_hidden_dim": 16, "out_dim": 8}

# [kwargs, input_shape, expected local shape]
CASES = [
    [{"spatial_dims": 2, "in_channels": 1} | SMALL, (2, 1, 45, 70), (2, 8, 3, 5)],
    [{"spatial_dims": 2, "in_channels": 3, "backbone": "resnet34"} | SMALL, (2, 3, 45, 70), (2, 8, 3, 5)],
    [{"spatial_dims": 2, "in_channels": 1, "backbone": "resnet50", "grid": "c3"} | SMALL, (1, 1, 33, 40), (1, 8, 5, 5)],
    [{"spatial_dims": 2, "in_channels": 1, "scales": ("c5",), "grid": "c5"} | SMALL, (2, 1, 45, 70), (2, 8, 2, 3)],
    [{"spatial_dims": 2, "in_channels": 1, "scales": ("C3", "c5"), "grid": "c5"} | SMALL, (2, 1, 64, 64), (2, 8, 2, 2)],
    [{"spatial_dims": 3, "in_channels": 1, "attention": "linear"} | SMALL, (1, 1, 33, 40, 27), (1, 8, 3, 3, 2)],
    [{"spatial_dims": 3, "in_channels": 1, "num_layers": 0} | SMALL, (2, 1, 16, 16, 16), (2, 8, 1, 1, 1)],
]


@pytest.mark.parametrize("kwargs, input_shape, local_shape", CASES)
def test_encoder_shapes(kwargs, input_shape, local_shape):
    enc = DualStreamEncoder(**kwargs).eval()
    with torch.no_grad():
        g, loc = enc(torch.rand(*input_shape))
    assert tuple(g.shape) == (input_shape[0], 8)
    assert tuple(loc.shape) == local_shape
    torch.testing.assert_close(g.norm(dim=1), torch.ones(input_shape[0]))
    torch.testing.assert_close(loc.norm(dim=1), torch.ones(local_shape[:1] + local_shape[2:]))


@pytest.mark.parametrize(
    "kwargs, error",
    [[{"scales": ("c3", "c6")}, "scales"], [{"scales": ("c3", "c3")}, "scales"], [{"scales": ()}, "scales"]]
    + [[{"scales": ("c3", "c5")}, "grid"]],
)
def test_encoder_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        DualStreamEncoder(**kwargs)


def _assert_gradients(net: DCLCsTPNet) -> None:
    missing = [n for n, p in net.online.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"online parameters without gradient: {missing}"
    frozen = [n for n, p in net.online.named_parameters() if not p.requires_grad]
    assert all(n.endswith(("norm_cross_attn.weight", "norm_cross_attn.bias")) for n in frozen), frozen  # MONAI's unused
    if net.momentum_encoder is not None:
        assert not [n for n, p in net.momentum_encoder.named_parameters() if p.requires_grad or p.grad is not None]


@pytest.mark.parametrize(
    "spatial_dims, size, kwargs",
    [
        (2, (64, 48), {}),
        (2, (64, 64), {"attention": "linear", "num_layers": 2}),
        (3, (32, 32, 32), {"scales": ("c4", "c5"), "grid": "c4"}),
    ],
)
def test_gradients_reach_every_trainable_online_parameter(spatial_dims, size, kwargs):
    """Required for DDP with find_unused_parameters=False: every trainable parameter must get a (non-zero) grad."""
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(spatial_dims, 1, **(SMALL | kwargs))).train()
    criterion = DualStreamLoss(lambda_local=0.5, queue_size=8, embed_dim=8)
    v1, v2 = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    out = net(v1, v2)
    for key in ("global_k1", "global_k2", "local_k1", "local_k2"):
        assert not out[key].requires_grad
    geometry = identity_geometry(size, batch_size=2)
    criterion(out, geometry, geometry)["loss"].backward()
    _assert_gradients(net)


def test_no_momentum_twin_uses_detached_online_keys():
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, **SMALL), momentum=False).eval()
    assert net.momentum_encoder is None
    v1, v2 = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    out = net(v1, v2)
    torch.testing.assert_close(out["global_k1"], out["global_q1"].detach())
    torch.testing.assert_close(out["local_k2"], out["local_q2"].detach())
    assert not out["global_k1"].requires_grad
    net.update_momentum(0.5)  # no-op
    criterion = DualStreamLoss(lambda_local=0.5)
    criterion(out, identity_geometry((32, 32), 2), identity_geometry((32, 32), 2))["loss"].backward()
    _assert_gradients(net)


def test_momentum_twin_starts_equal_and_follows_ema():
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, **SMALL))
    for p, q in zip(net.online.parameters(), net.momentum_encoder.parameters()):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()
    before = [p.clone() for p in net.momentum_encoder.parameters()]
    buffers_before = [b.clone() for b in net.momentum_encoder.buffers()]
    with torch.no_grad():
        for p in net.online.parameters():
            p.add_(torch.randn_like(p))
    net.update_momentum(0.9)
    for old, p, q in zip(before, net.online.parameters(), net.momentum_encoder.parameters()):
        torch.testing.assert_close(q, 0.9 * old + 0.1 * p)
    for old, b in zip(buffers_before, net.momentum_encoder.buffers()):
        assert torch.equal(old, b)


def test_forward_outputs_and_view_mismatch():
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, **SMALL)).eval()
    v1, v2 = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        out = net(v1, v2)
        g1, l1 = net.online(v1)
    assert set(out) == {f"{s}_{r}{i}" for s in ("global", "local") for r in ("q", "k") for i in (1, 2)}
    torch.testing.assert_close(out["global_q1"], g1, atol=1e-5, rtol=1e-4)  # eval mode: batching both views is exact
    torch.testing.assert_close(out["local_q1"], l1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["global_k1"], g1, atol=1e-5, rtol=1e-4)  # twin == online at initialisation
    with pytest.raises(ValueError, match="same shape"):
        net(v1, torch.rand(3, 1, 32, 48))
    assert net.backbone is net.online.backbone


def test_asymmetric_forward_sends_each_view_through_one_encoder():
    """``symmetric=False`` (MoCo v2 / DenseCL): view 1 → online only, view 2 → momentum only; the loss is one-sided."""
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, **SMALL), symmetric=False).train()
    with torch.no_grad():
        for p in net.momentum_encoder.parameters():  # a twin that differs from the online encoder
            p.add_(0.05 * torch.randn_like(p))
    v1, v2 = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    out = net(v1, v2)
    assert set(out) == {"global_q1", "local_q1", "global_k2", "local_k2"}
    assert out["global_q1"].requires_grad and not out["global_k2"].requires_grad
    net.eval()
    with torch.no_grad():
        g1, l1 = net.online(v1)
        g2, l2 = net.momentum_encoder(v2)
        out_eval = net(v1, v2)
    torch.testing.assert_close(out_eval["global_q1"], g1)
    torch.testing.assert_close(out_eval["local_q1"], l1)
    torch.testing.assert_close(out_eval["global_k2"], g2)
    torch.testing.assert_close(out_eval["local_k2"], l2)
    geometry = identity_geometry((32, 32), batch_size=3)
    DualStreamLoss(0.5, queue_size=8, embed_dim=8)(out, geometry, geometry)["loss"].backward()
    _assert_gradients(net)
