"""Pieces of the segmentation bundle: the U-Net with a pretrained encoder, mask transforms, the mask writer, the report."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from monai_dclcstp.handlers.segmentation_report import summarize
from monai_dclcstp.networks import MultiScaleResNet, PretrainedEncoderUNet
from monai_dclcstp.transforms.segmentation import (
    ResizeToOriginalSized,
    ToClassIndexMask,
    ToClassIndexMaskd,
    WriteSegmentationMask,
    WriteSegmentationMaskd,
    output_name,
)
from monai_dclcstp.utils import EncoderMismatchError, export_encoder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast and does not stall when the CPU is shared; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _export(tmp_path: Path, backbone="resnet18", spatial_dims=2, in_channels=3, seed=1) -> Path:
    torch.manual_seed(seed)
    enc = MultiScaleResNet(backbone, spatial_dims, in_channels)
    pt, _ = export_encoder(
        enc,
        tmp_path / f"enc_{backbone}_{spatial_dims}d_{in_channels}c.pt",
        backbone_name=backbone,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        feature_channels=enc.feature_channels,
        image_size=32,
        intensity={"mode": "auto"},
        method={"name": "dcl-cstp"},
    )
    return pt


# ----------------------------------------------------------------------------------------------- network


@pytest.mark.parametrize(
    "spatial_dims,in_channels,out_channels,shape",
    [(2, 3, 2, (2, 3, 40, 56)), (2, 1, 4, (2, 1, 33, 32)), (3, 1, 2, (2, 1, 20, 24, 16))],
)
def test_unet_shapes(spatial_dims, in_channels, out_channels, shape):
    net = PretrainedEncoderUNet(in_channels, out_channels, spatial_dims=spatial_dims).eval()
    with torch.no_grad():
        out = net(torch.randn(*shape))
    assert out.shape == (shape[0], out_channels, *shape[2:])


def test_unet_loads_exported_encoder(tmp_path):
    pt = _export(tmp_path)
    torch.manual_seed(0)
    random_init = PretrainedEncoderUNet(3, 2)
    torch.manual_seed(0)
    loaded = PretrainedEncoderUNet(3, 2, pretrained_encoder=str(pt))
    exported = torch.load(pt, weights_only=True)
    own = loaded.encoder.state_dict()
    assert set(own) == set(exported)
    assert all(torch.equal(own[k], exported[k]) for k in exported)
    w = "conv1.weight"
    assert not torch.equal(random_init.encoder.state_dict()[w], own[w])
    # the decoder is untouched by the encoder (same seed, same random decoder)
    assert torch.equal(random_init.segmentation_head[0].weight, loaded.segmentation_head[0].weight)
    assert loaded.encoder_info["backbone"] == "resnet18"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"backbone": "resnet10"}, "backbone"),
        ({"in_channels": 1}, "in_channels"),
        ({"spatial_dims": 3}, "spatial_dims"),
    ],
)
def test_unet_refuses_wrong_encoder(tmp_path, kwargs, field):
    pt = _export(tmp_path, **kwargs)
    with pytest.raises(EncoderMismatchError, match=field) as e:
        PretrainedEncoderUNet(3, 2, pretrained_encoder=str(pt))
    assert str(pt) in str(e.value)


def test_unet_empty_encoder_is_random_init():
    for empty in (None, "", "None"):
        assert PretrainedEncoderUNet(3, 2, pretrained_encoder=empty).encoder_info == {}


def test_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="backbone"):
        PretrainedEncoderUNet(3, 2, backbone="efficientnet-b0")
    with pytest.raises(ValueError, match="spatial_dims"):
        PretrainedEncoderUNet(3, 2, spatial_dims=1)


def test_frozen_encoder_keeps_weights_and_batch_norm_statistics():
    net = PretrainedEncoderUNet(3, 2, freeze_encoder=True)
    net.train()
    assert not net.encoder.training and net.decoder.training
    assert all(not p.requires_grad for p in net.encoder.parameters())
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    groups = net.parameter_groups(1e-2)
    assert [g["name"] for g in groups] == ["decoder"]
    opt = torch.optim.SGD(groups, lr=1e-2)
    loss = net(torch.randn(2, 3, 32, 32)).square().mean()
    loss.backward()
    opt.step()
    after = net.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running_mean/var unchanged


def test_parameter_groups_lower_encoder_lr():
    net = PretrainedEncoderUNet(3, 2)
    groups = {g["name"]: g for g in net.parameter_groups(1e-3, 0.1)}
    assert groups["encoder"]["lr"] == pytest.approx(1e-4) and groups["decoder"]["lr"] == pytest.approx(1e-3)
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(net.parameters()))
    with pytest.raises(ValueError):
        net.parameter_groups(0.0)


# ----------------------------------------------------------------------------------------------- mask transforms


def test_class_index_mask_binary_threshold():
    mask = torch.tensor([[[0, 100, 200], [128, 127, 255]]], dtype=torch.float32).repeat(3, 1, 1)  # RGB-stored
    out = ToClassIndexMask(2)(mask)
    assert out.shape == (1, 2, 3) and out.tolist() == [[[0, 1, 1], [1, 1, 1]]]
    out = ToClassIndexMaskd("label", 2)({"label": mask, "mask_threshold": 127})["label"]
    assert out.tolist() == [[[0, 0, 1], [1, 0, 1]]]
    out = ToClassIndexMaskd("label", 2, threshold=150)({"label": mask})["label"]
    assert out.tolist() == [[[0, 0, 1], [0, 0, 1]]]


def test_class_index_mask_multiclass():
    mask = np.array([[[0, 1], [2, 2]]], dtype=np.uint8)
    out = ToClassIndexMask(3)(mask)
    assert out.dtype == np.float32 and out.tolist() == [[[0, 1], [2, 2]]]
    with pytest.raises(ValueError, match=r"values in \[0, 4\], outside the class indices 0..2"):
        ToClassIndexMask(3)(mask * 2)
    with pytest.raises(ValueError, match="num_classes"):
        ToClassIndexMask(1)


# ----------------------------------------------------------------------------------------------- restore size


def test_resize_to_original_size_interpolates_probabilities(tmp_path):
    src = tmp_path / "p.png"
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(src)  # H 30, W 50
    image = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])({"image": str(src)})["image"]
    small = torch.zeros(2, 10, 6)
    small[1, :5] = 1.0  # left half foreground in MONAI's (W, H) order
    small[0] = 1.0 - small[1]
    out = ResizeToOriginalSized("pred", ref_key="image")({"pred": MetaTensor(small), "image": image})["pred"]
    assert out.shape == (2, 50, 30)
    assert out.meta["filename_or_obj"] == str(src)
    column = out[1, :, 0]
    assert column[0] == 1.0 and column[-1] == 0.0 and 0.0 < column[24] < 1.0  # interpolated, not replicated
    same = ResizeToOriginalSized("pred")({"pred": MetaTensor(torch.zeros(2, 50, 30), meta={"spatial_shape": (50, 30)})})
    assert same["pred"].shape == (2, 50, 30)
    with pytest.raises(ValueError, match="spatial_shape"):
        ResizeToOriginalSized("pred", ref_key=None)({"pred": torch.zeros(2, 4, 4)})


# ----------------------------------------------------------------------------------------------- mask writer


def test_output_name_is_sanitised():
    assert output_name("/data/a/IMD002.jpg") == "IMD002_seg.png"
    assert output_name("../../x y.png") == "x_y_seg.png"
    assert output_name("case.nii.gz", ext=".nii.gz") == "case_seg.nii.gz"
    assert output_name("..", ext=".png") == "image_seg.png"
    assert output_name("") == "image_seg.png"


def test_writer_png_has_input_size_and_orientation(tmp_path):
    h, w = 5, 7
    img = np.zeros((h, w, 3), np.uint8)
    img[1, 2] = 255  # one bright pixel, off the diagonal
    src = tmp_path / "in" / "pic.png"
    src.parent.mkdir()
    Image.fromarray(img).save(src)
    loaded = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])({"image": str(src)})["image"]
    assert loaded.shape == (3, w, h)  # MONAI's PILReader: (W, H)
    pred = MetaTensor((loaded[:1] > 0).float(), meta=dict(loaded.meta))
    out_dir = tmp_path / "out"
    path = WriteSegmentationMaskd("pred", out_dir)({"pred": pred})["pred_file"]
    assert Path(path) == out_dir / "pic_seg.png"
    written = np.asarray(Image.open(path))
    assert written.shape == (h, w) and written.dtype == np.uint8
    assert written[1, 2] == 255 and written.sum() == 255


def test_writer_refuses_wrong_size_and_keeps_names_apart(tmp_path):
    meta = {"filename_or_obj": "/a/x.png", "spatial_shape": np.array([4, 3])}
    writer = WriteSegmentationMask(tmp_path)
    with pytest.raises(ValueError, match="invert the resizing"):
        writer(MetaTensor(torch.zeros(1, 8, 8), meta=meta))
    p1 = writer(MetaTensor(torch.zeros(1, 4, 3), meta=meta))
    p2 = writer(MetaTensor(torch.zeros(1, 4, 3), meta={**meta, "filename_or_obj": "/b/x.png"}))
    assert p1.name == "x_seg.png" and p2.name == "x_seg_2.png"
    p3 = writer(MetaTensor(torch.zeros(4, 3), meta={**meta, "filename_or_obj": "/c/y.png"}))  # squeezed 2D
    assert p3.name == "y_seg.png"


def test_writer_names_cannot_escape_output_dir(tmp_path):
    out_dir = tmp_path / "deep" / "out"
    writer = WriteSegmentationMask(out_dir)
    for name in ("../../../escape.png", "/etc/../../escape.png", "..\\..\\escape.png", "../.hidden.png"):
        path = writer(MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": name}))
        assert path.resolve().parent == out_dir.resolve()
    assert not list(tmp_path.glob("*escape*")) and not list((tmp_path / "deep").glob("*escape*"))


def test_writer_nifti_keeps_affine(tmp_path):
    affine = np.array([[0.0, -1.5, 0, 10], [2.0, 0, 0, -5], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(src))
    loaded = Compose([LoadImaged("image", image_only=True), EnsureChannelFirstd("image")])({"image": str(src)})["image"]
    pred = MetaTensor((loaded > 0.5).float(), meta=dict(loaded.meta))
    path = WriteSegmentationMask(tmp_path / "out", num_classes=2)(pred)
    assert path.name == "vol_seg.nii.gz"
    out = nib.load(str(path))
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.dataobj), (data > 0.5).astype(np.uint8))


# ----------------------------------------------------------------------------------------------- report


def test_summarize_skips_undefined_values():
    s = summarize([0.5, None, float("nan"), 1.0, float("inf")])
    assert s["n"] == 2 and s["n_undefined"] == 3 and s["mean"] == pytest.approx(0.75)
    assert summarize([None])["mean"] is None
    json.dumps(s)
