"""Crash safety of the pretraining bundle: SIGKILL and resume, fixed seeds, protected outputs, NaN losses.

The SIGKILL tests and the refused-overwrite test run the exact command line in a subprocess (what a user on a shared
machine runs, killed with SIGKILL in the two tests); resumes and the other tests use MONAI's ``ConfigWorkflow`` in this
process. Tiny runs: ResNet-10, 32 px images of the embedded PneumoniaMNIST sample, batch 8, one intra-op thread.
Outputs go to ``tmp_path`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_test_utils import tiny_datalist  # noqa: E402
from ignite.engine import Events

from monai_dclcstp.handlers import NonFiniteLossError, find_checkpoints

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "bundles" / "pretrain" / "configs" / "train.json"
SAMPLE = REPO / "data" / "samples" / "pneumoniamnist"

#: tiny-run overrides; ``batch_size`` 8 with ``n_train`` images gives ``n_train // 8`` iterations per epoch
TINY = {
    "backbone": "resnet10",
    "image_size": 32,
    "batch_size": 8,
    "num_workers": 0,
    "num_threads": 1,
    "progress_bar": False,
    "val_interval": 0,
    "save_interval": 1,
    "knn_k": 3,
    "queue_size": 16,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cli(overrides: dict) -> list[str]:
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG)]
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v)]
    return args


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def workflow(**overrides):
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="train", **{**TINY, **overrides})
    wf.initialize()
    assert wf.bundle_root  # resolved inside a ConfigWorkflow method, where find_bundle_root sees the config's folder
    return wf


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``folder`` (recursively): modification time (ns) and sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def causes(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def trainer_epoch(checkpoint: dict) -> int:
    """The trainer's epoch in a checkpoint (Ignite stores the iteration and the epoch length)."""
    return checkpoint["trainer"]["iteration"] // checkpoint["trainer"]["epoch_length"]


def loss_recorder(wf) -> list[float]:
    """Per-iteration training losses of ``wf``'s trainer (appended as the run goes)."""
    losses: list[float] = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    return losses


def test_sigkill_mid_epoch_then_resume_reaches_the_final_epoch(tmp_path):
    """A run killed with SIGKILL in epoch 2 leaves only intact checkpoints; ``--resume True`` finishes all 3 epochs."""
    datalist = tiny_datalist(tmp_path / "data", n_train=48)  # 6 iterations per epoch
    out = tmp_path / "out"
    overrides = {**TINY, "datalist": str(datalist), "output_dir": str(out), "max_epochs": 3}
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cli(overrides), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
    try:
        deadline = time.monotonic() + 300
        while "Epoch: 2/3, Iter: 1/6 " not in log_path.read_text():  # epoch 1 saved, epoch 2 under way
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach epoch 2 in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_log = log_path.read_text()
    assert proc.returncode == -signal.SIGKILL
    assert "Saved checkpoint at epoch: 1" in killed_log and "Saved checkpoint at epoch: 2" not in killed_log

    # what the killed run left: the epoch-1 checkpoint, intact, and no partial or temporary file
    leftovers = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert [p for p in leftovers if not p.startswith("runs/")] == ["checkpoint_epoch=1.pt"], leftovers
    assert [p.name for p in find_checkpoints(out)] == ["checkpoint_epoch=1.pt"]
    ckpt = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(ckpt) == 1 and ckpt["trainer"]["iteration"] == 6

    # resume: the ``--resume True`` override, run in this process (saves the ~10 s start-up of a second subprocess)
    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=3, resume=True)
    trainer = wf.parser.get_parsed_content("train#trainer")
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    resume_logger = logging.getLogger("monai_dclcstp.handlers.checkpoint_resume")
    level = resume_logger.level
    resume_logger.addHandler(handler)
    resume_logger.setLevel(logging.INFO)
    try:
        wf.run()
        wf.finalize()
    finally:
        resume_logger.removeHandler(handler)
        resume_logger.setLevel(level)
    lines = [m for m in messages if m.startswith("resumed from ")]
    assert len(lines) == 1, messages
    assert (
        lines[0] == f"resumed from {out / 'checkpoint_epoch=1.pt'}: epoch 1, iteration 6 done; continuing to epoch 3."
    )
    assert epochs == [2, 3] and trainer.state.iteration == 18
    final = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(final) == 3 and final["trainer"]["iteration"] == 18
    assert all(torch.isfinite(v).all() for v in final["network"].values() if v.is_floating_point())
    info = json.loads((out / "encoder.json").read_text())
    assert info["method"]["epochs"] == 3
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp", "tmp"))]


