"""A few optimisation steps of the full pipeline on real PneumoniaMNIST images decrease the dual-stream loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from monai_dclcstp.losses import DualStreamLoss
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder
from monai_dclcstp.transforms import TwoViewAugment

NPZ = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"


@pytest.mark.skipif(not NPZ.exists(), reason=f"shared data not found: {NPZ}")
def test_pretraining_steps_decrease_loss():
    with np.load(NPZ) as data:
        images = torch.from_numpy(data["train_images"][:16]).float()[:, None] / 255.0  # (16, 1, 28, 28)
    augment = TwoViewAugment(32, scale=(0.4, 1.0)).set_random_state(0)
    views = [augment(img) for img in images]  # one fixed batch of views with their geometry
    view1, geometry1, view2, geometry2 = (torch.stack([v[i] for v in views]) for i in range(4))
    assert view1.shape == (16, 1, 32, 32) and geometry1.shape == (16, 3, 2)
    assert not torch.equal(geometry1, geometry2)

    torch.manual_seed(0)
    encoder = DualStreamEncoder(2, 1, "resnet18", embed_dim=64, num_heads=4, head_hidden_dim=128, out_dim=64)
    net = DCLCsTPNet(encoder).train()
    criterion = DualStreamLoss(lambda_local=0.5, temperature=0.2, queue_size=0, embed_dim=64)
    optimizer = torch.optim.Adam(net.online.parameters(), lr=1e-3)
    history = []
    for step in range(6):
        result = criterion(net(view1, view2), geometry1, geometry2)
        history.append({k: v.item() for k, v in result.items()})
        if step == 5:
            break
        optimizer.zero_grad()
        result["loss"].backward()
        optimizer.step()
        net.update_momentum(0.99)
    assert all(math.isfinite(h["loss"]) for h in history)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.85 * first["loss"], history
    assert last["loss_global"] < first["loss_global"] and last["loss_local"] < first["loss_local"], history
