"""Shared helpers of the benchmark scripts: timing, machine description, results tables, docs sections.

Every benchmark script writes ``benchmarks/results/<name>.json`` (machine, command, seed, versions, raw samples and
the summary rows) and ``benchmarks/results/<name>.md`` (the summary table). ``run_all.py`` pastes the markdown into
``docs/benchmarks.md`` between ``<!-- BEGIN <section> -->`` / ``<!-- END <section> -->`` markers, leaving every other
section of that page (e.g. the label-efficiency results) untouched.

The machines this runs on are shared and noisy, so timings are taken **interleaved** (configuration A, B, C, A, B, C,
... one round at a time), each reported as the minimum and the median over rounds, and ratios are computed within a
round (``time(config) / time(floor)`` of the same round) and summarised by their median.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOCS_PAGE = REPO_ROOT / "docs" / "benchmarks.md"
DOCS_IMG_DIR = REPO_ROOT / "docs" / "benchmarks"
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
PNEUMONIAMNIST_NPZ = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_trainval.npz"

if str(REPO_ROOT) not in sys.path:  # run as ``python benchmarks/bench_x.py`` from any folder
    sys.path.insert(0, str(REPO_ROOT))

__all__ = [
    "BENCH_DIR",
    "REPO_ROOT",
    "RESULTS_DIR",
    "DOCS_PAGE",
    "DOCS_IMG_DIR",
    "PNEUMONIAMNIST_NPZ",
    "base_parser",
    "apply_threads",
    "command_line",
    "machine_info",
    "machine_summary",
    "synchronize",
    "interleaved_timing",
    "summarize_times",
    "markdown_table",
    "write_results",
    "load_results",
    "fmt",
    "set_seed",
]


def base_parser(description: str) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: ``--device``, ``--quick``, ``--seed``, ``--threads``, ``--out``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--quick", action="store_true", help="a few seconds' smoke version (tiny sizes, few repeats)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's choice). 1 by default: on a shared, oversubscribed machine two "
        "OpenMP threads wait on each other and timings get 10x slower and noisier",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results .json/.md")
    p.add_argument("--tag", default=None, help="suffix of the results file names (default: 'quick' with --quick)")
    return p


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's intra-op threads from ``--threads`` (0 keeps torch's default)."""
    import torch

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def command_line() -> str:
    """The command that produced a result, relative to the repository root where possible."""
    argv = list(sys.argv)
    try:
        argv[0] = str(Path(argv[0]).resolve().relative_to(REPO_ROOT))
    except ValueError:
        pass
    return " ".join(["python", *argv])


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global generator, for code that still uses it
    torch.manual_seed(seed)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "?"))
    except Exception:  # noqa: BLE001 - optional packages
        return None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Machine, software versions and current load (reported beside every result)."""
    import torch

    info: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "monai": _version("monai"),
        "ignite": _version("ignite"),
        "numpy": _version("numpy"),
        "lightly": _version("lightly"),
        "torchvision": _version("torchvision"),
        "git_commit": _git_commit(),
        "device": device,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def machine_summary(info: Mapping[str, Any]) -> str:
    """One line: CPU, cores, memory, versions, load."""
    parts = [
        f"{info.get('cpu')} ({info.get('usable_cores')} cores, {info.get('mem_total_gib')} GiB)",
        f"device {info.get('device')}" + (f" ({info['gpu']})" if info.get("gpu") else ""),
        f"Python {info.get('python')}, torch {info.get('torch')} ({info.get('torch_threads')} threads), "
        f"MONAI {info.get('monai')}",
    ]
    if info.get("lightly"):
        parts.append(f"lightly {info['lightly']}, torchvision {info.get('torchvision')}")
    load = info.get("loadavg_start")
    if load:
        parts.append("load average at start " + "/".join(f"{x:.1f}" for x in load))
    if info.get("loadavg_end"):
        parts.append("at end " + "/".join(f"{x:.1f}" for x in info["loadavg_end"]))
    if info.get("git_commit"):
        parts.append(f"commit {info['git_commit']}")
    return "; ".join(parts)


def synchronize(device: str | Any) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def interleaved_timing(
    steps: Mapping[str, Callable[[int], Any]],
    rounds: int,
    iters_per_round: int = 1,
    warmup: int = 1,
    device: str = "cpu",
    time_budget_s: float | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time several configurations interleaved: per round, each one runs ``iters_per_round`` steps.

    ``steps[name](n)`` runs ``n`` training steps of configuration ``name``. Returns ``(wall, cpu)``, each
    ``{name: [seconds per step of each round]}``: wall-clock time and this process's CPU time (all its threads; with
    one torch thread on a shared machine the CPU time is the work done, whatever else the machine runs). ``warmup``
    untimed rounds of every configuration run first. Stops early (after at least 3 rounds) when ``time_budget_s`` is
    exceeded.
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name](iters_per_round)
    synchronize(device)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    t_start = time.perf_counter()
    for r in range(rounds):
        for name in names:
            synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            steps[name](iters_per_round)
            synchronize(device)
            wall[name].append((time.perf_counter() - t0) / iters_per_round)
            cpu[name].append((time.process_time() - c0) / iters_per_round)
        if log is not None:
            log(
                f"round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {wall[n][-1] * 1e3:.0f} ms (cpu {cpu[n][-1] * 1e3:.0f})" for n in names)
            )
        if time_budget_s is not None and r >= 2 and time.perf_counter() - t_start > time_budget_s:
            if log is not None:
                log(f"time budget {time_budget_s:.0f} s reached after {r + 1} rounds")
            break
    return wall, cpu


def summarize_times(samples: Mapping[str, Sequence[float]], reference: str | None = None) -> dict[str, dict]:
    """Min/median/max per configuration; with ``reference``, ratios per round (median, min, max) and of the minima."""
    out: dict[str, dict] = {}
    for name, times in samples.items():
        row = {
            "n": len(times),
            "min_s": min(times),
            "median_s": statistics.median(times),
            "max_s": max(times),
        }
        if reference is not None and reference in samples:
            ref = samples[reference]
            ratios = [t / r for t, r in zip(times, ref)]
            row["ratio_median"] = statistics.median(ratios)
            row["ratio_min"] = min(ratios)
            row["ratio_max"] = max(ratios)
            row["ratio_of_min"] = min(times) / min(ref)
        out[name] = row
    return out


def fmt(value: Any, digits: int = 2) -> str:
    """Format numbers for tables (floats with ``digits`` decimals, ``None`` as a dash)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], digits: int = 2) -> str:
    """GitHub markdown table of ``rows`` with ``columns = [(key, header), ...]``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k), digits) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_results(
    name: str,
    payload: Mapping[str, Any],
    markdown: str,
    out_dir: Path = RESULTS_DIR,
    tag: str | None = "",
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>[-tag].json`` (``payload`` + machine end load) and ``.md`` (``markdown``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{tag}" if tag else name
    payload = dict(payload)
    machine = dict(payload.get("machine", {}))
    if hasattr(os, "getloadavg") and "loadavg_end" not in machine:
        machine["loadavg_end"] = list(os.getloadavg())
    payload["machine"] = machine
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    header = f"<!-- generated by: {payload.get('command', '')} -->\n"
    md_path.write_text(header + markdown.rstrip() + "\n\n" + f"Machine: {machine_summary(machine)}.\n")
    return json_path, md_path


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def load_results(name: str, out_dir: Path = RESULTS_DIR) -> dict | None:
    """The JSON payload of a results file, or ``None`` when it was not produced yet."""
    path = Path(out_dir) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None
