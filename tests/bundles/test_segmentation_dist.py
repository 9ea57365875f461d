"""multi_gpu_train.json of the segmentation bundle: two gloo processes on CPU via torchrun train and save one model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bundle_test_utils import torchrun

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "segmentation" / "configs"


@pytest.mark.slow
def test_two_process_training(tmp_path):
    overrides = {"output_dir": tmp_path, "image_size": 64, "max_epochs": 1, "num_workers": 0, "progress_bar": False}
    log = torchrun(
        [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json"], {**overrides, "batch_size": 2}, tmp_path, 900
    )
    assert log.count("Saved checkpoint at epoch: 1") == 1  # rank 0 only
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)  # loads without the DDP wrapper
    assert json.loads((tmp_path / "model.json").read_text())["task"] == "segmentation"
    assert (tmp_path / "checkpoint_epoch=1.pt").is_file()
