from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Events
from pretrain_handler_utils import tiny_trainer

from monai_dclcstp.handlers import NonFiniteLossError, NonFiniteLossGuard
from monai_dclcstp.losses import DualStreamLoss


class NaNAtCalls(DualStreamLoss):
    """The dual-stream loss, made NaN on the given (1-based) calls."""

    def __init__(self, bad_calls, **kwargs):
        super().__init__(queue_size=8, embed_dim=16, **kwargs)
        self.bad_calls = set(bad_calls)
        self.calls = 0

    def forward(self, outputs, g1=None, g2=None):
        self.calls += 1
        out = super().forward(outputs, g1, g2)
        if self.calls in self.bad_calls:
            out = {**out, "loss_local": out["loss_local"] * float("nan")}
            out["loss"] = out["loss_global"] + out["loss_local"]
        return out


def _weights(net):
    """Trainable parameters (BatchNorm running statistics change with every forward pass, stepped or not)."""
    return {k: v.detach().clone() for k, v in net.online.named_parameters()}


def test_stop_raises_before_the_weights_change():
    trainer, net, _, _ = tiny_trainer(handlers=[NonFiniteLossGuard("stop")], loss=NaNAtCalls({2}))
    snapshots = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append(_weights(net)))
    with pytest.raises(NonFiniteLossError, match=r"loss_local=nan\) at epoch 1, iteration 2"):
        trainer.run()
    assert len(snapshots) == 1
    after = _weights(net)
    assert all(torch.equal(after[k], snapshots[0][k]) for k in after)  # the bad step touched nothing
    assert all(torch.isfinite(v).all() for v in after.values())


def test_skip_vetoes_the_step_and_continues():
    guard = NonFiniteLossGuard("skip", max_consecutive=3)
    trainer, net, opt, _ = tiny_trainer(handlers=[guard], loss=NaNAtCalls({2}))
    snapshots, outputs = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snapshots.append(_weights(net)))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert guard.skipped == 1 and guard.consecutive == 0
    assert [o.get("skip_step", False) for o in outputs] == [False, True, False]
    assert math.isnan(outputs[1]["momentum"])
    assert all(torch.equal(snapshots[1][k], snapshots[0][k]) for k in snapshots[0])  # step 2 skipped
    assert any(not torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[0])  # step 3 trained
    steps = {int(s["step"]) for s in opt.state_dict()["state"].values()}
    assert steps == {2}


def test_skip_stops_after_too_many_bad_steps():
    trainer, *_ = tiny_trainer(handlers=[NonFiniteLossGuard("skip", max_consecutive=2)], loss=NaNAtCalls({1, 2, 3}))
    with pytest.raises(NonFiniteLossError, match="2 bad steps in a row"):
        trainer.run()


def test_finite_losses_pass_and_arguments_are_checked():
    guard = NonFiniteLossGuard()
    trainer, *_ = tiny_trainer(handlers=[guard], n_batches=2)
    trainer.run()
    assert guard.skipped == 0 and trainer.state.iteration == 2
    out = trainer.state.output
    assert {"loss", "loss_global", "loss_local", "lr", "momentum", "grad_norm"} <= set(out)
    assert math.isfinite(out["grad_norm"])
    with pytest.raises(ValueError, match="action"):
        NonFiniteLossGuard("ignore")
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteLossGuard("skip", max_consecutive=0)