#: runs the bundle CLI with ``torch.save`` patched to stop half-way through the checkpoint of iteration CRASH_AT
#: (after writing half of its bytes to the saver's temporary file), announce it, and wait to be killed
CRASH_DURING_SAVE = r"""
import io, os, runpy, sys, time
import torch

real_save, crash_at, marker = torch.save, int(os.environ["CRASH_AT"]), os.environ["CRASH_MARKER"]


def save(obj, f, *args, **kwargs):
    trainer = obj.get("trainer") if isinstance(obj, dict) else None
    if trainer is None or int(trainer["iteration"]) != crash_at:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    if isinstance(f, (str, os.PathLike)):  # a saver writing straight to the target (not atomic)
        with open(f, "wb") as target:
            target.write(half)
    else:
        f.write(half)
        f.flush()
        os.fsync(f.fileno())
    open(marker, "w").close()
    time.sleep(600)


torch.save = save
sys.argv = ["monai.bundle", *sys.argv[1:]]
runpy.run_module("monai.bundle", run_name="__main__")
"""


def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_usable(tmp_path):
    """Killed half-way through writing the epoch-2 checkpoint: no ``checkpoint_epoch=2.pt`` appears, the half-written
    temporary file is not a checkpoint name, and a resume restores epoch 1."""
    datalist = tiny_datalist(tmp_path / "data", n_train=16)  # 2 iterations per epoch
    out = tmp_path / "out"
    marker = tmp_path / "saving"
    overrides = {**TINY, "datalist": str(datalist), "output_dir": str(out), "max_epochs": 2}
    cmd = [sys.executable, "-c", CRASH_DURING_SAVE, *cli(overrides)[3:]]
    env = {**subprocess_env(), "CRASH_AT": "4", "CRASH_MARKER": str(marker)}
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before it could be killed:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the run did not reach the epoch-2 checkpoint in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    partial = [n for n in names if n not in ("checkpoint_epoch=1.pt",)]
    assert len(partial) == 1 and not partial[0].endswith(".pt"), names  # the saver's half-written temporary file
    assert (out / partial[0]).stat().st_size > 0
    assert [p.name for p in find_checkpoints(out)] == ["checkpoint_epoch=1.pt"]

    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=2, resume=True)
    loader = next(
        h for h in wf.parser.get_parsed_content("train#handlers") if type(h).__name__ == "LatestCheckpointLoader"
    )
    wf.run()
    wf.finalize()
    assert loader.loaded_path == out / "checkpoint_epoch=1.pt"
    final = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(final) == 2


def test_same_seed_gives_the_same_loss_curve(tmp_path):
    """Two runs with seed 0 log identical per-iteration losses and end with identical weights; seed 1 differs."""
    datalist = tiny_datalist(tmp_path / "data", n_train=24)  # 3 iterations

    def run(seed: int, name: str) -> tuple[list[float], dict]:
        wf = workflow(datalist=str(datalist), output_dir=str(tmp_path / name), max_epochs=1, seed=seed)
        losses = loss_recorder(wf)
        wf.run()
        wf.finalize()
        return losses, torch.load(tmp_path / name / "checkpoint_final.pt", weights_only=True)["network"]

    losses_a, weights_a = run(0, "a")
    losses_b, weights_b = run(0, "b")
    losses_c, _ = run(1, "c")
    assert len(losses_a) == 3 and all(map(lambda v: v == v, losses_a))
    assert losses_a == losses_b  # exactly, not approximately
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert losses_c != losses_a  # the seed matters (so the equality above is not trivial)


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, Path]:
    """Output folder of a finished 2-epoch run (and its datalist)."""
    datalist = tiny_datalist(tmp_path / "data", n_train=16)
    out = tmp_path / "out"
    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=2)
    wf.run()
    wf.finalize()
    return out, datalist


