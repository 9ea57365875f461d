"""The pretraining bundle end to end, on tiny data (a handful of 32 px images, ResNet-10, one epoch).

Two runs use the exact command line in a subprocess (from the repo root and, on a copy of the bundle, from another
folder); the others use MONAI's ``ConfigWorkflow`` in this process (resume, ``--dataset_dir`` with synthetic mixing,
the 3D overlay). Outputs go to ``tmp_path``, never into ``bundles/pretrain/models``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_test_utils import tiny_datalist  # noqa: E402
from ignite.engine import Events
from PIL import Image

from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder, MultiScaleResNet
from monai_dclcstp.utils import load_pretrained_encoder, read_encoder_info

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "pretrain"
CONFIG = BUNDLE / "configs" / "train.json"
CONFIG_3D = BUNDLE / "configs" / "train_3d.json"
SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"
SCHEMA = REPO / "monai_dclcstp" / "resources" / "meta_schema_20240725.json"

#: tiny-run overrides (seconds per epoch on a CPU)
TINY = {
    "backbone": "resnet10",
    "image_size": 32,
    "batch_size": 4,
    "max_epochs": 1,
    "num_workers": 0,
    "val_interval": 1,
    "knn_k": 3,
    "queue_size": 16,
}


def _cli(overrides: dict) -> list[str]:
    args = []
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v)]
    return args


def run_bundle(args: list[str], cwd: Path, config: Path = CONFIG) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def workflow(config=CONFIG, **overrides):
    from monai.bundle import ConfigWorkflow

    configs = config if isinstance(config, (list, tuple)) else [config]
    wf = ConfigWorkflow(config_file=[str(c) for c in configs], workflow_type="train", **overrides)
    wf.initialize()
    assert wf.bundle_root  # resolved inside a ConfigWorkflow method, where find_bundle_root sees the config's folder
    return wf


def check_encoder_matches_checkpoint(out: Path, backbone: str = "resnet10", spatial_dims: int = 2) -> dict:
    """encoder.pt loads (weights_only) into a fresh backbone and gives the features of the trained network."""
    info = read_encoder_info(out / "encoder.pt")
    fresh = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=1).eval()
    load_pretrained_encoder(fresh, out / "encoder.pt", backbone=backbone, spatial_dims=spatial_dims, in_channels=1)
    ckpt = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    trained = DCLCsTPNet(DualStreamEncoder(spatial_dims, 1, backbone))
    trained.load_state_dict(ckpt["network"])
    trained.eval()
    x = torch.rand(2, 1, *([32] * spatial_dims))
    with torch.no_grad():
        for a, b in zip(fresh(x), trained.backbone(x)):
            assert torch.equal(a, b)
    untrained = MultiScaleResNet(backbone, spatial_dims=spatial_dims, in_channels=1).eval()
    with torch.no_grad():
        assert not torch.equal(untrained(x)[-1], fresh(x)[-1])
    return info


def test_metadata_verifies_offline_with_vendored_schema(tmp_path):
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["schema"].endswith("meta_schema_20240725.json") and "monai_dclcstp" in meta["required_packages_version"]
    bad = dict(meta)
    del bad["network_data_format"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(SCHEMA))


def test_properties_and_default_data_source(tmp_path):
    wf = workflow(output_dir=str(tmp_path / "out"))
    assert wf.check_properties() in (None, [])
    assert Path(wf.parser.get_parsed_content("bundle_root")) == BUNDLE
    checked = wf.parser.get_parsed_content("checked_datalist")  # the embedded sample, found with no arguments
    assert len(checked["training"]) == 300 and len(checked["validation"]) == 100
    assert len(wf.parser.get_parsed_content("validate#bank_items")) == 300
    assert str(wf.parser.get_parsed_content("torch_device")) == "cpu"
    wf = workflow(bundle_root=str(tmp_path / "elsewhere"), device="cpu")  # --bundle_root and a string device
    assert wf.parser.get_parsed_content("output_dir") == str(tmp_path / "elsewhere" / "models")
    assert wf.parser.get_parsed_content("network").online.backbone.conv1.weight.device.type == "cpu"


def test_cli_from_repo_root(tmp_path):
    datalist = tiny_datalist(tmp_path / "data")
    out = tmp_path / "out"
    proc = run_bundle(_cli({**TINY, "datalist": str(datalist), "output_dir": str(out)}), cwd=REPO)
    log = proc.stdout + proc.stderr
    assert "loss_global" in log and "loss_local" in log  # per-iteration losses on the console
    assert "kNN (k=3, 8 bank / 4 val items) after epoch 1" in log and "pretraining finished" in log
    for name in ("checkpoint_epoch=1.pt", "checkpoint_final.pt", "encoder.pt", "encoder.json", "run_summary.json"):
        assert (out / name).is_file(), name
    assert list((out / "runs").glob("events.out.tfevents.*"))
    info = check_encoder_matches_checkpoint(out)
    assert info["backbone"] == "resnet10" and info["spatial_dims"] == 2 and info["in_channels"] == 1
    assert info["feature_channels"] == [128, 256, 512] and info["image_size"] == 32
    assert info["intensity"]["mode"] == "auto" and info["intensity"]["uint8_divisor"] == 255.0
    method = info["method"]
    assert method["name"] == "dcl-cstp" and method["epochs"] == 1 and method["iterations"] == 2
    assert method["lambda_local"] == 0.5 and method["temperature"] == 0.2 and method["data_size"] == 8
    assert method["symmetric"] is True
    assert method["synthetic_fraction"] == 0.0
    assert info["training_config"]["data_source"] == str(datalist)
    assert info["monitoring"]["knn_start"]["epoch"] == 0 and info["monitoring"]["knn_final"]["epoch"] == 1
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["encoder"] == str(out / "encoder.pt") and summary["epochs"] == 1


def test_cli_from_another_folder_on_a_bundle_copy(tmp_path):
    copy = tmp_path / "my_bundle"
    shutil.copytree(BUNDLE / "configs", copy / "configs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    datalist = tiny_datalist(tmp_path / "data")
    overrides = {**TINY, "datalist": str(datalist), "val_interval": 0, "save_interval": 0}
    run_bundle(_cli(overrides), cwd=elsewhere, config=copy / "configs" / "train.json")
    out = copy / "models"  # bundle_root found from the config's location, not the working directory
    assert (out / "encoder.pt").is_file() and (out / "checkpoint_final.pt").is_file()
    assert not (elsewhere / "models").exists() and not list((out).glob("checkpoint_epoch=*.pt"))


def test_resume_continues_with_the_next_epoch(tmp_path):
    datalist = tiny_datalist(tmp_path / "data")
    overrides = {**TINY, "datalist": str(datalist), "output_dir": str(tmp_path / "out"), "max_epochs": 2}

    class Interrupt(RuntimeError):
        pass

    wf = workflow(**overrides)
    trainer = wf.parser.get_parsed_content("train#trainer")

    def interrupt(engine):
        raise Interrupt("simulated crash after epoch 1")

    trainer.add_event_handler(Events.EPOCH_COMPLETED(once=1), interrupt)
    with pytest.raises(RuntimeError) as err:  # ConfigWorkflow wraps the exception of the "run" expression
        wf.run()
    assert isinstance(err.value, Interrupt) or isinstance(err.value.__cause__, Interrupt)
    loss = wf.parser.get_parsed_content("loss")
    saved_queue = loss.global_loss.queue.clone()
    saved_ptr = int(loss.global_loss.queue_ptr)
    assert int(loss.global_loss.queue_filled) == 16  # 2 iterations x 2 views x 4 keys
    ckpt = torch.load(tmp_path / "out" / "checkpoint_epoch=1.pt", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2 and set(ckpt) >= {"network", "optimizer", "lr_scheduler", "loss"}

    wf2 = workflow(**overrides, resume=True)
    trainer2 = wf2.parser.get_parsed_content("train#trainer")
    loss2 = wf2.parser.get_parsed_content("loss")
    optimizer2 = wf2.parser.get_parsed_content("optimizer")
    scheduler2 = wf2.parser.get_parsed_content("lr_scheduler")
    seen = {}

    def at_start(engine):  # attached after the bundle's handlers, so after the checkpoint was loaded
        seen["epoch"], seen["iteration"] = engine.state.epoch, engine.state.iteration
        seen["queue_equal"] = torch.equal(loss2.global_loss.queue, saved_queue)
        seen["ptr"] = int(loss2.global_loss.queue_ptr)
        seen["steps"] = {int(s["step"]) for s in optimizer2.state_dict()["state"].values()}
        seen["scheduler_epoch"] = scheduler2.last_epoch

    epochs = []
    trainer2.add_event_handler(Events.STARTED, at_start)
    trainer2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    wf2.run()
    assert seen == {
        "epoch": 1,
        "iteration": 2,
        "queue_equal": True,
        "ptr": saved_ptr,
        "steps": {2},
        "scheduler_epoch": 2,
    }
    assert epochs == [2] and trainer2.state.epoch == 2 and trainer2.state.iteration == 4
    info = read_encoder_info(tmp_path / "out" / "encoder.pt")
    assert info["method"]["epochs"] == 2


def test_dataset_dir_with_synthetic_mixing(tmp_path):
    rng = np.random.RandomState(0)
    (tmp_path / "scans" / "b" / "c").mkdir(parents=True)  # a nested, unlabelled folder tree (not class folders)
    for i in range(6):
        img = (rng.rand(40, 40) * 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "scans" / ("" if i < 3 else "b/c") / f"img{i}.png")
    synth = tmp_path / "synthetic"
    (synth / "images").mkdir(parents=True)
    for i in range(4):
        Image.fromarray((rng.rand(28, 28) * 255).astype(np.uint8)).save(synth / "images" / f"s{i}.png")
    (synth / "datalist.json").write_text(
        json.dumps({"training": [{"image": f"images/s{i}.png", "synthetic": True} for i in range(4)]})
    )
    out = tmp_path / "out"
    wf = workflow(
        **TINY,
        dataset_dir=str(tmp_path / "scans"),
        synthetic_datalist=str(synth / "datalist.json"),
        synthetic_ratio=0.25,
        symmetric=False,  # and the asymmetric (MoCo v2 / DenseCL) step
        output_dir=str(out),
    )
    assert wf.parser.get_parsed_content("network_def").symmetric is False
    items = wf.parser.get_parsed_content("train#items")
    assert len(items) == 8 and sum(it["synthetic"] for it in items) == 2
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert set(batch) == {"view1", "view2", "geometry1", "geometry2", "synthetic"}
    assert batch["view1"].shape == (4, 1, 32, 32) and batch["geometry1"].shape == (4, 3, 2)
    wf.run()
    info = read_encoder_info(out / "encoder.pt")
    assert info["method"]["synthetic_fraction"] == 0.25 and info["method"]["num_synthetic"] == 2
    assert info["method"]["symmetric"] is False
    assert info["monitoring"] == {}  # unlabelled folder: the kNN monitor is off


def test_3d_overlay_on_tiny_nifti_volumes(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.RandomState(0)
    (tmp_path / "vols").mkdir()
    for i in range(4):
        vol = rng.normal(100.0, 20.0, size=(20, 22, 18)).astype(np.float32)
        vol[5:12, 6:14, 4:10] += 300.0 * (i % 2 + 1)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "vols" / f"vol{i}.nii.gz"))
    out = tmp_path / "out"
    overrides = {**TINY, "image_size": 16, "batch_size": 2, "val_interval": 0, "save_interval": 0}
    wf = workflow(config=[CONFIG, CONFIG_3D], **overrides, dataset_dir=str(tmp_path / "vols"), output_dir=str(out))
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["view1"].shape == (2, 1, 16, 16, 16) and batch["geometry1"].shape == (2, 3, 3)
    assert 0.0 <= float(batch["view1"].min()) and float(batch["view1"].max()) <= 1.0
    wf.run()
    info = check_encoder_matches_checkpoint(out, spatial_dims=3)
    assert info["spatial_dims"] == 3 and info["intensity"]["mode"] == "percentile" and info["image_size"] == 16
