"""Peak memory of a DCL-CsTP training step (issue 9, "Speed: peak memory"): ResNet-50, 224 px, batch 32.

Each configuration runs in a fresh subprocess (so peaks don't mix) that builds the model, runs ``--steps`` training
steps (the same step as ``bench_step.py``) and reports:

- CPU: the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), and the RSS after
  ``import torch, monai`` and after building the model, so the step's own share can be read off;
- CUDA: ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``) over the steps.

Target (issue 9): the full step at the default configuration stays within 8 GiB on the CPU.

Example::

    python benchmarks/bench_memory.py                 # resnet50, 224 px, batch 32, CPU (a few minutes)
    python benchmarks/bench_memory.py --device cuda
    python benchmarks/bench_memory.py --quick
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import common  # noqa: I001 - puts the repository root on sys.path

CONFIGS = ("floor", "default", "paper", "linear")
DEFAULT_CONFIGS = ("floor", "default", "paper")
TARGET_GIB = 8.0


def _rss_now_mib() -> float:
    """Current resident set size (MiB) from ``/proc/self/statm``; ``nan`` where that file does not exist."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def child(args) -> dict:
    """Run in the subprocess: build, step, measure."""
    import bench_step
    import torch

    common.apply_threads(args)
    common.set_seed(args.seed)
    rss_import = _rss_now_mib()
    batch = bench_step.make_batch(args.batch_size, args.image_size, args.device, args.seed)
    step_args = type(
        "A",
        (),
        {
            "backbone": args.backbone,
            "device": args.device,
            "optimizer": "sgd",
            "lr": 0.03,
            "queue_size": 4096,
        },
    )()
    if args.child == "floor":
        run, _ = bench_step.floor_step(step_args, batch, with_optimizer=True)
    else:
        run, _ = bench_step.full_step(step_args, batch, bench_step.ENCODER_CONFIGS[args.child])
    rss_model = _rss_now_mib()
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run(args.steps)
    common.synchronize(args.device)
    out = {
        "config": args.child,
        "rss_after_import_mib": rss_import,
        "rss_after_build_mib": rss_model,
        "peak_rss_mib": _peak_rss_mib(),
    }
    if cuda:
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def run_child(config: str, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        config,
        "--device",
        args.device,
        "--backbone",
        args.backbone,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--steps",
        str(args.steps),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {config!r} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32, help="images per view (the step sees 2x this)")
    p.add_argument("--steps", type=int, default=2, help="training steps per configuration (>= 2: optimiser state)")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=CONFIGS)
    p.add_argument("--child", default=None, help="internal: run one configuration in this process")
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    if args.quick:
        args.backbone, args.image_size, args.batch_size, args.steps = "resnet18", 32, 2, 1
        args.configs = ["floor", "default"]
        args.tag = "quick" if args.tag is None else args.tag
    common.apply_threads(args)  # the children use the same thread count; recorded in the machine description
    machine = common.machine_info(args.device)
    print(common.machine_summary(machine))
    rows = []
    for config in args.configs:
        r = run_child(config, args)
        r["peak_rss_gib"] = r["peak_rss_mib"] / 1024
        r["step_rss_gib"] = (r["peak_rss_mib"] - r["rss_after_build_mib"]) / 1024
        if "cuda_max_allocated_mib" in r:
            r["cuda_max_allocated_gib"] = r["cuda_max_allocated_mib"] / 1024
        r["within_target"] = r["peak_rss_gib"] <= TARGET_GIB
        rows.append(r)
        print(json.dumps(r))
        write(rows, args, machine, common.command_line())  # after every configuration: a long run keeps its results


def write(rows: list[dict], args, machine: dict, command: str) -> None:
    columns = [
        ("config", "config"),
        ("rss_after_import_mib", "RSS after imports (MiB)"),
        ("rss_after_build_mib", "RSS after building (MiB)"),
        ("peak_rss_gib", "peak RSS (GiB)"),
        ("step_rss_gib", "peak - built (GiB)"),
        ("within_target", f"peak RSS <= {TARGET_GIB:g} GiB"),
    ]
    if any("cuda_max_allocated_gib" in r for r in rows):
        columns.append(("cuda_max_allocated_gib", "CUDA max allocated (GiB)"))
    setting = (
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size} per view ({2 * args.batch_size} views/step), "
        f"{args.steps} training step(s) with SGD (momentum; AdamW keeps one more parameter-sized buffer, +0.1 GiB for "
        f"ResNet-50), each configuration in a fresh process, {args.threads} torch thread(s), seed {args.seed}"
    )
    md = f"Peak memory: {setting}.\n\n" + common.markdown_table(rows, columns)
    payload = {
        "benchmark": "memory",
        "command": command,
        "args": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "setting": setting,
        "target_gib": TARGET_GIB,
        "machine": machine,
        "rows": rows,
    }
    json_path, md_path = common.write_results("memory", payload, md, args.out, args.tag)
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
