"""multi_gpu_train.json of the LDM bundle: both training stages with two gloo processes on CPU via torchrun.

8 images at 16 px with tiny networks, batch 2 per rank: each rank trains on its half (2 iterations per epoch, 4 in a
single process) and rank 0 alone writes the checkpoint, TensorBoard events and the exported model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bundle_test_utils import tiny_datalist, torchrun  # noqa: E402

from monai_dclcstp.generative import read_model_info

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "ldm" / "configs"
SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"

COMMON = {"batch_size": 2, "max_epochs": 1, "num_workers": 0, "progress_bar": False, "val_interval": 1}
TINY_AE = {
    **COMMON,
    "image_size": 16,
    "adversarial_warmup_epochs": 0,
    "autoencoder_kwargs#channels": [8, 16, 16],
    "autoencoder_kwargs#norm_num_groups": 8,
    "discriminator_kwargs#channels": 8,
}
TINY_DIFFUSION = {
    **COMMON,
    "diffusion_kwargs#channels": [16, 32],
    "diffusion_kwargs#attention_levels": [False, True],
    "diffusion_kwargs#num_head_channels": [0, 16],
    "diffusion_kwargs#norm_num_groups": 8,
    "preview_steps": 2,
    "preview_images": 4,
}


def stack(config: str) -> list[Path]:
    """``config`` with the multi-GPU overlay on top."""
    return [CONFIGS / config, CONFIGS / "multi_gpu_train.json"]


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldm_dist")
    datalist = tiny_datalist(root / "data")
    log = torchrun(stack("train_autoencoder.json"), {**TINY_AE, "datalist": datalist, "output_dir": root / "out"}, root)
    return {"root": root, "out": root / "out", "datalist": datalist, "log": log}


def test_two_process_autoencoder_writes_one_model(autoencoder_run):
    out, log = autoencoder_run["out"], autoencoder_run["log"]
    assert [p.name for p in out.glob("autoencoder*.pt")] == ["autoencoder.pt"]
    assert [p.name for p in (out / "autoencoder").glob("*.pt")] == ["checkpoint_final.pt"]
    assert len(list((out / "runs").rglob("events.out.tfevents.*"))) == 1
    assert log.count("exported") == 1 and "val_l1" in log
    ckpt = torch.load(out / "autoencoder" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2  # 8 images / 2 ranks / batch 2 (a single process takes 4 steps)
    assert {"autoencoder", "discriminator", "optimizer", "d_optimizer"} <= set(ckpt)
    assert not any(k.startswith("module.") for k in [*ckpt["autoencoder"], *ckpt["discriminator"]])
    exported = torch.load(out / "autoencoder.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in exported)
    assert set(exported) == set(ckpt["autoencoder"])
    assert all(torch.equal(v, ckpt["autoencoder"][k]) for k, v in exported.items())
    info = read_model_info(out / "autoencoder.pt")
    assert info["network"] == "AutoencoderKL" and info["kwargs"]["channels"] == [8, 16, 16]


@pytest.mark.slow
def test_two_process_diffusion_on_the_autoencoder(autoencoder_run):
    out = autoencoder_run["out"]
    overrides = {**TINY_DIFFUSION, "datalist": autoencoder_run["datalist"], "output_dir": out}
    log = torchrun(stack("train_diffusion.json"), overrides, autoencoder_run["root"])
    assert log.count("exported") == 1
    ckpt = torch.load(out / "diffusion" / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2
    exported = torch.load(out / "diffusion.pt", map_location="cpu", weights_only=True)
    assert exported and not any(k.startswith("module.") for k in exported)
    assert read_model_info(out / "diffusion.pt")["latent_shape"] == [3, 4, 4]
