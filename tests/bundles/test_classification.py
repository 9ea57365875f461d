"""The classification bundle: trains, evaluates and infers on tiny real data; pretrained encoders really load."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_dclcstp.networks import EncoderClassifier, MultiScaleResNet
from monai_dclcstp.utils import EncoderMismatchError, export_encoder, intensity_description

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "classification"
CONFIGS = BUNDLE / "configs"
NPZ = REPO / ".." / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"

# small and fast: resnet10 at 32 px, no loader workers, no progress bar
FAST = {
    "backbone": "resnet10",
    "image_size": 32,
    "batch_size": 8,
    "num_workers": 0,
    "max_epochs": 1,
    "progress_bar": False,
}


def _workflow(config: str, **override):
    from monai.bundle import ConfigWorkflow

    files = [str(CONFIGS / c) for c in config.split("+")]
    wf = ConfigWorkflow(
        config_file=files if len(files) > 1 else files[0],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type="train" if config == "train.json" else "infer",
        **override,
    )
    wf.initialize()
    return wf


def _run(config: str, **override):
    wf = _workflow(config, **override)
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def pneumonia_subset(tmp_path_factory):
    """24 train + 12 validation PneumoniaMNIST images (half normal) from the shared npz, as PNGs + datalist."""
    if not NPZ.is_file():
        pytest.skip("shared PneumoniaMNIST npz not available")
    root = tmp_path_factory.mktemp("pneumonia")
    data = np.load(NPZ)
    datalist = {"classes": ["normal", "pneumonia"], "training": [], "validation": []}
    for split, key, per_class in (("train", "training", 12), ("val", "validation", 6)):
        labels = data[f"{split}_labels"].reshape(-1)
        for c in (0, 1):
            for i in np.flatnonzero(labels == c)[:per_class]:
                path = root / split / f"{split}_{i:05d}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(data[f"{split}_images"][i]).save(path)
                datalist[key].append({"image": f"{split}/{path.name}", "label": int(c)})
    (root / "datalist.json").write_text(json.dumps(datalist))
    return root / "datalist.json"


@pytest.fixture(scope="module")
def trained(pneumonia_subset, tmp_path_factory):
    """One epoch of training on the subset (shared by the evaluation and inference tests)."""
    out = tmp_path_factory.mktemp("cls_out")
    wf = _run("train.json", datalist=str(pneumonia_subset), output_dir=str(out), **FAST)
    return out, wf


def _causes(exc):
    """The exception and its causes (MONAI wraps errors raised while building config components)."""
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_train_one_epoch(trained):
    out, wf = trained
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    assert (out / "model.pt").is_file() and (out / "checkpoint_epoch=1.pt").is_file()
    state = torch.load(out / "model.pt", weights_only=True)
    assert "fc.weight" in state and state["fc.weight"].shape == (2, 512)
    info = json.loads((out / "model.json").read_text())
    assert info["classes"] == ["normal", "pneumonia"] and info["backbone"] == "resnet10"
    assert info["intensity"]["mode"] == "auto"
    assert any((out / "runs").iterdir())  # TensorBoard events
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_auc", "val_accuracy", "val_balanced_accuracy"} <= set(metrics)


def test_evaluate_writes_metrics(trained):
    out, _ = trained
    _run("evaluate.json", output_dir=str(out), num_workers=0)
    report = json.loads((out / "eval" / "report_validation.json").read_text())
    assert report["num_samples"] == 12 and report["split"] == "validation"
    for block in ("default", "calibrated"):
        for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "balanced_accuracy"):
            assert key in report[block]
        assert np.asarray(report[block]["confusion_matrix"]).sum() == 12
    assert 0.0 <= report["default"]["auc"] <= 1.0
    assert report["threshold"] is not None
    rows = _read_csv(out / "eval" / "report_validation.csv")
    assert rows[0] == ["metric", "default", "calibrated"]
    assert len(_read_csv(out / "eval" / "report_validation_predictions.csv")) == 13


def test_inference_writes_one_row_per_image(trained, pneumonia_subset):
    out, _ = trained
    _run("inference.json", output_dir=str(out), datalist=str(pneumonia_subset), num_workers=0)
    rows = _read_csv(out / "inference" / "predictions.csv")
    assert rows[0] == ["image", "label", "prob_normal", "prob_pneumonia", "predicted", "predicted_class"]
    assert len(rows) == 1 + 36
    images = {r[0] for r in rows[1:]}
    assert len(images) == 36 and all(os.path.isabs(p) for p in images)
    probs = np.array([[float(r[2]), float(r[3])] for r in rows[1:]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)


def test_inference_output_confined(trained, pneumonia_subset):
    out, _ = trained
    with pytest.raises(Exception) as info:
        _run("inference.json", output_dir=str(out), datalist=str(pneumonia_subset), output_filename="../x.csv")
    assert any("unsafe output name '../x.csv'" in str(e) for e in _causes(info.value))
    assert not (out.parent / "x.csv").exists()


def _export(path, backbone="resnet10", spatial_dims=2, in_channels=1, seed=7, intensity=None):
    torch.manual_seed(seed)
    net = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=in_channels)
    export_encoder(
        net,
        path,
        backbone_name=backbone,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        feature_channels=net.feature_channels,
        image_size=48,
        intensity=intensity or intensity_description("auto"),
        method={"name": "test"},
    )
    return net


def test_pretrained_encoder_changes_initial_weights(pneumonia_subset, tmp_path):
    src = _export(tmp_path / "encoder.pt", intensity=intensity_description("percentile", lower=1, upper=99))
    over = {"datalist": str(pneumonia_subset), "output_dir": str(tmp_path / "out"), **FAST}
    random_net = _workflow("train.json", **over).parser.get_parsed_content("network_def")
    wf = _workflow("train.json", pretrained_encoder=str(tmp_path / "encoder.pt"), **over)
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, EncoderClassifier)
    loaded, ref, rnd = net.backbone.state_dict(), src.state_dict(), random_net.backbone.state_dict()
    for key in ref:
        assert torch.equal(loaded[key], ref[key]), key
    assert not torch.equal(loaded["conv1.weight"], rnd["conv1.weight"])
    # the encoder's intensity scaling and image size are reproduced
    assert wf.parser.get_parsed_content("intensity")["mode"] == "percentile"
    assert wf.parser.get_parsed_content("model_info")["encoder_sha256"] == net.encoder_info["sha256"]


@pytest.mark.parametrize(
    "exported, message", [({"backbone": "resnet18"}, "backbone"), ({"in_channels": 3}, "in_channels")]
)
def test_wrong_architecture_encoder_fails_clearly(pneumonia_subset, tmp_path, exported, message):
    _export(tmp_path / "encoder.pt", **exported)
    wf = _workflow(
        "train.json",
        datalist=str(pneumonia_subset),
        output_dir=str(tmp_path / "out"),
        pretrained_encoder=str(tmp_path / "encoder.pt"),
        **FAST,
    )
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("network_def")
    mismatch = [e for e in _causes(info.value) if isinstance(e, EncoderMismatchError)]
    assert mismatch, _causes(info.value)
    assert message in str(mismatch[0]) and "encoder.pt" in str(mismatch[0])


def test_linear_probe_and_backbone_lr(pneumonia_subset, tmp_path):
    over = {"datalist": str(pneumonia_subset), "output_dir": str(tmp_path), **FAST}
    wf = _workflow("train.json", freeze_encoder="true", **over)  # strings from the command line work too
    groups = wf.parser.get_parsed_content("optimizer").param_groups
    assert [g["name"] for g in groups] == ["head"]
    wf = _workflow("train.json", backbone_lr_scale=0.1, lr=0.01, **over)
    lrs = {g["name"]: g["lr"] for g in wf.parser.get_parsed_content("optimizer").param_groups}
    assert lrs == pytest.approx({"head": 0.01, "backbone": 0.001})


def test_class_weighting_modes(pneumonia_subset, tmp_path):
    over = {"datalist": str(pneumonia_subset), "output_dir": str(tmp_path), "train_fraction": 0.5, **FAST}
    wf = _workflow("train.json", class_weighting="loss", **over)
    assert wf.parser.get_parsed_content("loss").weight is not None
    assert wf.parser.get_parsed_content("train#sampler") is None
    assert len(wf.parser.get_parsed_content("train#datalist")) == 12  # train_fraction: 6 per class
    wf = _workflow("train.json", class_weighting="sampler", **over)
    assert wf.parser.get_parsed_content("loss").weight is None
    assert wf.parser.get_parsed_content("train#sampler") is not None
    assert wf.parser.get_parsed_content("train#dataloader").sampler is wf.parser.get_parsed_content("train#sampler")
    wf = _workflow("train.json", class_weighting="focal", **over)
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("loss")
    assert any("class_weighting must be one of" in str(e) for e in _causes(info.value))


def test_resume_continues_and_keeps_best_model(pneumonia_subset, tmp_path):
    over = {"datalist": str(pneumonia_subset), "output_dir": str(tmp_path), "train_fraction": 0.5, **FAST}
    _run("train.json", **over)
    saved = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)
    assert saved["best_model"]["_saved"]  # the best score travels with the trainer checkpoint
    wf = _run("train.json", resume=True, **{**over, "max_epochs": 2})
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 2
    assert (tmp_path / "checkpoint_epoch=2.pt").is_file()
    best = wf.parser.get_parsed_content("validate#best_saver")._key_metric_checkpoint._saved
    assert len(best) == 1 and best[0].priority >= saved["best_model"]["_saved"][0][0]


def _rgb_class_folders(root, classes=("a", "b", "c"), per_class=5):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
            img[..., c] += 150  # the class is the dominant colour
            Image.fromarray(img).save(folder / f"{name}_{i}.png")
    return root


def test_multiclass_rgb_class_folders(tmp_path):
    data = _rgb_class_folders(tmp_path / "data")
    out = tmp_path / "out"
    _run("train.json", dataset_dir=str(data), output_dir=str(out), in_channels=3, val_fraction=0.4, **FAST)
    info = json.loads((out / "model.json").read_text())
    assert info["classes"] == ["a", "b", "c"] and info["in_channels"] == 3
    _run("evaluate.json", dataset_dir=str(data), output_dir=str(out), num_workers=0)
    report = json.loads((out / "eval" / "report_validation.json").read_text())
    assert report["calibrated"] is None and report["threshold"] is None  # no threshold for 3 classes
    assert len(report["default"]["confusion_matrix"]) == 3
    _run("inference.json", dataset_dir=str(data), output_dir=str(out), num_workers=0)
    rows = _read_csv(out / "inference" / "predictions.csv")
    assert rows[0][-5:] == ["prob_a", "prob_b", "prob_c", "predicted", "predicted_class"] and len(rows) == 16


@pytest.mark.slow
def test_3d_volumes(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    items = []
    for i in range(8):
        vol = rng.normal(size=(12, 12, 12)).astype(np.float32) + (i % 2)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / f"v{i}.nii.gz"))
        items.append({"image": f"v{i}.nii.gz", "label": i % 2})
    dl = {"classes": ["neg", "pos"], "training": items[:6], "validation": items[6:]}
    (tmp_path / "datalist.json").write_text(json.dumps(dl))
    over = {**FAST, "image_size": 16, "batch_size": 3}
    wf = _run(
        "train.json", datalist=str(tmp_path / "datalist.json"), output_dir=str(tmp_path / "o"), spatial_dims=3, **over
    )
    assert wf.parser.get_parsed_content("train#trainer").state.epoch == 1
    state = torch.load(tmp_path / "o" / "model.pt", weights_only=True)
    assert state["backbone.conv1.weight"].ndim == 5


def test_cli_from_another_directory(pneumonia_subset, tmp_path):
    """The exact command line, run from outside the repository, with the sampler and a train fraction."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(CONFIGS / "train.json"),
        "--datalist", str(pneumonia_subset),
        "--output_dir", str(tmp_path / "out"),
        "--class_weighting", "sampler",
        "--train_fraction", "0.5",
    ]  # fmt: skip
    for k, v in FAST.items():
        cmd += [f"--{k}", str(v)]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "out" / "model.pt").is_file()


