"""Unit tests of the run guards: earlier-run protection, thread count, fused AdamW availability, rank agreement."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from monai_dclcstp.handlers import collective
from monai_dclcstp.utils import dist, optim, run_outputs, threads
from monai_dclcstp.utils.run_outputs import check_earlier_run_outputs, earlier_run_outputs
from monai_dclcstp.utils.threads import resolve_num_threads, set_num_threads_for_run

# ---------------------------------------------------------------------------------------------------- run_outputs

RESULTS = ["checkpoint_epoch=1.pt", "checkpoint_final.pt", "encoder.json", "encoder.pt", "run_summary.json"]


def _earlier_run(folder):
    """A folder with the results of a run plus files that are not results (logs, caches, temporary files)."""
    for name in RESULTS:
        (folder / name).write_bytes(name.encode())
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents.1").write_bytes(b"tb")
    (folder / "data_cache").mkdir()
    (folder / "data_cache" / "checkpoint_x.pt").write_bytes(b"not at the top level")
    (folder / ".tmp-abc-encoder.pt").write_bytes(b"half")
    (folder / "tmpk2j3h4").write_bytes(b"half")
    (folder / "notes.txt").write_text("mine")
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_earlier_run_outputs_lists_only_results(tmp_path):
    assert earlier_run_outputs(tmp_path / "missing") == []
    assert earlier_run_outputs(tmp_path) == []
    _earlier_run(tmp_path)
    assert [p.name for p in earlier_run_outputs(tmp_path)] == RESULTS  # sorted; logs, caches, temp files left out
    assert [p.name for p in earlier_run_outputs(tmp_path, patterns=("*.txt",))] == ["notes.txt"]


def test_new_run_over_earlier_results_is_refused_and_changes_nothing(tmp_path):
    files = _earlier_run(tmp_path)
    with pytest.raises(FileExistsError) as err:
        check_earlier_run_outputs(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "checkpoint_epoch=1.pt" in message and "Nothing was changed" in message
    assert "--resume True" in message and "--overwrite True" in message and "--output_dir" in message
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_long_lists_are_shortened_in_the_message(tmp_path):
    for i in range(9):
        (tmp_path / f"checkpoint_epoch={i}.pt").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"checkpoint_epoch=5\.pt \.\.\.\)"):
        check_earlier_run_outputs(tmp_path)


def test_empty_or_missing_folder_passes(tmp_path):
    assert check_earlier_run_outputs(tmp_path / "new") == []
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "events.out.tfevents.1").write_bytes(b"tb")
    assert check_earlier_run_outputs(tmp_path) == []  # TensorBoard logs alone are not results


def test_resume_keeps_the_results(tmp_path):
    files = _earlier_run(tmp_path)
    found = check_earlier_run_outputs(tmp_path, resume=True)
    assert [p.name for p in found] == RESULTS
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    check_earlier_run_outputs(tmp_path, resume=True, overwrite=True)  # resume wins: nothing deleted
    assert all(p.is_file() for p in files)


def test_overwrite_deletes_only_the_results(tmp_path, caplog):
    files = _earlier_run(tmp_path)
    with caplog.at_level("WARNING", logger=run_outputs.__name__):
        found = check_earlier_run_outputs(tmp_path, overwrite=True)
    assert [p.name for p in found] == RESULTS
    assert "deleting the results of an earlier run" in caplog.text and "checkpoint_final.pt" in caplog.text
    left = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {p for p in files if p.name not in RESULTS or p.parent != tmp_path}
    assert check_earlier_run_outputs(tmp_path) == []  # a plain new run may start now


def test_overwrite_deletes_on_the_main_process_only(tmp_path, monkeypatch):
    files = _earlier_run(tmp_path)
    monkeypatch.setattr(dist, "is_main_process", lambda: False)
    assert [p.name for p in check_earlier_run_outputs(tmp_path, overwrite=True)] == RESULTS
    assert all(p.is_file() for p in files)


# ---------------------------------------------------------------------------------------------------- threads


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    return monkeypatch


@pytest.mark.parametrize("value, expected", [(3, 3), ("5", 5), (" 2 ", 2), (1, 1)])
def test_explicit_thread_count_is_used_as_given(clean_env, value, expected):
    clean_env.setenv("OMP_NUM_THREADS", "7")
    assert resolve_num_threads(value, num_workers=6) == expected


@pytest.mark.parametrize("value", ["auto", "AUTO", None, 0, -2, "0"])
def test_auto_uses_the_cores_minus_the_loader_workers(clean_env, value):
    assert resolve_num_threads(value) == 8
    assert resolve_num_threads(value, num_workers=3) == 5
    assert resolve_num_threads(value, num_workers=20) == 1  # never below one thread


def test_auto_prefers_omp_num_threads(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert resolve_num_threads("auto", num_workers=6) == 3
    for ignored in ("0", "", "two", "4,2"):  # not a single positive count: the cores decide
        clean_env.setenv("OMP_NUM_THREADS", ignored)
        assert resolve_num_threads("auto") == 8, ignored


def test_auto_shares_the_cores_between_local_processes(clean_env):
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_num_threads("auto") == 4
    assert resolve_num_threads("auto", num_workers=1) == 3
    clean_env.setenv("LOCAL_WORLD_SIZE", "16")
    assert resolve_num_threads("auto", num_workers=2) == 1
    clean_env.setenv("LOCAL_WORLD_SIZE", "")
    assert resolve_num_threads("auto") == 8


def test_bad_local_world_size_is_named(clean_env):
    clean_env.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="LOCAL_WORLD_SIZE.*'two'"):
        resolve_num_threads("auto")


@pytest.mark.parametrize("value", ["many", "2.5", "", [2]])
def test_bad_thread_count_is_a_clear_error(clean_env, value):
    with pytest.raises(ValueError, match="num_threads must be a positive integer or 'auto'"):
        resolve_num_threads(value)


def test_usable_cores_is_positive():
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


def test_set_num_threads_for_run_applies_and_logs(clean_env, caplog):
    before = torch.get_num_threads()
    try:
        with caplog.at_level("INFO", logger=threads.__name__):
            assert set_num_threads_for_run(2, num_workers=1) == 2
        assert torch.get_num_threads() == 2
        assert "torch intra-op threads: 2" in caplog.text and "1 loader workers" in caplog.text
        clean_env.setenv("OMP_NUM_THREADS", "1")
        assert set_num_threads_for_run("auto") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------- optim


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1", torch.device("cpu"), "mps"])
def test_fused_adamw_supported_with_this_torch(device):
    assert optim.fused_adamw_supported(device)  # torch >= 2.5 here


@pytest.mark.parametrize("device", ["meta", "xpu"])
def test_fused_adamw_not_claimed_for_other_devices(device):
    assert not optim.fused_adamw_supported(device)


def test_fused_adamw_follows_the_torch_release(monkeypatch):
    seen = []

    def before_2_4(major, minor):
        seen.append((major, minor))
        return (major, minor) <= (2, 3)

    monkeypatch.setattr(optim, "pytorch_after", before_2_4)
    assert optim.fused_adamw_supported("cuda") and not optim.fused_adamw_supported("cpu")
    assert not optim.fused_adamw_supported("mps")
    assert seen == [(2, 0), (2, 4), (2, 5)]


def test_bad_device_name_is_an_error():
    with pytest.raises(RuntimeError):
        optim.fused_adamw_supported("gpu0")


def test_fused_adamw_on_cpu_gives_the_default_updates():
    """What the bundles rely on: fused=True where supported works and matches the default implementation."""
    assert optim.fused_adamw_supported("cpu")
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(7)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(3)]
    results = []
    for fused in (False, True):
        ps = [p.clone().requires_grad_(True) for p in params]
        opt = torch.optim.AdamW(ps, lr=1e-2, weight_decay=1e-2, fused=fused)
        for step in grads:
            for p, g in zip(ps, step):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in ps])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- collective


def test_any_rank_in_a_single_process():
    assert not dist.is_distributed()
    assert collective.any_rank(True) is True and collective.any_rank(False) is False
    assert collective.any_rank(1) is True and collective.any_rank(0) is False
    assert collective.collective_device() == torch.device("cpu")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _any_rank_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = [
            collective.any_rank(rank == 1),  # true on one rank only
            collective.any_rank(False),
            collective.any_rank(True),
            collective.collective_device().type == "cpu",
        ]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch_dist.destroy_process_group()


def test_any_rank_agrees_across_two_gloo_processes():
    with tempfile.TemporaryDirectory() as out_dir:
        # fork: a spawned child would re-import torch, MONAI and Ignite (~10 s); the children only run gloo collectives
        context = mp.start_processes(
            _any_rank_worker, args=(_free_port(), out_dir), nprocs=2, join=False, start_method="fork"
        )
        deadline = time.monotonic() + 120
        try:
            while not context.join(timeout=1):
                assert time.monotonic() < deadline, "the two ranks did not finish in time"
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
        results = [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(2)]
    assert results == [[True, False, True, True]] * 2
