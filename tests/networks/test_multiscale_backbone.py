"""MultiScaleResNet: C3-C5 shapes for 2D/3D, grey/RGB, odd sizes; exported state_dict loads into MONAI's ResNetFeatures."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import ResNetFeatures

from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder, MultiScaleResNet, backbone_feature_channels


def _stage_sizes(size: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Spatial sizes after conv1 (stride 2), maxpool (2), layer2..4 (2 each): ceil at every stride-2 stage."""
    sizes, s = [], size
    for _ in range(2):
        s = tuple(math.ceil(v / 2) for v in s)
    for _ in range(3):
        s = tuple(math.ceil(v / 2) for v in s)
        sizes.append(s)
    return sizes


# [kwargs, input_shape, expected channels]
CASES = [
    [{"backbone": "resnet18", "spatial_dims": 2, "in_channels": 1}, (2, 1, 45, 70), (128, 256, 512)],
    [{"backbone": "resnet34", "spatial_dims": 2, "in_channels": 3}, (1, 3, 45, 70), (128, 256, 512)],
    [{"backbone": "resnet50", "spatial_dims": 2, "in_channels": 1}, (1, 1, 33, 40), (512, 1024, 2048)],
    [{"backbone": "resnet18", "spatial_dims": 3, "in_channels": 1}, (1, 1, 33, 40, 27), (128, 256, 512)],
    [{"backbone": "resnet18", "spatial_dims": 3, "in_channels": 2}, (1, 2, 17, 9, 16), (128, 256, 512)],
]


@pytest.mark.parametrize("kwargs, input_shape, channels", CASES)
def test_feature_shapes(kwargs, input_shape, channels):
    net = MultiScaleResNet(**kwargs).eval()
    assert net.feature_channels == channels == backbone_feature_channels(kwargs["backbone"])
    with torch.no_grad():
        feats = net(torch.randn(*input_shape))
    assert len(feats) == 3
    for f, c, size in zip(feats, channels, _stage_sizes(input_shape[2:])):
        assert tuple(f.shape) == (input_shape[0], c, *size)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        [{"backbone": "resnet17"}, "unknown backbone"],
        [{"spatial_dims": 1}, "spatial_dims"],
        [{"in_channels": 0}, "in_channels"],
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        MultiScaleResNet(**kwargs)


@pytest.mark.parametrize(
    "spatial_dims, in_channels, size, train_step",
    [(2, 1, (40, 36), True), (2, 3, (32, 32), False), (3, 1, (16, 16, 16), False)],
)
def test_backbone_state_dict_round_trip(tmp_path, spatial_dims, in_channels, size, train_step):
    """The exported encoder (weights and BN statistics changed since initialisation) loads into ResNetFeatures and
    MultiScaleResNet via torch.save / torch.load(weights_only=True) and gives identical C3-C5 outputs."""
    torch.manual_seed(0)
    enc = DualStreamEncoder(spatial_dims, in_channels, "resnet18", embed_dim=16, num_heads=2, head_hidden_dim=16)
    net = DCLCsTPNet(enc, momentum=train_step)
    initial = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    views = torch.rand(2, 2, in_channels, *size)
    if train_step:  # one real optimisation step
        opt = torch.optim.SGD(net.online.parameters(), lr=0.1)
        out = net(views[0], views[1])
        (out["global_q1"] * out["global_k2"]).sum().neg().backward()
        opt.step()
    else:  # cheaper: perturb the weights, update the BN statistics with a forward pass in train mode
        with torch.no_grad():
            for p in net.backbone.parameters():
                p.add_(0.01 * torch.randn_like(p))
            net.backbone(views[0])

    state = net.backbone_state_dict()
    assert set(state) == set(initial)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" and not v.requires_grad for v in state.values())
    changed = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert "conv1.weight" in changed and "bn1.running_mean" in changed and "layer4.1.bn2.running_var" in changed
    path = tmp_path / "encoder.pt"
    torch.save(state, path)
    loaded = torch.load(path, weights_only=True)

    monai_net = ResNetFeatures("resnet18", pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels)
    ours = MultiScaleResNet("resnet18", spatial_dims=spatial_dims, in_channels=in_channels)
    for target in (monai_net, ours):
        result = target.load_state_dict(loaded, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    x = torch.rand(2, in_channels, *size)
    with torch.no_grad():
        expected = net.backbone.eval()(x)
        from_monai = monai_net.eval()(x)[2:]
        from_ours = ours.eval()(x)
    for e, a, b in zip(expected, from_monai, from_ours):
        assert e.abs().sum() > 0
        assert torch.equal(e, a) and torch.equal(e, b)
