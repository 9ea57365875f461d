"""Cost of one DCL-CsTP training step against the floor (issue 9, "Speed: the floor").

The **floor** is what any two-view momentum method must pay: the bare backbone forward + backward on both views
(one batched pass of ``2B`` images) plus the momentum backbone's forward on both views. The **full step** is what
``DCLCsTPTrainer`` does: ``DCLCsTPNet`` forward (backbone, cross-scale token projection, global and local heads, for
the online and the momentum encoder), ``DualStreamLoss`` (global InfoNCE with queue + geometric dense InfoNCE),
backward, gradient clipping, optimiser step and momentum (EMA) update.

Configurations (``--configs``, run interleaved A B C ... A B C ..., min and median over rounds, ratios to the floor
taken within each round):

- ``floor``: the floor as defined above.
- ``floor_opt``: the floor plus optimiser step and EMA update of the backbone (what a bare MoCo-style loop pays).
- ``default``: full step with the library defaults (``DualStreamEncoder()``: width 128, 1 block, softmax attention).
- ``trainer``: the default full step run by ``DCLCsTPTrainer`` (ignite engine, events, ``PrepareTwoViewBatch``).
- ``paper``: paper scale, width 256, 2 blocks, 8 heads.
- ``linear``: the default with ReLU linear attention; ``paper_linear``: paper scale with linear attention.
- ``no_mixing``: width 128 without transformer blocks (projection + embeddings only); ``c5_only``: C5 tokens only.

Example::

    python benchmarks/bench_step.py                     # ResNet-18, 96 px, batch 32, CPU
    python benchmarks/bench_step.py --device cuda --rounds 30
    python benchmarks/bench_step.py --quick             # a few seconds (smoke test)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable

import common  # noqa: I001 - puts the repository root on sys.path
import torch

from monai_dclcstp.engines import DCLCsTPTrainer
from monai_dclcstp.losses import DualStreamLoss
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder
from monai_dclcstp.networks.nets.multiscale_backbone import MultiScaleResNet
from monai_dclcstp.transforms import TwoViewAugment
from monai_dclcstp.utils.momentum import deactivate_requires_grad, update_momentum

ENCODER_CONFIGS: dict[str, dict] = {
    "default": {},
    "trainer": {},
    "paper": {"embed_dim": 256, "num_layers": 2, "num_heads": 8},
    "linear": {"attention": "linear"},
    "paper_linear": {"embed_dim": 256, "num_layers": 2, "num_heads": 8, "attention": "linear"},
    "no_mixing": {"num_layers": 0},
    "c5_only": {"scales": ("c5",), "grid": "c5"},
}
ALL_CONFIGS = ("floor", "floor_opt", *ENCODER_CONFIGS)
DEFAULT_CONFIGS = ("floor", "floor_opt", "default", "trainer", "paper", "linear", "paper_linear")
LABELS = {
    "floor": "floor (backbone fwd+bwd 2 views + momentum fwd 2 views)",
    "floor_opt": "floor + optimiser step + EMA",
    "default": "DCL-CsTP default (E=128, 1 block, softmax)",
    "trainer": "DCL-CsTP default via DCLCsTPTrainer",
    "paper": "DCL-CsTP paper scale (E=256, 2 blocks, softmax)",
    "linear": "DCL-CsTP E=128, 1 block, linear attention",
    "paper_linear": "DCL-CsTP E=256, 2 blocks, linear attention",
    "no_mixing": "DCL-CsTP E=128, no transformer block",
    "c5_only": "DCL-CsTP E=128, 1 block, C5 tokens only",
}


def make_batch(batch_size: int, image_size: int, device: str, seed: int) -> dict[str, torch.Tensor]:
    """Two augmented views of random images with their recorded geometry (realistic positive masks)."""
    aug = TwoViewAugment(image_size).set_random_state(seed)
    g = torch.Generator().manual_seed(seed)
    items = [aug(torch.rand(1, image_size, image_size, generator=g)) for _ in range(batch_size)]
    batch = {
        k: torch.stack([it[i] for it in items]) for i, k in enumerate(("view1", "geometry1", "view2", "geometry2"))
    }
    return {k: v.to(device) for k, v in batch.items()}


def make_optimizer(params, name: str, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    raise ValueError(f"unknown optimizer {name!r}")


def floor_step(args, batch, with_optimizer: bool) -> tuple[Callable[[int], None], int]:
    """The floor: backbone fwd+bwd on both views, momentum backbone fwd on both views (optionally + opt + EMA)."""
    backbone = MultiScaleResNet(args.backbone, spatial_dims=2, in_channels=1).to(args.device).train()
    momentum = deactivate_requires_grad(copy.deepcopy(backbone)).train()
    opt = make_optimizer(backbone.parameters(), args.optimizer, args.lr) if with_optimizer else None
    both = torch.cat([batch["view1"], batch["view2"]])

    def run(n: int) -> None:
        for _ in range(n):
            backbone.zero_grad(set_to_none=True)
            features = backbone(both)
            with torch.no_grad():
                momentum(both)
            features[-1].float().mean().backward()
            if opt is not None:
                opt.step()
                update_momentum(backbone, momentum, 0.99)

    return run, sum(p.numel() for p in backbone.parameters())


def build_net_and_loss(args, encoder_kwargs: dict) -> tuple[DCLCsTPNet, DualStreamLoss]:
    encoder = DualStreamEncoder(spatial_dims=2, in_channels=1, backbone=args.backbone, **encoder_kwargs)
    net = DCLCsTPNet(encoder).to(args.device).train()
    loss = DualStreamLoss(lambda_local=0.5, temperature=0.2, queue_size=args.queue_size).to(args.device)
    return net, loss


def full_step(args, batch, encoder_kwargs: dict) -> tuple[Callable[[int], None], int]:
    """The same operations as ``DCLCsTPTrainer._iteration``, in a plain loop."""
    net, loss_fn = build_net_and_loss(args, encoder_kwargs)
    opt = make_optimizer(net.parameters(), args.optimizer, args.lr)
    params = [p for p in net.parameters() if p.requires_grad]
    v1, v2, g1, g2 = batch["view1"], batch["view2"], batch["geometry1"], batch["geometry2"]

    def run(n: int) -> None:
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            losses = loss_fn(net(v1, v2), g1, g2)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 3.0)
            opt.step()
            net.update_momentum(0.99)

    return run, sum(p.numel() for p in net.online.parameters())


def trainer_step(args, batch, encoder_kwargs: dict, iters_per_round: int) -> tuple[Callable[[int], None], int]:
    """The full step run by ``DCLCsTPTrainer`` on an in-memory list of identical batches."""
    net, loss_fn = build_net_and_loss(args, encoder_kwargs)
    opt = make_optimizer(net.parameters(), args.optimizer, args.lr)
    trainers: dict[int, DCLCsTPTrainer] = {}

    def run(n: int) -> None:
        if n not in trainers:
            trainers[n] = DCLCsTPTrainer(
                device=args.device,
                max_epochs=1,
                train_data_loader=[batch] * n,
                network=net,
                optimizer=opt,
                loss_function=loss_fn,
                grad_clip_norm=3.0,
            )
            trainers[n].logger.setLevel("WARNING")
        trainers[n].run()

    return run, sum(p.numel() for p in net.online.parameters())


def main() -> None:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32, help="images per view (the step sees 2x this)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--iters-per-round", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds (>= 3 rounds)")
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=ALL_CONFIGS)
    p.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"), help="adamw: the pretraining bundle's")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--queue-size", type=int, default=256, help="256: the pretraining bundle's")
    p.add_argument("--from-json", type=common.Path, default=None, help="re-report stored samples (no timing)")
    args = p.parse_args()
    if args.from_json:
        stored = json.loads(args.from_json.read_text())
        report(stored, args.out, stored["args"].get("tag") if args.tag is None else args.tag)
        return
    if args.quick:
        args.image_size, args.batch_size, args.rounds, args.iters_per_round, args.warmup = 32, 4, 2, 1, 1
        args.tag = "quick" if args.tag is None else args.tag
    if "floor" not in args.configs:
        args.configs = ["floor", *args.configs]
    common.apply_threads(args)
    common.set_seed(args.seed)
    machine = common.machine_info(args.device)
    print(common.machine_summary(machine))

    batch = make_batch(args.batch_size, args.image_size, args.device, args.seed)
    steps: dict[str, Callable[[int], None]] = {}
    params: dict[str, int] = {}
    for name in args.configs:
        if name in ("floor", "floor_opt"):
            steps[name], params[name] = floor_step(args, batch, with_optimizer=name == "floor_opt")
        elif name == "trainer":
            steps[name], params[name] = trainer_step(args, batch, ENCODER_CONFIGS[name], args.iters_per_round)
        else:
            steps[name], params[name] = full_step(args, batch, ENCODER_CONFIGS[name])

    wall, cpu = common.interleaved_timing(
        steps, args.rounds, args.iters_per_round, args.warmup, args.device, args.time_budget
    )
    setting = (
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size} per view ({2 * args.batch_size} views/step), "
        f"optimiser {args.optimizer}, queue {args.queue_size}, {len(wall['floor'])} rounds x "
        f"{args.iters_per_round} steps interleaved, {torch.get_num_threads()} torch thread(s), seed {args.seed}"
    )
    payload = {
        "benchmark": "step",
        "command": common.command_line(),
        "args": {k: (str(v) if k == "out" else v) for k, v in vars(args).items()},
        "setting": setting,
        "machine": machine,
        "params": params,
        "wall_s": wall,
        "cpu_s": cpu,
    }
    report(payload, args.out, args.tag)


def report(payload: dict, out, tag: str | None) -> None:
    """Summary rows and table from the raw samples in ``payload``; writes the results files."""
    wall, cpu, params = payload["wall_s"], payload["cpu_s"], payload["params"]
    sw = common.summarize_times(wall, reference="floor")
    sc = common.summarize_times(cpu, reference="floor")
    views = 2 * payload["args"]["batch_size"]
    rows = []
    for name in wall:
        rows.append(
            {
                "config": name,
                "what": LABELS[name],
                "params_m": params[name] / 1e6,
                "wall_min_ms": sw[name]["min_s"] * 1e3,
                "wall_median_ms": sw[name]["median_s"] * 1e3,
                "cpu_min_ms": sc[name]["min_s"] * 1e3,
                "cpu_median_ms": sc[name]["median_s"] * 1e3,
                "ratio_wall_median": sw[name]["ratio_median"],
                "ratio_wall_of_min": sw[name]["ratio_of_min"],
                "ratio_cpu_median": sc[name]["ratio_median"],
                "ratio_cpu_min": sc[name]["ratio_min"],
                "ratio_cpu_max": sc[name]["ratio_max"],
                "ratio_cpu_of_min": sc[name]["ratio_of_min"],
                "views_per_s_median": views / sw[name]["median_s"],
                "views_per_s_best": views / sw[name]["min_s"],
                "views_per_cpu_s": views / sc[name]["median_s"],
                "rounds": sw[name]["n"],
            }
        )
    columns = [
        ("config", "config"),
        ("what", "what"),
        ("params_m", "online params (M)"),
        ("cpu_min_ms", "CPU min ms/step"),
        ("cpu_median_ms", "CPU median ms/step"),
        ("ratio_cpu_median", "x floor, CPU (median of rounds)"),
        ("ratio_cpu_of_min", "x floor, CPU (ratio of minima)"),
        ("wall_min_ms", "wall min ms/step"),
        ("wall_median_ms", "wall median ms/step"),
        ("ratio_wall_median", "x floor, wall (median of rounds)"),
        ("views_per_cpu_s", "views/s per core (CPU time)"),
        ("views_per_s_best", "views/s wall (best round)"),
    ]
    md = f"Step cost against the floor: {payload['setting']}.\n\n" + common.markdown_table(rows, columns)
    json_path, md_path = common.write_results("step", {**payload, "rows": rows}, md, out, tag)
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
