"""kNN monitor under torch.distributed (2 gloo processes on CPU, uneven shards) equals the single-process result."""

from __future__ import annotations

import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from monai_dclcstp.handlers import KNNMonitor

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Identity(nn.Module):
    """A "backbone" returning its input as the last feature map: the embedding is the normalised mean per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return [x]


def _data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    images = torch.randn(n, 4, 2, 2, generator=g) + 2.0 * nn.functional.one_hot(labels, 4)[..., None, None]
    return images, labels


def _batches(images, labels, rank=0, world=1, batch=3):
    idx = list(range(rank, len(labels), world))  # uneven shards: 11 items → 6 + 5
    return [
        {"image": images[idx[i : i + batch]], "label": labels[idx[i : i + batch]]} for i in range(0, len(idx), batch)
    ]


def _evaluate(rank: int, world: int, n_val: int = 7) -> dict:
    bank, val = _data(11, 0), _data(n_val, 1)
    monitor = KNNMonitor(_Identity(), _batches(*bank, rank, world), _batches(*val, rank, world), k=4)
    return monitor.evaluate()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"uneven": _evaluate(rank, WORLD), "empty_shard": _evaluate(rank, WORLD, n_val=1)}, f)
    finally:
        dist.destroy_process_group()


def test_gathered_knn_equals_single_process(tmp_path):
    expected = _evaluate(0, 1)
    assert expected["num_bank"] == 11 and expected["num_val"] == 7
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    expected_one = _evaluate(0, 1, n_val=1)
    for rank in range(WORLD):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        got = results["uneven"]
        assert got["num_bank"] == 11 and got["num_val"] == 7  # every item once, gathered from both ranks
        assert got["accuracy"] == expected["accuracy"] and got["balanced_accuracy"] == expected["balanced_accuracy"]
        got = results["empty_shard"]  # 1 validation item: rank 1's shard is empty and must not break the gather
        assert got["num_val"] == 1 and got["accuracy"] == expected_one["accuracy"]
