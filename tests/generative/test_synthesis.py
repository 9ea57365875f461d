"""Synthetic image writing and datalists: counts, validity, round trip, no overwrite, no escape."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from monai_dclcstp.generative import (
    atomic_write,
    build_scheduler,
    latent_shape,
    safe_output_path,
    save_json,
    save_nifti,
    save_png,
    synthesize,
    to_uint8,
    write_synthetic_datalist,
)


def _check_datalist(out: Path, datalist: dict, n: int, conditional: bool):
    on_disk = json.loads((out / "datalist.json").read_text())
    assert on_disk == datalist
    items = datalist["training"]
    assert len(items) == n and len({it["image"] for it in items}) == n
    for it in items:
        assert not os.path.isabs(it["image"]) and (out / it["image"]).is_file()
        assert it["synthetic"] is True and it["source"] == "ldm"
        assert ("label" in it) == conditional
    assert not list(out.rglob(".tmp-*"))


def test_synthesize_2d_class_conditional(tmp_path, tiny_unet, tiny_autoencoder):
    ae = tiny_autoencoder(2)
    unet = tiny_unet(2, in_channels=3, num_class_embeds=2)
    out = tmp_path / "synthetic"
    shape = latent_shape(ae, (16, 16))
    datalist = synthesize(
        unet,
        build_scheduler("dpm_solver++"),
        out,
        latent_shape=shape,
        autoencoder=ae,
        class_counts=[3, 2],
        classes=["normal", "pneumonia"],
        scale_factor=0.7,
        num_inference_steps=3,
        batch_size=2,
        shuffle=True,
    )
    _check_datalist(out, datalist, 5, conditional=True)
    assert datalist["classes"] == ["normal", "pneumonia"]
    assert Counter(it["label"] for it in datalist["training"]) == {0: 3, 1: 2}
    for it in datalist["training"]:
        assert Path(it["image"]).name.startswith(f"ldm_c{it['label']}_") and it["image"].endswith(".png")
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(out / datalist["training"][0]["image"]))
    assert tuple(img.shape) == (1, 16, 16)
    assert datalist["generation"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert datalist["generation"]["scheduler_options"]["algorithm_type"] == "dpmsolver++"

    # second run into the same folder: refused before sampling, files untouched
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(FileExistsError, match="already exist"):
        synthesize(unet, build_scheduler("ddim"), out, latent_shape=shape, autoencoder=ae, class_counts=[3, 2])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # explicit overwrite is allowed
    again = synthesize(
        unet, build_scheduler("ddim"), out, latent_shape=shape, autoencoder=ae, class_counts=[1, 1],
        num_inference_steps=2, overwrite=True,
    )  # fmt: skip
    assert [it["label"] for it in again["training"]] == [0, 1] and again["classes"] == ["0", "1"]


def test_synthesize_3d_unconditional_nifti(tmp_path, tiny_unet, tiny_autoencoder):
    ae = tiny_autoencoder(3)
    unet = tiny_unet(3, in_channels=3)
    out = tmp_path / "syn3d"
    datalist = synthesize(
        unet,
        build_scheduler("unipc"),
        out,
        latent_shape=latent_shape(ae, (8, 8, 8)),
        autoencoder=ae,
        num_samples=3,
        num_inference_steps=2,
        batch_size=2,
    )
    _check_datalist(out, datalist, 3, conditional=False)
    assert datalist["classes"] == []
    assert all(it["image"].endswith(".nii.gz") for it in datalist["training"])
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(out / datalist["training"][2]["image"]))
    assert tuple(img.shape) == (1, 8, 8, 8)


def test_synthesize_is_reproducible_and_image_space(tmp_path, tiny_unet):
    unet = tiny_unet(2)
    kw = dict(latent_shape=(1, 8, 8), num_samples=2, num_inference_steps=3, intensity_range=(-1.0, 1.0), seed=5)
    a = synthesize(unet, build_scheduler("ddim"), tmp_path / "a", **kw)
    b = synthesize(unet, build_scheduler("ddim"), tmp_path / "b", **kw)
    for x, y in zip(a["training"], b["training"]):
        assert (tmp_path / "a" / x["image"]).read_bytes() == (tmp_path / "b" / y["image"]).read_bytes()


def test_synthesize_argument_errors(tmp_path, tiny_unet):
    unet, sched = tiny_unet(2), build_scheduler("ddim")
    with pytest.raises(ValueError, match="exactly one"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="num_class_embeds"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8), class_counts=[1, 1])
    with pytest.raises(ValueError, match="prefix"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8), num_samples=1, prefix="../x")
    with pytest.raises(ValueError, match="unsafe"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8), num_samples=1, images_subdir="../images")
    with pytest.raises(ValueError, match="unsafe"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8), num_samples=1, datalist_name="/tmp/x.json")
    with pytest.raises(ValueError, match="file_format"):
        synthesize(unet, sched, tmp_path, latent_shape=(1, 8, 8), num_samples=1, file_format="nii.gz")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../x.png", "/abs.png", "a/../../x.png", ".hidden.png", "a\\b.png", "", "a//b"])
def test_safe_output_path_rejects_escapes(tmp_path, name):
    with pytest.raises(ValueError):
        safe_output_path(tmp_path, name)


def test_safe_output_path_rejects_symlink_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        safe_output_path(root, "link/x.png")
    assert safe_output_path(root, "images/x.png") == root.resolve() / "images" / "x.png"


def test_atomic_write_refuses_overwrite(tmp_path):
    target = tmp_path / "d.json"
    save_json({"a": 1}, target)
    with pytest.raises(FileExistsError, match="d.json"):
        save_json({"a": 2}, target)
    assert json.loads(target.read_text()) == {"a": 1}
    save_json({"a": 3}, target, overwrite=True)
    assert json.loads(target.read_text()) == {"a": 3}

    def failing(tmp):
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "e.json", failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


def test_png_roundtrip_matches_monai_loader(tmp_path):
    image = torch.linspace(-1, 1, 12 * 7).reshape(1, 12, 7)  # not square: catches axis order
    path = save_png(image, tmp_path / "x.png", intensity_range=(-1, 1))
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    assert tuple(loaded.shape) == (1, 12, 7)
    np.testing.assert_array_equal(np.asarray(loaded), to_uint8(image, (-1, 1)))
    rgb = save_png(torch.rand(3, 5, 6), tmp_path / "rgb.png")
    assert tuple(LoadImage(image_only=True, ensure_channel_first=True)(str(rgb)).shape) == (3, 5, 6)
    with pytest.raises(ValueError, match="bad.png"):
        save_png(torch.rand(2, 5, 5), tmp_path / "bad.png")


def test_to_uint8_mapping():
    out = to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0, np.nan]), (0.0, 1.0))
    np.testing.assert_array_equal(out, [0, 0, 128, 255, 255, 0])
    with pytest.raises(ValueError, match="intensity_range"):
        to_uint8(np.zeros(2), (1.0, 1.0))


def test_nifti_roundtrip(tmp_path):
    image = torch.randn(1, 4, 5, 6)
    path = save_nifti(image, tmp_path / "v.nii.gz")
    loaded = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    np.testing.assert_allclose(np.asarray(loaded), image.numpy(), rtol=1e-6)


def test_write_synthetic_datalist_validation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="b.png"):
        write_synthetic_datalist(tmp_path, ["images/a.png", "images/b.png"])
    with pytest.raises(ValueError, match="unsafe"):
        write_synthetic_datalist(tmp_path, ["../a.png"])
    with pytest.raises(ValueError, match="invalid label"):
        write_synthetic_datalist(tmp_path, ["images/a.png"], labels=[2], classes=["x", "y"])
    with pytest.raises(ValueError, match="labels"):
        write_synthetic_datalist(tmp_path, ["images/a.png"], labels=[0, 1])
    path = write_synthetic_datalist(tmp_path, ["images/a.png"], labels=[1], classes=["x", "y"], source="ldm")
    assert json.loads(path.read_text()) == {
        "training": [{"image": "images/a.png", "synthetic": True, "label": 1, "source": "ldm"}],
        "classes": ["x", "y"],
    }
    with pytest.raises(FileExistsError):
        write_synthetic_datalist(tmp_path, ["images/a.png"])
