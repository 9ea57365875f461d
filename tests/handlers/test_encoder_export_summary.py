from __future__ import annotations

import json

import pytest
import torch
from ignite.engine import Engine

from monai_dclcstp.handlers import EncoderExport, LossProgressBar, RunSummary
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder, MultiScaleResNet
from monai_dclcstp.utils import load_pretrained_encoder, read_encoder_info


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_export_then_load_into_fresh_backbone_gives_same_features(tmp_path, spatial_dims):
    torch.manual_seed(0)
    net = DCLCsTPNet(DualStreamEncoder(spatial_dims, 1, "resnet10", embed_dim=32, head_hidden_dim=32, out_dim=16))
    with torch.no_grad():  # make the online backbone differ from a fresh initialisation
        for p in net.online.backbone.parameters():
            p.add_(0.01)
    engine = Engine(lambda e, b: None)
    history = [
        {"epoch": 0, "accuracy": 0.5, "balanced_accuracy": 0.5},
        {"epoch": 1, "accuracy": 0.75, "balanced_accuracy": 0.7},
    ]
    engine.state.knn_history = history
    export = EncoderExport(
        net, tmp_path / "encoder.pt", image_size=16, intensity={"mode": "percentile", "lower": 1},
        method={"lambda_local": 0.5, "temperature": 0.2, "data_size": 8}, training_config={"lr": 1e-3, "crop": (0.2, 1.0)},
    )  # fmt: skip
    summary = RunSummary(tmp_path, tensorboard_dir=tmp_path / "runs")
    export.attach(engine)
    summary.attach(engine)
    engine.run([0, 1], max_epochs=2)

    info = read_encoder_info(tmp_path / "encoder.pt")
    assert info["backbone"] == "resnet10" and info["spatial_dims"] == spatial_dims and info["in_channels"] == 1
    assert info["feature_channels"] == [128, 256, 512] and info["image_size"] == 16
    assert info["intensity"]["mode"] == "percentile" and info["intensity"]["lower"] == 1.0
    assert info["method"]["name"] == "dcl-cstp" and info["method"]["epochs"] == 2 and info["method"]["iterations"] == 4
    assert info["monitoring"]["knn_final"]["accuracy"] == 0.75
    assert info["training_config"] == {"lr": 1e-3, "crop": [0.2, 1.0]}

    fresh = MultiScaleResNet("resnet10", spatial_dims=spatial_dims, in_channels=1).eval()
    load_pretrained_encoder(
        fresh, tmp_path / "encoder.pt", backbone="resnet10", spatial_dims=spatial_dims, in_channels=1
    )
    x = torch.rand(2, 1, *([16] * spatial_dims))
    net.eval()
    with torch.no_grad():
        for a, b in zip(fresh(x), net.backbone(x)):
            assert torch.equal(a, b)

    written = json.loads((tmp_path / "run_summary.json").read_text())
    assert written["encoder"] == str(tmp_path / "encoder.pt") and written["epochs"] == 2
    assert written["knn_start"]["accuracy"] == 0.5 and written["knn_final"]["accuracy"] == 0.75
    assert written["tensorboard_dir"] == str(tmp_path / "runs")


def test_summary_without_encoder_or_knn(tmp_path, caplog):
    engine = Engine(lambda e, b: None)
    RunSummary(tmp_path, summary_file=None).attach(engine)
    with caplog.at_level("INFO"):
        engine.run([0], max_epochs=1)
    assert "(not exported)" in caplog.text and not (tmp_path / "run_summary.json").exists()


def test_progress_bar_shows_loss_parts():
    bar = LossProgressBar()
    out = {"loss": torch.tensor(1.5), "loss_global": 2.0, "loss_local": float("nan"), "image": torch.zeros(2, 2)}
    assert bar._postfix(out) == {"loss": 1.5, "loss_global": 2.0}
    engine = Engine(lambda e, b: {"loss": torch.tensor(float(b))})
    bar.attach(engine)
    assert bar.bar is not None
    engine.run([1, 2], max_epochs=1)
    off = LossProgressBar(enabled=False)
    off.attach(Engine(lambda e, b: None))
    assert off.bar is None
