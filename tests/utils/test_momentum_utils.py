"""cosine_schedule, update_momentum (exact EMA, buffers untouched), deactivate_requires_grad."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from monai_dclcstp.utils import cosine_schedule, deactivate_requires_grad, update_momentum


@pytest.mark.parametrize("start, end, max_steps", [(0.99, 1.0, 100), (0.996, 1.0, 7), (1.0, 0.0, 50), (0.5, 0.5, 3)])
def test_cosine_schedule_endpoints_and_monotonicity(start, end, max_steps):
    values = [cosine_schedule(step, max_steps, start, end) for step in range(max_steps + 3)]
    assert values[0] == pytest.approx(start, abs=1e-12)
    assert values[max_steps] == end and values[-1] == end  # past the end: stays there
    diffs = [b - a for a, b in zip(values, values[1:])]
    if end > start:
        assert all(d >= 0 for d in diffs) and any(d > 0 for d in diffs)
    elif end < start:
        assert all(d <= 0 for d in diffs)
    else:
        assert all(d == 0 for d in diffs)
    if max_steps % 2 == 0:
        assert values[max_steps // 2] == pytest.approx((start + end) / 2)


def test_cosine_schedule_is_byol_formula():
    m0, steps = 0.99, 40
    for k in range(steps):
        expected = 1 - (1 - m0) * (math.cos(math.pi * k / steps) + 1) / 2
        assert cosine_schedule(k, steps, m0, 1.0) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step, max_steps, error", [(-1, 10, "step"), (0, 0, "max_steps")])
def test_cosine_schedule_bad_arguments(step, max_steps, error):
    with pytest.raises(ValueError, match=error):
        cosine_schedule(step, max_steps, 0.9, 1.0)


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))


@pytest.mark.parametrize("m", [0.0, 0.5, 0.99, 1.0])
def test_update_momentum_is_exact_ema(m):
    online, ema = _net(0), _net(1)
    x = torch.randn(2, 2, 6, 6)
    online(x), ema(x)  # materialise the lazy layer, give BN buffers different statistics
    online(x * 3)
    deactivate_requires_grad(ema)
    old = [p.clone() for p in ema.parameters()]
    old_buffers = {k: v.clone() for k, v in ema.named_buffers()}
    assert any(not torch.equal(b, dict(online.named_buffers())[k]) for k, b in old_buffers.items())
    update_momentum(online, ema, m)
    for o, p, q in zip(old, online.parameters(), ema.parameters()):
        torch.testing.assert_close(q, m * o + (1 - m) * p.detach(), rtol=1e-6, atol=1e-7)
        assert not q.requires_grad and q.grad is None
    for k, b in ema.named_buffers():  # BN running statistics are not averaged
        assert torch.equal(b, old_buffers[k])
    assert all(p.requires_grad for p in online.parameters())


def test_update_momentum_repeated_steps_converge_geometrically():
    online, ema = nn.Linear(3, 2), nn.Linear(3, 2)
    deactivate_requires_grad(ema)
    gap0 = (ema.weight - online.weight).detach().clone()
    for _ in range(5):
        update_momentum(online, ema, 0.9)
    torch.testing.assert_close(ema.weight - online.weight, gap0 * 0.9**5, rtol=1e-4, atol=1e-6)


def test_update_momentum_does_not_record_graph():
    online, ema = nn.Linear(3, 2), deactivate_requires_grad(nn.Linear(3, 2))
    update_momentum(online, ema, 0.5)
    assert ema.weight.grad_fn is None and online.weight.grad is None


def test_update_momentum_structure_mismatch():
    with pytest.raises(ValueError, match="different numbers of parameters"):
        update_momentum(nn.Linear(3, 2), nn.Linear(3, 2, bias=False), 0.9)


def test_deactivate_requires_grad_returns_model():
    net = nn.Linear(2, 2)
    assert deactivate_requires_grad(net) is net
    assert not any(p.requires_grad for p in net.parameters())
