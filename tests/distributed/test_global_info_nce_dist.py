"""Distributed global InfoNCE (2 gloo processes on CPU) equals the single-process loss on the concatenated batch."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from monai_dclcstp.losses import GlobalInfoNCELoss

B, D_IN, D = 4, 6, 5
WORLD = 2
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(WORLD * B, D_IN, generator=g)
    x2 = torch.randn(WORLD * B, D_IN, generator=g)
    return x1, x2


class _TwoHeads(nn.Module):
    """A query projection and a key projection; keys keep their gradient (exercises GatherLayer's backward)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.q = nn.Linear(D_IN, D)
        self.k = nn.Linear(D_IN, D)

    def forward(self, x1, x2):
        return nn.functional.normalize(self.q(x1), dim=1), nn.functional.normalize(self.k(x2), dim=1)


def _step(model, loss_fn, x1, x2):
    q, k = model(x1, x2)
    loss = loss_fn(q, k)
    loss.backward()
    return loss.detach()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x1, x2 = _data()
        sl = slice(rank * B, (rank + 1) * B)
        # 1) no queue: this rank's loss averaged over ranks, and DDP-averaged gradients
        model = DistributedDataParallel(_TwoHeads())
        loss = _step(model, GlobalInfoNCELoss(temperature=0.3, queue_size=0, embed_dim=D), x1[sl], x2[sl])
        dist.all_reduce(loss)
        grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
        # 2) with a queue of 6 over two steps of W*B = 8 gathered keys
        queued = GlobalInfoNCELoss(temperature=0.3, queue_size=6, embed_dim=D)
        for _ in range(2):
            _step(model, queued, x1[sl], x2[sl])
        torch.save(
            {"loss": loss / WORLD, "grads": grads, "queue": queued.queue.clone(), "filled": int(queued.queue_filled)},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    # results are on disk: leave without tearing down gloo, whose destructor was seen to deadlock at exit
    os._exit(0)


@pytest.fixture(scope="module")
def results() -> list[dict]:
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.spawn(_worker, args=(_free_port(), d), nprocs=WORLD, join=False)
        deadline = time.monotonic() + TIMEOUT_S
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                pytest.fail(f"the {WORLD} gloo workers did not finish within {TIMEOUT_S} s")
        return [torch.load(os.path.join(d, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def test_distributed_loss_and_grads_match_single_process(results):
    x1, x2 = _data()
    model = _TwoHeads()
    single = _step(model, GlobalInfoNCELoss(temperature=0.3, queue_size=0, embed_dim=D), x1, x2)
    for res in results:
        assert torch.allclose(res["loss"], single, atol=1e-5), (res["loss"], single)
        for name, p in model.named_parameters():
            assert torch.allclose(res["grads"][name], p.grad, atol=1e-5), name


def test_distributed_queue_identical_on_all_ranks(results):
    assert results[0]["filled"] == results[1]["filled"] == 6  # two steps of W*B = 8 keys, capped at 6
    assert torch.equal(results[0]["queue"], results[1]["queue"])
    assert results[0]["queue"].abs().sum() > 0
