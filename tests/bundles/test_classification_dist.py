"""multi_gpu_train.json: two gloo processes on CPU via torchrun train, validate and save a single-process model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "classification" / "configs"


@pytest.mark.slow
@pytest.mark.parametrize("class_weighting", ["sampler", "loss"])
def test_two_process_training(tmp_path, class_weighting):
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", files,
        "--output_dir", str(tmp_path), "--train_fraction", "0.1", "--image_size", "32", "--backbone", "resnet10",
        "--max_epochs", "1", "--num_workers", "0", "--progress_bar", "False", "--batch_size", "8",
        "--class_weighting", class_weighting,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun workers included
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # loads without the DDP wrapper
    assert json.loads((tmp_path / "model.json").read_text())["classes"] == ["normal", "pneumonia"]
    assert (tmp_path / "checkpoint_epoch=1.pt").is_file()
