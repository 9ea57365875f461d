"""torch.profiler of one DCL-CsTP training step: time per phase and the top operators (issue 9, "Speed: profile").

The step is the one of ``DCLCsTPTrainer`` (the same operations as ``bench_step.py``'s ``default``), written out phase
by phase so that each phase is a ``record_function`` range:

``online.backbone`` → ``online.projection`` (cross-scale token projection) → ``online.heads`` → ``momentum.forward``
(the whole momentum encoder, no grad) → ``loss`` (``DualStreamLoss``: global InfoNCE + queue, dense InfoNCE) →
``backward`` → ``clip+optimizer`` → ``momentum.update`` (EMA).

Writes the phase table and the top operators by self CPU time (and CUDA time on a GPU) to
``benchmarks/results/profile[-tag].{json,md}`` and a Chrome trace to ``benchmarks/results/raw/`` (git-ignored).
Use ``--tag before`` / ``--tag after`` around a change to record its effect.

Example::

    python benchmarks/bench_profile.py                      # ResNet-18, 96 px, batch 32, default configuration
    python benchmarks/bench_profile.py --config paper
    python benchmarks/bench_profile.py --device cuda
"""

from __future__ import annotations

import bench_step
import common  # noqa: I001 - puts the repository root on sys.path
import torch
from torch.profiler import ProfilerActivity, profile, record_function

PHASES = (
    "online.backbone",
    "online.projection",
    "online.heads",
    "momentum.forward",
    "loss",
    "backward",
    "clip+optimizer",
    "momentum.update",
)


def make_step(args):
    """The trainer's step, phase by phase (identical operations to ``DCLCsTPNet.forward`` + ``_iteration``)."""
    batch = bench_step.make_batch(args.batch_size, args.image_size, args.device, args.seed)
    net, loss_fn = bench_step.build_net_and_loss(args, bench_step.ENCODER_CONFIGS[args.config])
    opt = bench_step.make_optimizer(net.parameters(), args.optimizer, args.lr)
    params = [p for p in net.parameters() if p.requires_grad]
    v1, v2, g1, g2 = batch["view1"], batch["view2"], batch["geometry1"], batch["geometry2"]
    online, momentum = net.online, net.momentum_encoder
    b = v1.shape[0]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        both = torch.cat([v1, v2])
        with record_function("online.backbone"):
            feats = online.backbone(both)
        with record_function("online.projection"):
            tokens = online.projection([feats[i] for i in online.scale_indices])
        with record_function("online.heads"):
            g_q, l_q = online.global_head(tokens), online.local_head(tokens)
        with record_function("momentum.forward"), torch.no_grad():
            g_k, l_k = momentum(both)
        outputs = {
            "global_q1": g_q[:b],
            "global_q2": g_q[b:],
            "local_q1": l_q[:b],
            "local_q2": l_q[b:],
            "global_k1": g_k[:b],
            "global_k2": g_k[b:],
            "local_k1": l_k[:b],
            "local_k2": l_k[b:],
        }
        with record_function("loss"):
            loss = loss_fn(outputs, g1, g2)["loss"]
        with record_function("backward"):
            loss.backward()
        with record_function("clip+optimizer"):
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
        with record_function("momentum.update"):
            net.update_momentum(0.99)

    return step


def main() -> None:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--config", default="default", choices=[c for c in bench_step.ENCODER_CONFIGS if c != "trainer"])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--queue-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 1 warm-up step)")
    p.add_argument("--top", type=int, default=20, help="operators in the table")
    args = p.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.steps, args.top = 32, 4, 1, 10
        args.tag = "quick" if args.tag is None else args.tag
    common.apply_threads(args)
    common.set_seed(args.seed)
    machine = common.machine_info(args.device)
    print(common.machine_summary(machine))

    step = make_step(args)
    step()  # warm-up (allocations, caches)
    common.synchronize(args.device)
    activities = [ProfilerActivity.CPU]
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in range(args.steps):
            with record_function("step"):
                step()
            common.synchronize(args.device)
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    stem = f"profile-{args.tag}" if args.tag else "profile"
    trace = raw / f"{stem}.trace.json"
    prof.export_chrome_trace(str(trace))

    events = prof.key_averages()
    by_key = {e.key: e for e in events}
    step_us = by_key["step"].cpu_time_total / args.steps
    dev_attr = "device_time_total" if hasattr(by_key["step"], "device_time_total") else "cuda_time_total"
    phase_rows = []
    for name in PHASES:
        e = by_key.get(name)
        cpu_us = e.cpu_time_total / args.steps if e else 0.0
        row = {"phase": name, "cpu_ms": cpu_us / 1e3, "share": cpu_us / step_us}
        if cuda and e is not None:
            row["cuda_ms"] = getattr(e, dev_attr) / args.steps / 1e3
        phase_rows.append(row)
    phase_rows.append({"phase": "step (total)", "cpu_ms": step_us / 1e3, "share": 1.0})
    skip = set(PHASES) | {"step", "ProfilerStep*"}
    ops = sorted((e for e in events if e.key not in skip), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in events if e.key not in skip)
    op_rows = [
        {
            "op": e.key,
            "calls_per_step": e.count / args.steps,
            "self_cpu_ms": e.self_cpu_time_total / args.steps / 1e3,
            "share": e.self_cpu_time_total / max(total_self, 1),
            **({"self_cuda_ms": getattr(e, "self_" + dev_attr, 0.0) / args.steps / 1e3} if cuda else {}),
        }
        for e in ops[: args.top]
    ]
    phase_cols = [("phase", "phase"), ("cpu_ms", "CPU ms/step (inclusive)"), ("share", "share of step")]
    op_cols = [
        ("op", "operator"),
        ("calls_per_step", "calls/step"),
        ("self_cpu_ms", "self CPU ms/step"),
        ("share", "share"),
    ]
    if cuda:
        phase_cols.append(("cuda_ms", "CUDA ms/step"))
        op_cols.append(("self_cuda_ms", "self CUDA ms/step"))
    setting = (
        f"config `{args.config}`, {args.backbone}, {args.image_size} px, batch {args.batch_size} per view, "
        f"{args.optimizer}, queue {args.queue_size}, {args.steps} profiled step(s) after 1 warm-up, "
        f"{torch.get_num_threads()} torch thread(s), seed {args.seed}"
    )
    md = (
        f"Profile of one step: {setting}. The backward of every phase is in `backward`.\n\n"
        + common.markdown_table(phase_rows, phase_cols)
        + f"\n\nTop {len(op_rows)} operators by self CPU time:\n\n"
        + common.markdown_table(op_rows, op_cols)
    )
    payload = {
        "benchmark": "profile",
        "command": common.command_line(),
        "args": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "setting": setting,
        "machine": machine,
        "phases": phase_rows,
        "top_ops": op_rows,
        "trace": str(trace.relative_to(common.REPO_ROOT)) if trace.is_relative_to(common.REPO_ROOT) else str(trace),
    }
    json_path, md_path = common.write_results("profile", payload, md, args.out, args.tag)
    print(md)
    print(f"wrote {json_path}, {md_path} and {trace}")


if __name__ == "__main__":
    main()