def test_configs_share_preprocessing():
    train = json.loads((CONFIGS / "train.json").read_text())
    for name in ("evaluate.json", "inference.json"):
        other = json.loads((CONFIGS / name).read_text())
        assert other["preprocessing"]["transforms"] == train["base_transforms"], name


def test_metadata_verifies(tmp_path):
    from monai.bundle import verify_metadata, verify_net_in_out

    schema = REPO / "monai_dclcstp" / "resources" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip("vendored schema not available")
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        device="cpu",
        **{"output_dir": str(tmp_path)},
    )


def test_ckpt_export_traced_matches_eager(trained):
    """TorchScript export (traced: MONAI's ResNet blocks are not scriptable) gives the eager model's outputs."""
    from monai.bundle import ckpt_export

    out, wf = trained
    ckpt_export(
        net_id="network_def",
        filepath=str(out / "model.ts"),
        ckpt_file=str(out / "model.pt"),
        meta_file=str(CONFIGS / "metadata.json"),
        config_file=str(CONFIGS / "inference.json"),
        use_trace=True,
        input_shape=[1, 1, 32, 32],
        output_dir=str(out),
    )
    scripted = torch.jit.load(str(out / "model.ts"))
    eager = EncoderClassifier(2, backbone="resnet10").eval()
    eager.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-4, atol=1e-5)
