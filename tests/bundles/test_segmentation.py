"""The segmentation bundle end to end: train / evaluate / inference with ConfigWorkflow (and once through the CLI) on
tiny real data (PH2 + ISIC sample + Kvasir-SEG sample from ``../shared/data``) and generated 3D / multi-class data.

Outputs go to ``tmp_path`` (``output_dir`` overridden), never into ``bundles/segmentation/models``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow
from PIL import Image

from monai_dclcstp.data import DatalistError, load_datalist, write_datalist
from monai_dclcstp.networks import MultiScaleResNet, PretrainedEncoderUNet
from monai_dclcstp.utils import EncoderMismatchError, export_encoder, intensity_description

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "segmentation" / "configs"
SHARED = REPO / ".." / "shared" / "data"

#: overrides that keep every run to seconds on CPU
TINY = {"image_size": 32, "batch_size": 4, "max_epochs": 1, "num_workers": 0, "progress_bar": False, "amp": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast and does not stall when the CPU is shared; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run(files: list[str], workflow_type: str = "train", **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **{"bundle_root": str(CONFIGS.parent), **overrides},
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])
    wf.run()
    wf.finalize()
    return wf


def _parser(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser["bundle_root"] = str(CONFIGS.parent)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _items(name: str) -> list[dict]:
    dl = load_datalist(None, SHARED / name, task="segmentation", val_fraction=0.2, seed=0)
    return sorted(dl["training"] + dl["validation"], key=lambda it: it["image"])


@pytest.fixture(scope="module")
def shared_datalist(tmp_path_factory) -> Path:
    """PH2 (8) + ISIC sample (5) + Kvasir-SEG sample (5, JPEG masks with a per-item threshold) in one datalist."""
    if not all((SHARED / n).is_dir() for n in ("ph2", "isic-sample", "kvasir-seg-sample")):
        pytest.skip("../shared/data segmentation samples not available")
    ph2, isic, kvasir = _items("ph2")[:8], _items("isic-sample"), _items("kvasir-seg-sample")
    assert all(it.get("mask_threshold") == 127 for it in kvasir)
    datalist = {
        "classes": ["background", "lesion"],
        "training": ph2[:6] + isic[:4] + kvasir[:4],
        "validation": ph2[6:] + isic[4:] + kvasir[4:],
    }
    path = tmp_path_factory.mktemp("seg_data") / "datalist.json"
    write_datalist(datalist, path, relative=False)
    return path


@pytest.fixture(scope="module")
def trained(shared_datalist, tmp_path_factory) -> Path:
    """One epoch of training on the shared data; its output folder."""
    out = tmp_path_factory.mktemp("seg_train")
    _run(["train.json"], output_dir=str(out), datalist=str(shared_datalist), **TINY)
    return out


def test_train_one_epoch_on_shared_data(trained):
    for name in ("model.pt", "checkpoint_epoch=1.pt", "model.json", "train_summary.json"):
        assert (trained / name).is_file(), name
    assert list((trained / "runs").glob("events.out.tfevents.*"))
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["epochs"] == 1 and summary["num_training"] == 14 and summary["num_validation"] == 4
    assert 0.0 <= summary["best_val_mean_dice"] <= 1.0
    state = torch.load(trained / "model.pt", weights_only=True)
    PretrainedEncoderUNet(3, 2).load_state_dict(state)  # a plain state dict (MONAI Label loads it the same way)


def test_evaluate_writes_per_image_metrics(trained, shared_datalist):
    _run(["train.json", "evaluate.json"], output_dir=str(trained), datalist=str(shared_datalist), **TINY)
    report = json.loads((trained / "eval" / "metrics.json").read_text())
    assert report["num_images"] == 4 and len(report["images"]) == 4
    assert set(report["summary"]) == {"dice", "iou", "hd95"}
    for row in report["images"]:
        assert Path(row["image"]).is_file() and Path(row["label"]).is_file()
        assert 0.0 <= row["dice"] <= 1.0 and 0.0 <= row["iou"] <= row["dice"] + 1e-6
    assert report["resolution"].startswith("metrics at each input's original size")
    csv_lines = (trained / "eval" / "metrics.csv").read_text().strip().splitlines()
    assert csv_lines[0] == "image,label,dice,iou,hd95" and len(csv_lines) == 5
    assert (trained / "eval" / "metrics_summary.csv").read_text().startswith("metric,")


def test_inference_writes_png_masks_of_the_input_size(trained, tmp_path):
    kvasir = SHARED / "kvasir-seg-sample"
    _run(["inference.json"], "infer", output_dir=str(trained), dataset_dir=str(kvasir), infer_dir=str(tmp_path))
    images = sorted((kvasir / "images").glob("*.jpg"))
    written = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in written] == [f"{p.stem}_seg.png" for p in images]  # masks/ is not taken as input
    for image, mask in zip(images, written):
        m = Image.open(mask)
        assert m.size == Image.open(image).size and m.mode == "L"
        assert set(np.unique(np.asarray(m)).tolist()) <= {0, 255}


def test_inference_names_cannot_escape_the_output_dir(trained, tmp_path):
    src = tmp_path / "elsewhere" / "a b.jpg"
    src.parent.mkdir()
    shutil.copy(REPO / "data" / "samples" / "ph2" / "images" / "IMD020.jpg", src)
    listing = tmp_path / "lists" / "deep"
    listing.mkdir(parents=True)
    (listing / "datalist.json").write_text(json.dumps({"test": [{"image": "../../elsewhere/a b.jpg"}]}))
    out = tmp_path / "out"
    _run(
        ["inference.json"],
        "infer",
        output_dir=str(trained),
        datalist=str(listing / "datalist.json"),
        infer_dir=str(out),
    )
    assert [p.name for p in out.iterdir()] == ["a_b_seg.png"]
    assert sorted(p.name for p in tmp_path.rglob("*seg*")) == ["a_b_seg.png"]


def test_resume_continues_and_keeps_the_best_model(trained, shared_datalist, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained, out)
    # pretend the saved model.pt scored a Dice no new model can beat: resuming must not overwrite it
    ckpt_path = out / "checkpoint_epoch=1.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["best_model"]["_saved"] = [[2.0, ckpt["best_model"]["_saved"][0][1]]]
    torch.save(ckpt, ckpt_path)
    best_before = (out / "model.pt").read_bytes()
    wf = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"),
        workflow_type="train",
        logging_file=str(CONFIGS / "logging.conf"),
        bundle_root=str(CONFIGS.parent),
        output_dir=str(out),
        datalist=str(shared_datalist),
        resume=True,
        **{**TINY, "max_epochs": 2},
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: epochs_run.append(e.state.epoch))
    wf.run()
    wf.finalize()
    assert epochs_run == [2]  # epoch 1 came from the checkpoint
    assert (out / "checkpoint_epoch=2.pt").is_file() and not (out / "checkpoint_epoch=1.pt").exists()
    assert (out / "model.pt").read_bytes() == best_before


def _export(path: Path, backbone="resnet18", spatial_dims=2, in_channels=3) -> Path:
    torch.manual_seed(123)
    enc = MultiScaleResNet(backbone, spatial_dims, in_channels)
    pt, _ = export_encoder(
        enc,
        path,
        backbone_name=backbone,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        feature_channels=enc.feature_channels,
        image_size=64,
        intensity=intensity_description("window", a_min=0, a_max=255, output_range=[-1, 1]),
        method={"name": "dcl-cstp"},
    )
    return pt


def test_pretrained_encoder_initialises_the_bundle_network(tmp_path):
    pt = _export(tmp_path / "encoder.pt")
    torch.manual_seed(0)
    random_net = _parser().get_parsed_content("network_def")
    torch.manual_seed(0)
    parser = _parser(pretrained_encoder=str(pt))
    net = parser.get_parsed_content("network_def")
    exported = torch.load(pt, weights_only=True)
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in exported.items())
    assert not torch.equal(net.encoder.conv1.weight, random_net.encoder.conv1.weight)
    intensity = parser.get_parsed_content("intensity")  # preprocessing follows the encoder
    assert intensity["mode"] == "window" and intensity["output_range"] == [-1.0, 1.0]


def test_wrong_architecture_encoder_fails_clearly(tmp_path):
    pt = _export(tmp_path / "encoder10.pt", backbone="resnet10", in_channels=1)
    with pytest.raises(Exception) as info:
        _parser(pretrained_encoder=str(pt)).get_parsed_content("network_def")
    err = info.value
    while err is not None and not isinstance(err, EncoderMismatchError):
        err = err.__cause__
    assert isinstance(err, EncoderMismatchError)
    assert str(pt) in str(err) and "backbone: encoder has 'resnet10', expected 'resnet18'" in str(err)
    assert "in_channels: encoder has 1, expected 3" in str(err)


def test_bad_mask_is_named_before_training(tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    small = tmp_path / "x_mask.png"
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(small)
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "x.png", "label": "x_mask.png"}] * 2}))
    with pytest.raises(Exception) as info:
        _parser(datalist=str(tmp_path / "dl.json"), output_dir=str(tmp_path / "o")).get_parsed_content("data")
    text = str(info.value) + str(info.value.__cause__)
    assert "x_mask.png" in text and "differs from its image" in text
    assert isinstance(info.value, DatalistError) or isinstance(info.value.__cause__, DatalistError)


def test_default_sample_patch_mode(tmp_path):
    """No data arguments: the embedded PH2 sample; random crops for training, sliding-window validation."""
    wf = _run(["train.json"], output_dir=str(tmp_path), spatial_mode="patch", **TINY)
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["num_training"] == 18 and info["num_validation"] == 6 and info["spatial_mode"] == "patch"
    assert wf.parser.get_parsed_content("validate#inferer").__class__.__name__ == "SlidingWindowInferer"


def _volume_pairs(root: Path, n: int, affine: np.ndarray) -> list[dict]:
    rng = np.random.default_rng(0)
    items = []
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (20, 18, 14)], indexing="ij"), -1)
    for i in range(n):
        centre = rng.uniform(6, 12, size=3)
        mask = (np.linalg.norm(grid - centre, axis=-1) < 4).astype(np.uint8)
        image = (mask * 0.6 + rng.random(mask.shape) * 0.4).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), str(root / f"case{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, affine), str(root / f"case{i}_seg.nii.gz"))
        items.append({"image": f"case{i}.nii.gz", "label": f"case{i}_seg.nii.gz"})
    return items


def test_3d_train_and_inference_keep_the_affine(tmp_path):
    affine = np.array([[0.0, -1.2, 0, 30], [0.8, 0, 0, -12], [0, 0, 2.5, 4], [0, 0, 0, 1]])
    data = tmp_path / "vols"
    data.mkdir()
    items = _volume_pairs(data, 6, affine)
    (data / "datalist.json").write_text(json.dumps({"training": items[:4], "validation": items[4:]}))
    out = tmp_path / "model"
    volume = {"spatial_dims": 3, "in_channels": 1, "backbone": "resnet10"}
    volume["default_intensity"] = {"mode": "window", "a_min": 0, "a_max": 1}
    _run(
        ["train.json"],
        output_dir=str(out),
        datalist=str(data / "datalist.json"),
        **volume,
        **{**TINY, "image_size": 16, "batch_size": 2},
    )
    preds = tmp_path / "preds"
    _run(["inference.json"], "infer", output_dir=str(out), datalist=str(data / "datalist.json"), infer_dir=str(preds))
    for it in items:
        src = nib.load(str(data / it["image"]))
        pred = nib.load(str(preds / it["image"].replace(".nii.gz", "_seg.nii.gz")))
        assert pred.shape == src.shape == (20, 18, 14)
        np.testing.assert_allclose(pred.affine, affine, atol=1e-5)
        assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1}


def test_multiclass_grey_masks(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(6):
        mask = np.zeros((40, 48), np.uint8)
        mask[5:20, 5:25], mask[25:35, 20:44] = 1, 2
        image = (mask * 90 + rng.integers(0, 60, mask.shape)).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / f"g{i}.png")
        Image.fromarray(mask).save(tmp_path / f"g{i}_mask.png")
        items.append({"image": f"g{i}.png", "label": f"g{i}_mask.png"})
    dl = {"classes": ["background", "a", "b"], "training": items[:4], "validation": items[4:]}
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    args = {
        "output_dir": str(tmp_path / "o"),
        "datalist": str(tmp_path / "dl.json"),
        "in_channels": 1,
        "num_classes": 3,
    }
    _run(["train.json"], **args, **TINY)
    _run(["train.json", "evaluate.json"], **args, **TINY)
    report = json.loads((tmp_path / "o" / "eval" / "metrics.json").read_text())
    assert set(report["per_class"]) == {"a", "b"} and report["num_images"] == 2
    assert {"dice_a", "dice_b", "hd95_b"} <= set(report["images"][0])


def test_cli_train_on_a_dataset_folder(tmp_path):
    if not (SHARED / "kvasir-seg-sample").is_dir():
        pytest.skip("../shared/data/kvasir-seg-sample not available")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/segmentation/configs/train.json"]
    cmd += ["--dataset_dir", str(SHARED / "kvasir-seg-sample"), "--output_dir", str(tmp_path)]
    for k, v in TINY.items():
        cmd += [f"--{k}", str(v)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "model.pt").is_file()
    info = json.loads((tmp_path / "model.json").read_text())
    assert Path(info["datalist"]).resolve() == (SHARED / "kvasir-seg-sample").resolve()
    assert not list((REPO / "bundles" / "segmentation" / "models").glob("*.pt"))
