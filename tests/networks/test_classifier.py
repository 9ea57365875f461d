from __future__ import annotations

import json
import unittest

import torch
from parameterized import parameterized

from monai_dclcstp.networks import EncoderClassifier, MultiScaleResNet
from monai_dclcstp.utils import EncoderMismatchError, export_encoder

CASES = [
    [{"num_classes": 2, "spatial_dims": 2, "in_channels": 1}, (2, 1, 32, 32), (2, 2)],
    [{"num_classes": 4, "spatial_dims": 2, "in_channels": 3, "dropout": 0.3, "pooling": "max"}, (3, 3, 40, 24), (3, 4)],
    [{"num_classes": 3, "spatial_dims": 3, "in_channels": 1, "backbone": "resnet10"}, (2, 1, 16, 16, 16), (2, 3)],
]


def _export(tmp, backbone="resnet18", spatial_dims=2, in_channels=1, seed=1):
    torch.manual_seed(seed)
    net = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=in_channels)
    pt, _ = export_encoder(
        net,
        f"{tmp}/encoder.pt",
        backbone_name=backbone,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        feature_channels=net.feature_channels,
        image_size=32,
        intensity={"scale": [0, 255, 0, 1]},
        method={"name": "test"},
    )
    return net, pt


class TestEncoderClassifier(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_shapes(self, kwargs, in_shape, out_shape):
        net = EncoderClassifier(**kwargs).eval()
        with torch.no_grad():
            out = net(torch.randn(in_shape))
            feats = net.forward_features(torch.randn(in_shape))
        self.assertEqual(tuple(out.shape), out_shape)
        self.assertEqual(tuple(feats.shape), (in_shape[0], net.feature_dim))

    def test_backbone_state_dict_is_resnet_features(self):
        from monai.networks.nets import ResNetFeatures

        net = EncoderClassifier(2)
        ref = ResNetFeatures("resnet18", pretrained=False, spatial_dims=2, in_channels=1)
        self.assertEqual(set(net.backbone.state_dict()), set(ref.state_dict()))

    def test_pretrained_encoder_changes_weights(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            src, pt = _export(tmp)
            torch.manual_seed(0)
            random_init = EncoderClassifier(2)
            torch.manual_seed(0)
            loaded = EncoderClassifier(2, pretrained_encoder=pt)
        key = "layer1.0.conv1.weight"
        self.assertFalse(torch.equal(random_init.backbone.state_dict()[key], loaded.backbone.state_dict()[key]))
        for k, v in src.state_dict().items():
            self.assertTrue(torch.equal(v, loaded.backbone.state_dict()[k]), k)
        self.assertEqual(loaded.encoder_info["backbone"], "resnet18")
        self.assertIsNone(random_init.encoder_info)
        self.assertIsNone(EncoderClassifier(2, pretrained_encoder="").encoder_info)

    @parameterized.expand(
        [
            [{"backbone": "resnet34"}, "backbone"],
            [{"in_channels": 3}, "in_channels"],
            [{"spatial_dims": 3}, "spatial_dims"],
        ]
    )
    def test_wrong_architecture_fails_clearly(self, kwargs, word):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            _, pt = _export(tmp)
            with self.assertRaises(EncoderMismatchError) as ctx:
                EncoderClassifier(2, pretrained_encoder=pt, **kwargs)
        self.assertIn(word, str(ctx.exception))
        self.assertIn("encoder.pt", str(ctx.exception))

    def test_sidecar_lies_about_architecture(self):
        """A sidecar that claims resnet18 for resnet10 weights is still caught by the key/shape check."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            _, pt = _export(tmp, backbone="resnet10")
            side = pt.with_suffix(".json")
            info = json.loads(side.read_text())
            info["backbone"] = "resnet18"
            side.write_text(json.dumps(info))
            with self.assertRaises(EncoderMismatchError) as ctx:
                EncoderClassifier(2, pretrained_encoder=pt)
        self.assertIn("does not fit", str(ctx.exception))

    def test_missing_encoder(self):
        with self.assertRaises(FileNotFoundError):
            EncoderClassifier(2, pretrained_encoder="/nonexistent/encoder.pt")

    def test_freeze_encoder(self):
        net = EncoderClassifier(2, freeze_encoder=True)
        net.train()
        self.assertFalse(net.backbone.training)
        self.assertTrue(net.fc.training)
        self.assertFalse(any(p.requires_grad for p in net.backbone.parameters()))
        groups = net.parameter_groups(0.1)
        self.assertEqual([g["name"] for g in groups], ["head"])
        # a step changes the head only, and batch-norm statistics stay put
        before = {k: v.clone() for k, v in net.state_dict().items()}
        opt = torch.optim.SGD(groups, lr=0.1)
        loss = torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 0, 1]))
        loss.backward()
        opt.step()
        after = net.state_dict()
        for k in before:
            same = torch.equal(before[k], after[k])
            self.assertEqual(same, k.startswith("backbone."), k)

    def test_parameter_groups_lr_scale(self):
        net = EncoderClassifier(2)
        groups = net.parameter_groups(1e-3, backbone_lr_scale=0.1)
        lrs = {g["name"]: g["lr"] for g in groups}
        self.assertAlmostEqual(lrs["head"], 1e-3)
        self.assertAlmostEqual(lrs["backbone"], 1e-4)
        n_params = sum(len(g["params"]) for g in groups)
        self.assertEqual(n_params, len(list(net.parameters())))
        self.assertEqual([g["name"] for g in net.parameter_groups(1e-3, backbone_lr_scale=0.0)], ["head"])
        with self.assertRaises(ValueError):
            net.parameter_groups(1e-3, backbone_lr_scale=-1)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            EncoderClassifier(1)
        with self.assertRaises(ValueError):
            EncoderClassifier(2, dropout=1.0)
        with self.assertRaises(ValueError):
            EncoderClassifier(2, pooling="mean")


if __name__ == "__main__":
    unittest.main()
