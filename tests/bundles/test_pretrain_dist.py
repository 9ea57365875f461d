"""multi_gpu_train.json of the pretraining bundle: two gloo processes on CPU via torchrun, then a distributed resume.

8 training images, batch 2 per rank: each rank sees its own half of the data (2 iterations per epoch, 4 in a single
process), the kNN monitor gathers all 8 bank / 4 validation embeddings, only rank 0 writes, and both ranks end with
bit-identical online *and* momentum encoders and negative queues (gradients are all-reduced, so the momentum update is
the same everywhere). A test-only overlay writes each rank's fingerprints in ``finalize``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from bundle_test_utils import tiny_datalist, torchrun  # noqa: E402

from monai_dclcstp.networks import MultiScaleResNet
from monai_dclcstp.utils import load_pretrained_encoder, read_encoder_info

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "pretrain" / "configs"
SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"

TINY = {
    "backbone": "resnet10",
    "image_size": 32,
    "batch_size": 2,
    "max_epochs": 1,
    "num_workers": 0,
    "num_threads": 1,
    "progress_bar": False,
    "val_interval": 1,
    "knn_k": 3,
    "queue_size": 16,
}

#: each rank writes sha256 digests of its online encoder, momentum encoder and loss state (the queue) before the
#: process group is destroyed
FINGERPRINT = (
    "$open(os.path.join(@output_dir, 'fingerprint_rank%d.json' % dist.get_rank()), 'w').write(json.dumps("
    "{name: hashlib.sha256(b''.join(v.detach().cpu().contiguous().numpy().tobytes() for v in state.values()))"
    ".hexdigest() for name, state in {'online': @network_def.online.state_dict(), "
    "'momentum': @network_def.momentum_encoder.state_dict(), 'loss': @loss.state_dict()}.items()}))"
)


def fingerprint_overlay(folder: Path) -> Path:
    """The bundle's ``finalize`` with the fingerprint expression in front (nothing else changed)."""
    overlay = json.loads((CONFIGS / "multi_gpu_train.json").read_text())
    imports = [*overlay["imports"], "$import hashlib", "$import json"]  # a config file replaces the whole list
    path = folder / "fingerprint.json"
    path.write_text(json.dumps({"imports": imports, "finalize": [FINGERPRINT, *overlay["finalize"]]}))
    return path


def read_fingerprints(out: Path) -> list[dict]:
    return [json.loads((out / f"fingerprint_rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One epoch with 2 processes (2 iterations of batch 2 per rank on 8 images); its folder, configs and log."""
    root = tmp_path_factory.mktemp("pretrain_dist")
    configs = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", fingerprint_overlay(root)]
    overrides = {**TINY, "datalist": tiny_datalist(root / "data"), "output_dir": root / "out"}
    log = torchrun(configs, overrides, cwd=root)
    return {"root": root, "out": root / "out", "configs": configs, "overrides": overrides, "log": log}


def test_two_process_pretraining_writes_one_set_of_outputs(first_run):
    out, log = first_run["out"], first_run["log"]
    # one set of outputs, written by rank 0 only
    assert sorted(p.name for p in out.glob("checkpoint*.pt")) == ["checkpoint_epoch=1.pt", "checkpoint_final.pt"]
    assert len(list((out / "runs").rglob("events.out.tfevents.*"))) == 1
    assert log.count("exported the pretrained encoder") == 1 and log.count("pretraining finished") == 1
    # the kNN monitor gathered every rank's shard: 8 bank / 4 val items, not 4 / 2
    assert "kNN (k=3, 8 bank / 4 val items) after epoch 1" in log
    ckpt = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 2  # 8 images / 2 ranks / batch 2 (a single process takes 4 steps)
    assert not any(k.startswith("module.") for k in ckpt["network"])
    assert any(k.startswith("momentum_encoder.") for k in ckpt["network"])
    state = torch.load(out / "encoder.pt", map_location="cpu", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)
    fresh = MultiScaleResNet("resnet10", spatial_dims=2, in_channels=1)
    load_pretrained_encoder(fresh, out / "encoder.pt", backbone="resnet10", spatial_dims=2, in_channels=1)
    prefix = "online.backbone."
    trained = {k[len(prefix) :]: v for k, v in ckpt["network"].items() if k.startswith(prefix)}
    assert set(state) == set(trained) and all(torch.equal(state[k], trained[k]) for k in state)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    info = read_encoder_info(out / "encoder.pt")
    assert info["method"]["world_size"] == 2 and info["method"]["global_batch_size"] == 4
    assert info["method"]["iterations"] == 2 and info["training_config"]["world_size"] == 2
    # every rank ends with the same online encoder, momentum encoder (parameters and batch-norm statistics) and queue
    rank0, rank1 = read_fingerprints(out)
    assert rank0 == rank1 and rank0["online"] != rank0["momentum"]


@pytest.mark.slow
def test_distributed_resume_continues_on_every_rank(first_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run["out"], out)
    before = read_fingerprints(out)[0]
    overrides = {**first_run["overrides"], "output_dir": out, "resume": True, "max_epochs": 2}
    log = torchrun(first_run["configs"], overrides, cwd=tmp_path)
    for rank in (0, 1):  # both ranks restored the checkpoint rank 0 chose and went on with epoch 2
        found = re.search(rf"rank {rank}: resumed from \S+checkpoint\S+\.pt: epoch 1, iteration 2 done", log)
        assert found, log[-3000:]
    assert "Epoch: 2/2, Iter: 1/2" in log and "Epoch: 1/2" not in log
    ckpt = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["trainer"]["iteration"] == 4
    assert sorted(p.name for p in out.glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
    ]
    assert read_encoder_info(out / "encoder.pt")["method"]["epochs"] == 2
    rank0, rank1 = read_fingerprints(out)
    assert rank0 == rank1 and rank0["online"] != before["online"]
