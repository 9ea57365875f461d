from __future__ import annotations

import os
import time

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_dclcstp.handlers import AtomicCheckpointSaver, LatestCheckpointLoader, find_checkpoints


def _engine(max_epochs=2, epoch_length=3):
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = max_epochs
    return engine, list(range(epoch_length))


def _train(tmp_path, max_epochs, seed, save_interval=1, n_saved=2):
    torch.manual_seed(seed)
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    engine = Engine(lambda e, b: (opt.zero_grad(), net(torch.ones(1, 3)).sum().backward(), opt.step()))
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"net": net, "opt": opt}, engine_key="trainer", save_interval=save_interval, n_saved=n_saved,
        save_final=True, final_filename="checkpoint_final.pt",
    )  # fmt: skip
    saver.attach(engine)
    engine.run(list(range(3)), max_epochs=max_epochs)
    return net, opt, saver


def test_saver_is_atomic_and_saves_the_engine(tmp_path):
    net, opt, saver = _train(tmp_path, max_epochs=3, seed=0)
    assert all(c.save_handler._atomic for c in saver._checkpoints())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "checkpoint_final.pt"]  # n_saved=2 + final
    ckpt = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert set(ckpt) == {"net", "opt", "trainer"} and ckpt["trainer"]["iteration"] == 9
    assert os.stat(tmp_path / "checkpoint_final.pt").st_mode & 0o044 == 0o044  # group/other can read it


def test_resume_restores_objects_and_engine(tmp_path):
    net_a, opt_a, _ = _train(tmp_path, max_epochs=2, seed=0)
    torch.manual_seed(1)
    net_b = nn.Linear(3, 2)
    opt_b = torch.optim.SGD(net_b.parameters(), lr=0.1, momentum=0.9)
    engine, data = _engine(max_epochs=4)
    loader = LatestCheckpointLoader(tmp_path, {"net": net_b, "opt": opt_b})
    loader.attach(engine)
    epochs = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    engine.run(data, max_epochs=4)
    assert loader.loaded_path is not None and loader.loaded_path.name == "checkpoint_final.pt"
    assert epochs == [3, 4]  # continues after the 2 saved epochs
    assert engine.state.iteration == 12
    assert torch.equal(net_b.weight, net_a.weight)
    assert opt_b.state_dict()["state"][0]["momentum_buffer"] is not None


def test_truncated_newest_checkpoint_falls_back_to_older(tmp_path, caplog):
    _train(tmp_path, max_epochs=2, seed=0)
    final = tmp_path / "checkpoint_final.pt"
    final.write_bytes(final.read_bytes()[:100])  # an interrupted, non-atomic write
    later = time.time() + 10
    os.utime(final, (later, later))
    assert find_checkpoints(tmp_path)[0] == final
    net = nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    engine, data = _engine()
    loader = LatestCheckpointLoader(tmp_path, {"net": net, "opt": opt})
    loader.attach(engine)
    with caplog.at_level("WARNING"):
        engine.run(data, max_epochs=3)
    assert "skipping checkpoint" in caplog.text and str(final) in caplog.text
    assert loader.loaded_path.name == "checkpoint_epoch=2.pt"


def test_no_checkpoint_starts_fresh_or_raises_when_required(tmp_path, caplog):
    net = nn.Linear(3, 2)
    engine, data = _engine()
    with caplog.at_level("INFO"):
        LatestCheckpointLoader(tmp_path / "missing", {"net": net}).attach(engine)
        engine.run(data, max_epochs=1)
    assert "starting from scratch" in caplog.text and engine.state.epoch == 1
    engine, data = _engine()
    LatestCheckpointLoader(tmp_path, {"net": net}, required=True).attach(engine)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        engine.run(data, max_epochs=1)
    with pytest.raises(ValueError, match="load_dict"):
        LatestCheckpointLoader(tmp_path, {})
