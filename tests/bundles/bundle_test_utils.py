"""Helpers shared by the bundle tests: tiny datalists of the embedded PneumoniaMNIST sample, 2-process torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PNEUMONIA_SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"


def tiny_datalist(folder: Path, n_train: int = 8, n_val: int = 4, sample: Path = PNEUMONIA_SAMPLE) -> Path:
    """Write ``folder/datalist.json``: the first ``n / 2`` images of each class of the embedded sample.

    Image paths are absolute, so the datalist works from any working directory. Returns the datalist path.
    """
    data = json.loads((sample / "datalist.json").read_text())

    def take(items: list[dict], n: int) -> list[dict]:
        out = []
        for c in (0, 1):
            out += [dict(it, image=str(sample / it["image"])) for it in items if it["label"] == c][: n // 2]
        return out

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "datalist.json"
    path.write_text(
        json.dumps(
            {
                "classes": data["classes"],
                "training": take(data["training"], n_train),
                "validation": take(data["validation"], n_val),
            }
        )
    )
    return path


def torchrun(configs: list[Path], overrides: dict, cwd: Path, timeout: float = 600) -> str:
    """Run ``configs`` (stacked) with 2 gloo processes under ``torchrun --standalone``.

    ``overrides`` become ``--key value`` arguments (Python literals, as fire parses them). Returns the combined log
    (stdout + stderr) after checking that the run succeeded; on timeout the whole process group (torchrun's workers
    included) is killed.
    """
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    args = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "monai.bundle", "run", "--config_file", files, *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-3000:]}\n{err[-5000:]}"
    return out + err
