"""multi_gpu_train.json of the segmentation bundle: two gloo processes on CPU via torchrun train and save one model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "segmentation" / "configs"


@pytest.mark.slow
def test_two_process_training(tmp_path):
    files = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", files,
        "--output_dir", str(tmp_path), "--image_size", "64", "--max_epochs", "1", "--num_workers", "0",
        "--progress_bar", "False", "--batch_size", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun workers included
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    assert (out + err).count("Saved checkpoint at epoch: 1") == 1  # rank 0 only
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)  # loads without the DDP wrapper
    assert json.loads((tmp_path / "model.json").read_text())["task"] == "segmentation"
    assert (tmp_path / "checkpoint_epoch=1.pt").is_file()
