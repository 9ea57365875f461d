"""GlobalInfoNCELoss: explicit-loop reference with and without queue, FIFO ring buffer, queue from before the step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from monai_dclcstp.losses import GlobalInfoNCELoss


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _reference(query, key, queue, temperature):
    """Hand-written loop (like lightly's test_ntx_ent_loss): mean_i -log(e^{q_i.k_i/T} / (sum_j e^{q_i.k_j/T} + sum_m e^{q_i.u_m/T}))."""
    total = 0.0
    for i in range(len(query)):
        positive = math.exp(float(query[i] @ key[i]) / temperature)
        denominator = sum(math.exp(float(query[i] @ k) / temperature) for k in key)
        denominator += sum(math.exp(float(query[i] @ u) / temperature) for u in queue)
        total += -math.log(positive / denominator)
    return total / len(query)


@pytest.mark.parametrize("batch, dim, temperature", [(1, 4, 0.2), (4, 8, 0.1), (6, 3, 0.5)])
def test_without_queue_matches_reference(batch, dim, temperature):
    q, k = _unit(batch, dim, seed=1), _unit(batch, dim, seed=2)
    loss = GlobalInfoNCELoss(temperature, queue_size=0, embed_dim=dim)(q, k)
    assert math.isclose(float(loss), _reference(q, k, [], temperature), rel_tol=1e-5)


@pytest.mark.parametrize("batch, queue_size, temperature", [(3, 5, 0.2), (4, 8, 0.07), (2, 3, 1.0)])
def test_with_queue_matches_reference_and_uses_queue_from_before_the_step(batch, queue_size, temperature):
    loss_fn = GlobalInfoNCELoss(temperature, queue_size=queue_size, embed_dim=6)
    history = []
    for step in range(4):
        q, k = _unit(batch, 6, seed=10 + step), _unit(batch, 6, seed=20 + step)
        before = loss_fn.queued_keys().clone()
        expected = torch.cat(history)[-queue_size:] if history else torch.zeros(0, 6)  # the newest keys, oldest first
        if int(loss_fn.queue_filled) == queue_size:  # full ring buffer: the oldest entry is at the pointer
            before_in_order = torch.roll(before, -int(loss_fn.queue_ptr), dims=0)
        else:
            before_in_order = before
        assert torch.equal(before_in_order, expected)
        loss = loss_fn(q, k)  # update_queue=True: the keys of this step are enqueued after the loss
        assert math.isclose(float(loss), _reference(q, k, before, temperature), rel_tol=1e-5)
        # the current positives were not in the queue when the loss was computed
        if not history:
            assert math.isclose(float(loss), _reference(q, k, [], temperature), rel_tol=1e-5)
        history.append(k)
    assert loss_fn.queued_keys().shape[0] == queue_size


def test_update_queue_false_leaves_queue_alone():
    loss_fn = GlobalInfoNCELoss(0.2, queue_size=4, embed_dim=3)
    loss_fn(_unit(2, 3), _unit(2, 3, seed=1), update_queue=False)
    assert int(loss_fn.queue_filled) == 0 and int(loss_fn.queue_ptr) == 0 and loss_fn.queued_keys().numel() == 0


def test_ring_buffer_fifo_and_wrap():
    loss_fn = GlobalInfoNCELoss(0.2, queue_size=5, embed_dim=1)

    def keys(*values):
        return torch.tensor(values, dtype=torch.float32)[:, None]

    def state():
        return loss_fn.queue[:, 0].tolist(), int(loss_fn.queue_ptr), int(loss_fn.queue_filled)

    loss_fn.enqueue(keys(1, 2))
    assert state() == ([1, 2, 0, 0, 0], 2, 2)
    assert loss_fn.queued_keys()[:, 0].tolist() == [1, 2]
    loss_fn.enqueue(keys(3, 4))
    assert state() == ([1, 2, 3, 4, 0], 4, 4)
    loss_fn.enqueue(keys(5, 6))  # wraps: 6 overwrites the oldest (1)
    assert state() == ([6, 2, 3, 4, 5], 1, 5)
    assert loss_fn.queued_keys()[:, 0].tolist() == [6, 2, 3, 4, 5]  # full: every slot is a valid negative
    loss_fn.enqueue(keys(7, 8, 9))
    assert state() == ([6, 7, 8, 9, 5], 4, 5)
    loss_fn.enqueue(keys(10, 11, 12, 13, 14, 15, 16))  # more than the queue: only the newest 5 are kept
    assert sorted(loss_fn.queue[:, 0].tolist()) == [12, 13, 14, 15, 16]
    assert state()[2] == 5
    # in ring order from the pointer, the oldest comes first
    ptr = int(loss_fn.queue_ptr)
    assert torch.roll(loss_fn.queue[:, 0], -ptr).tolist() == [12, 13, 14, 15, 16]


def test_queue_is_a_buffer_and_detached():
    loss_fn = GlobalInfoNCELoss(0.2, queue_size=4, embed_dim=3)
    assert {"queue", "queue_ptr", "queue_filled"} <= set(dict(loss_fn.named_buffers()))
    k = _unit(2, 3).requires_grad_(True)
    loss_fn(_unit(2, 3, seed=1), k)
    assert not loss_fn.queue.requires_grad
    state = loss_fn.state_dict()
    restored = GlobalInfoNCELoss(0.2, queue_size=4, embed_dim=3)
    restored.load_state_dict(state)
    assert torch.equal(restored.queued_keys(), loss_fn.queued_keys()) and int(restored.queue_ptr) == 2


def test_zero_queue_enqueue_is_noop():
    loss_fn = GlobalInfoNCELoss(0.2, queue_size=0, embed_dim=3)
    loss_fn.enqueue(_unit(4, 3))
    assert loss_fn.queued_keys().shape == (0, 3)


def test_gradient_flows_to_queries_and_keys():
    q, k = _unit(3, 4).requires_grad_(True), _unit(3, 4, seed=1).requires_grad_(True)
    GlobalInfoNCELoss(0.2)(q, k).backward()
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def test_perfect_alignment_has_lower_loss():
    q = _unit(8, 16, seed=3)
    aligned = GlobalInfoNCELoss(0.1)(q, q.clone())
    shuffled = GlobalInfoNCELoss(0.1)(q, q.roll(1, dims=0))
    assert float(aligned) < 0.1 < float(shuffled)


@pytest.mark.parametrize("kwargs, error", [[{"temperature": 0}, "temperature"], [{"queue_size": -1}, "queue_size"]])
def test_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        GlobalInfoNCELoss(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        GlobalInfoNCELoss()(_unit(2, 4), _unit(3, 4))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        GlobalInfoNCELoss()(_unit(2, 4, 1), _unit(2, 4, 1))