def test_new_run_refuses_to_replace_an_earlier_run_unless_overwrite(finished_run):
    out, datalist = finished_run
    before = snapshot(out)
    results = {"checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "checkpoint_final.pt", "encoder.pt", "encoder.json"}
    assert results | {"run_summary.json"} <= set(before)
    time.sleep(0.05)  # so that any rewrite would show in the modification times
    overrides = {**TINY, "datalist": str(datalist), "output_dir": str(out), "max_epochs": 1}
    refused = subprocess.run(
        cli(overrides), cwd=REPO, capture_output=True, text=True, timeout=600, env=subprocess_env()
    )
    log = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "FileExistsError" in log and f"{out} already holds the results of an earlier run" in log
    assert "--resume True" in log and "--overwrite True" in log
    assert "Epoch: 1/1" not in log  # refused before training
    assert snapshot(out) == before  # not a byte, not a timestamp changed, no new file (TensorBoard included)

    # --overwrite: a shorter run replaces the results; none of the earlier run's files is left to be mistaken for its
    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=1, overwrite=True)
    at_start = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.STARTED, lambda e: at_start.extend(p.name for p in out.glob("*.*")))
    wf.run()
    wf.finalize()
    assert not results & set(at_start), at_start  # cleared before the first iteration
    after = snapshot(out)
    assert "checkpoint_epoch=2.pt" not in after  # the earlier run's epoch 2 is gone
    for name in ("checkpoint_epoch=1.pt", "checkpoint_final.pt", "encoder.pt", "encoder.json", "run_summary.json"):
        assert after[name][0] > before[name][0], f"{name} was not rewritten"
    final = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(final) == 1
    summary = json.loads((out / "run_summary.json").read_text())
    assert [Path(c).name for c in summary["checkpoints"]] == ["checkpoint_epoch=1.pt", "checkpoint_final.pt"]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    """A NaN loss in epoch 2 stops the run before the bad step; the saved checkpoints load and hold finite weights."""
    datalist = tiny_datalist(tmp_path / "data", n_train=24)  # 3 iterations per epoch
    out = tmp_path / "out"
    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=2)
    loss = wf.parser.get_parsed_content("loss")
    network = wf.parser.get_parsed_content("network_def")
    real_forward, calls = loss.forward, []

    def nan_on_the_fifth_call(*args, **kwargs):  # iteration 5 = epoch 2, iteration 2 of 3
        calls.append(1)
        losses = real_forward(*args, **kwargs)
        return {**losses, "loss": losses["loss"] * float("nan")} if len(calls) == 5 else losses

    monkeypatch.setattr(loss, "forward", nan_on_the_fifth_call)
    good = {}
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=4),
        lambda e: good.update({k: v.detach().clone() for k, v in network.state_dict().items()}),
    )
    with pytest.raises(Exception) as err:
        wf.run()
    stop = [e for e in causes(err.value) if isinstance(e, NonFiniteLossError)]
    assert stop, f"expected a NonFiniteLossError, got {err.value!r}"
    message = str(stop[0])
    assert "non-finite loss (loss=nan" in message and "at epoch 2, iteration 5" in message
    assert "--lr" in message and "--resume" in message and "--nonfinite_action skip" in message
    assert len(calls) == 5

    epoch1 = torch.load(out / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(epoch1) == 1
    final = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in final["network"].values() if v.is_floating_point())
    params = {k for k, _ in network.named_parameters()}
    assert all(torch.equal(final["network"][k], good[k]) for k in params)  # the bad step changed no weight

    # and the run can be resumed (here without the injected NaN) to its last epoch
    wf2 = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=2, resume=True)
    losses = loss_recorder(wf2)
    wf2.run()
    wf2.finalize()
    trainer2 = wf2.parser.get_parsed_content("train#trainer")
    assert trainer2.state.epoch == 2 and trainer2.state.iteration == 6 and losses and all(v == v for v in losses)


def test_nan_loss_with_skip_action_skips_the_step_and_finishes(tmp_path, monkeypatch):
    datalist = tiny_datalist(tmp_path / "data", n_train=24)
    out = tmp_path / "out"
    wf = workflow(datalist=str(datalist), output_dir=str(out), max_epochs=1, nonfinite_action="skip")
    loss = wf.parser.get_parsed_content("loss")
    real_forward, calls = loss.forward, []

    def nan_on_the_second_call(*args, **kwargs):
        calls.append(1)
        losses = real_forward(*args, **kwargs)
        return {**losses, "loss": losses["loss"] * float("inf")} if len(calls) == 2 else losses

    monkeypatch.setattr(loss, "forward", nan_on_the_second_call)
    outputs = []
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    wf.run()
    wf.finalize()
    assert [bool(o.get("skip_step", False)) for o in outputs] == [False, True, False]
    final = torch.load(out / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert trainer_epoch(final) == 1
    assert all(torch.isfinite(v).all() for v in final["network"].values() if v.is_floating_point())
