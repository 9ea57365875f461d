"""A tiny DCL-CsTP trainer (ResNet-10, 16 px, batch 4) for handler tests: one iteration takes well under a second."""

from __future__ import annotations

import torch

from monai_dclcstp.engines import DCLCsTPTrainer
from monai_dclcstp.losses import DualStreamLoss
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder


def tiny_batches(n_batches: int = 3, batch: int = 4, size: int = 16, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    geometry = torch.tensor([[0.0, 0.0], [size, size], [0.0, 0.0]]).expand(batch, 3, 2).clone()
    return [
        {
            "view1": torch.rand(batch, 1, size, size, generator=g),
            "view2": torch.rand(batch, 1, size, size, generator=g),
            "geometry1": geometry,
            "geometry2": geometry,
        }
        for _ in range(n_batches)
    ]


def tiny_trainer(max_epochs: int = 1, handlers=None, loss=None, n_batches: int = 3, lr: float = 1e-3, seed: int = 0):
    torch.manual_seed(seed)
    net = DCLCsTPNet(DualStreamEncoder(2, 1, "resnet10", embed_dim=32, head_hidden_dim=32, out_dim=16))
    loss = loss if loss is not None else DualStreamLoss(queue_size=8, embed_dim=16)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=lr)
    trainer = DCLCsTPTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=tiny_batches(n_batches, seed=seed),
        network=net,
        optimizer=opt,
        loss_function=loss,
        train_handlers=handlers,
    )
    return trainer, net, opt, loss
