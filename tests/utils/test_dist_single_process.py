"""utils.dist without a process group: rank 0 of 1, gather is the identity (multi-process tests live in _dist files)."""

from __future__ import annotations

import torch

from monai_dclcstp.utils import dist


def test_single_process_defaults():
    assert not dist.is_distributed()
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_main_process()


def test_gather_is_identity_and_keeps_graph():
    x = torch.randn(3, 4, requires_grad=True)
    y = dist.gather(x)
    assert y is x
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_gather_no_grad_is_identity():
    x = torch.randn(2, 5)
    assert dist.gather_no_grad(x) is x
