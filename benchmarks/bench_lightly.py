"""DCL-CsTP against lightly's DenseCL, SimCLR and MoCo v2: time to reach the same kNN accuracy (issue 9).

Runs in the separate benchmark environment that has lightly (``benchmarks/README.md``), so every method uses the same
torch, the same MONAI ResNet-18 backbone (``MultiScaleResNet``, same initial weights), the same data (PneumoniaMNIST
train, 28 px → 64 px), the same two-view augmentations and the same view sequence (each method has its own loader,
seeded identically), the same optimiser (AdamW), temperature and queue length:

- ``dclcstp``: ``DCLCsTPNet(DualStreamEncoder())`` + ``DualStreamLoss`` (global InfoNCE with queue + geometric dense
  InfoNCE), symmetric: both views through the online and the momentum encoder; the step of ``DCLCsTPTrainer``.
- ``dclcstp_asym``: the same network and loss with ``DCLCsTPNet(symmetric=False)`` (the pretraining bundle's
  ``--symmetric False``): view 1 through the online encoder, view 2 through the momentum encoder, one-sided loss terms.
- ``densecl``: lightly's DenseCL (``DenseCLProjectionHead`` x2, ``NTXentLoss`` with memory banks,
  ``select_most_similar``, ``update_momentum``), asymmetric as in lightly's example: view 1 through the query encoder,
  view 2 through the momentum encoder.
- ``mocov2``: lightly's MoCo v2 (``MoCoProjectionHead``, ``NTXentLoss`` with memory bank), asymmetric.
- ``simclr``: lightly's SimCLR (``SimCLRProjectionHead``, ``NTXentLoss``), both views through one encoder.

Per-step costs differ (an asymmetric step sends each view through one encoder only), so the comparison is **time to
reach the same kNN accuracy** of the frozen backbone. Methods train round-robin in one process (``--eval-every``
steps each, then a kNN evaluation that is not timed), so machine noise hits all alike; each stops at its CPU-time
budget. Time to target = first evaluation at which the trailing mean of 3 evaluations reaches the target. kNN: 20 neighbours, cosine similarity, similarity-weighted votes (temperature 0.1, as lightly's
``knn_predict``), on global-average-pooled C5 features; the bank is class-balanced (all 388 normal train images and
388 pneumonia ones), the queries are the val split (524). Reported: accuracy, balanced accuracy, ROC AUC.

Times are the process's **CPU time** with one torch thread (what the step costs on one dedicated core, unaffected by
other jobs on a shared machine) and the wall time; ``--threads`` changes the thread count.

Example (inside the benchmark environment)::

    benchmarks/.venv-lightly/bin/python benchmarks/bench_lightly.py                 # ~5 CPU-min per method
    benchmarks/.venv-lightly/bin/python benchmarks/bench_lightly.py --quick
    python benchmarks/bench_lightly.py --methods dclcstp --quick                    # no lightly needed
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable

import common  # noqa: I001 - puts the repository root on sys.path
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from monai_dclcstp.losses import DualStreamLoss
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder
from monai_dclcstp.networks.nets.multiscale_backbone import MultiScaleResNet
from monai_dclcstp.transforms import TwoViewAugment
from monai_dclcstp.utils.momentum import cosine_schedule, deactivate_requires_grad

METHODS = ("dclcstp", "dclcstp_asym", "densecl", "mocov2", "simclr")
LABELS = {
    "dclcstp": "DCL-CsTP (this package)",
    "dclcstp_asym": "DCL-CsTP, asymmetric (this package)",
    "densecl": "DenseCL (lightly)",
    "mocov2": "MoCo v2 (lightly)",
    "simclr": "SimCLR (lightly)",
}
COLORS = {
    "dclcstp": "tab:red",
    "dclcstp_asym": "tab:purple",
    "densecl": "tab:blue",
    "mocov2": "tab:green",
    "simclr": "tab:orange",
}


# ----------------------------------------------------------------------------------------------------------- data
def load_pneumoniamnist(size: int) -> dict[str, torch.Tensor]:
    """Train/val images ``(N, 1, size, size)`` in ``[0, 1]`` (bilinear, anti-aliased, like the bundle's ``Resized``)."""
    if not common.PNEUMONIAMNIST_NPZ.is_file():
        raise FileNotFoundError(f"{common.PNEUMONIAMNIST_NPZ} not found (see ../shared/data/README.md).")
    d = np.load(common.PNEUMONIAMNIST_NPZ)
    out = {}
    for split in ("train", "val"):
        x = torch.from_numpy(d[f"{split}_images"]).float().div(255.0)[:, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[f"{split}_x"] = x.clamp(0, 1).contiguous()
        out[f"{split}_y"] = torch.from_numpy(d[f"{split}_labels"].reshape(-1).astype(np.int64))
    return out


class TwoViewTensorDataset(torch.utils.data.Dataset):
    """In-memory images → ``(view1, view2, geometry1, geometry2)`` with :class:`TwoViewAugment`."""

    def __init__(self, images: torch.Tensor, size: int, seed: int) -> None:
        self.images = images
        self.augment = TwoViewAugment(size).set_random_state(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        v1, g1, v2, g2 = self.augment(self.images[i])
        return v1, v2, g1, g2


def infinite_batches(images: torch.Tensor, size: int, batch_size: int, seed: int):
    ds = TwoViewTensorDataset(images, size, seed)
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, generator=g)
    while True:
        yield from loader


# ------------------------------------------------------------------------------------------------------- methods
def c5_backbone() -> MultiScaleResNet:
    return MultiScaleResNet("resnet18", spatial_dims=2, in_channels=1)


def pooled(features: torch.Tensor) -> torch.Tensor:
    return features.flatten(2).mean(dim=2)


class Method:
    """A training step and the backbone to evaluate. ``passes`` = encoder passes per view per step."""

    backbone: nn.Module
    passes: int

    def step(self, v1, v2, g1, g2, it: int) -> float:
        raise NotImplementedError


class DCLCsTP(Method):
    passes = 2  # each view: online (fwd+bwd) and momentum (fwd)
    symmetric = True

    def __init__(self, args) -> None:
        encoder = DualStreamEncoder(spatial_dims=2, in_channels=1, backbone="resnet18")
        self.net = DCLCsTPNet(encoder, symmetric=self.symmetric).train()
        self.loss = DualStreamLoss(0.5, args.temperature, queue_size=args.queue_size, embed_dim=128)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=args.weight_decay)
        self.backbone = self.net.backbone
        self.max_steps = args.max_steps

    def step(self, v1, v2, g1, g2, it: int) -> float:  # = DCLCsTPTrainer._iteration (without the engine)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(self.net(v1, v2), g1, g2)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 3.0)
        self.opt.step()
        self.net.update_momentum(cosine_schedule(it, self.max_steps, 0.99, 1.0))
        return float(loss.detach())


class DCLCsTPAsymmetric(DCLCsTP):
    """``DCLCsTPNet(symmetric=False)``: view 1 through the online encoder, view 2 through the momentum encoder, as
    lightly's DenseCL and MoCo v2 examples (the pretraining bundle's ``--symmetric False``)."""

    passes = 1
    symmetric = False


class _LightlyMomentumMethod(Method):
    passes = 1

    def _momentum(self, pairs, it: int) -> None:
        from lightly.models.utils import update_momentum

        m = cosine_schedule(it, self.max_steps, 0.99, 1.0)
        for online, ema in pairs:
            update_momentum(online, ema, m=m)


class DenseCL(_LightlyMomentumMethod):
    """lightly's DenseCL example, with the momentum backbone used for the keys (DenseCL, Wang et al. 2021)."""

    def __init__(self, args) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import DenseCLProjectionHead

        self.backbone = c5_backbone().train()
        self.head_global = DenseCLProjectionHead(512, 512, 128)
        self.head_local = DenseCLProjectionHead(512, 512, 128)
        self.backbone_m = deactivate_requires_grad(copy.deepcopy(self.backbone))
        self.head_global_m = deactivate_requires_grad(copy.deepcopy(self.head_global))
        self.head_local_m = deactivate_requires_grad(copy.deepcopy(self.head_local))
        self.crit_global = NTXentLoss(args.temperature, memory_bank_size=(args.queue_size, 128))
        self.crit_local = NTXentLoss(args.temperature, memory_bank_size=(args.queue_size, 128))
        params = [*self.backbone.parameters(), *self.head_global.parameters(), *self.head_local.parameters()]
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
        self.max_steps = args.max_steps

    def step(self, v1, v2, g1, g2, it: int) -> float:
        from lightly.models.utils import select_most_similar

        self._momentum(
            [
                (self.backbone, self.backbone_m),
                (self.head_global, self.head_global_m),
                (self.head_local, self.head_local_m),
            ],
            it,
        )
        q = self.backbone(v1)[-1]
        q_global = self.head_global(pooled(q))
        q_feat = q.flatten(2).transpose(1, 2)  # (B, HW, C)
        q_local = self.head_local(q_feat)  # (B, HW, D)
        with torch.no_grad():
            k = self.backbone_m(v2)[-1]
            k_global = self.head_global_m(pooled(k))
            k_feat = k.flatten(2).transpose(1, 2)
            k_local = select_most_similar(q_feat, k_feat, self.head_local_m(k_feat))
        loss = 0.5 * (
            self.crit_global(q_global, k_global)
            + self.crit_local(q_local.flatten(end_dim=1), k_local.flatten(end_dim=1))
        )
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


class MoCoV2(_LightlyMomentumMethod):
    """lightly's MoCo v2 example (He et al. 2020; Chen et al. 2020)."""

    def __init__(self, args) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead

        self.backbone = c5_backbone().train()
        self.head = MoCoProjectionHead(512, 512, 128)
        self.backbone_m = deactivate_requires_grad(copy.deepcopy(self.backbone))
        self.head_m = deactivate_requires_grad(copy.deepcopy(self.head))
        self.crit = NTXentLoss(args.temperature, memory_bank_size=(args.queue_size, 128))
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
        self.max_steps = args.max_steps

    def step(self, v1, v2, g1, g2, it: int) -> float:
        self._momentum([(self.backbone, self.backbone_m), (self.head, self.head_m)], it)
        q = self.head(pooled(self.backbone(v1)[-1]))
        with torch.no_grad():
            k = self.head_m(pooled(self.backbone_m(v2)[-1]))
        loss = self.crit(q, k)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


class SimCLR(Method):
    """lightly's SimCLR example (Chen et al. 2020); both views in one batched pass."""

    passes = 1

    def __init__(self, args) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.backbone = c5_backbone().train()
        self.head = SimCLRProjectionHead(512, 512, 128)
        self.crit = NTXentLoss(args.temperature)
        params = [*self.backbone.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)

    def step(self, v1, v2, g1, g2, it: int) -> float:
        b = v1.shape[0]
        z = self.head(pooled(self.backbone(torch.cat([v1, v2]))[-1]))
        loss = self.crit(z[:b], z[b:])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


BUILDERS: dict[str, Callable] = {
    "dclcstp": DCLCsTP,
    "dclcstp_asym": DCLCsTPAsymmetric,
    "densecl": DenseCL,
    "mocov2": MoCoV2,
    "simclr": SimCLR,
}


# ------------------------------------------------------------------------------------------------------------ kNN
@torch.no_grad()
def embed(backbone: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    was_training = backbone.training
    backbone.eval()
    feats = [F.normalize(pooled(backbone(x[i : i + batch_size])[-1]), dim=1) for i in range(0, len(x), batch_size)]
    backbone.train(was_training)
    return torch.cat(feats)


def roc_auc(score: torch.Tensor, y: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` for the positive class ``y == 1`` (Mann-Whitney U, ties averaged)."""
    score, y = score.double(), y.bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(score)
    ranks = torch.empty_like(score)
    ranks[order] = torch.arange(1, len(score) + 1, dtype=torch.float64)
    s_sorted = score[order]  # average the ranks of ties
    _, inverse, counts = torch.unique_consecutive(s_sorted, return_inverse=True, return_counts=True)
    cum = torch.cumsum(counts, 0).double()
    avg = cum - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def knn_metrics(
    bank: torch.Tensor, bank_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor, k: int = 20, t: float = 0.1
) -> dict:
    """Weighted kNN (cosine, ``exp(sim / t)`` votes) → accuracy, balanced accuracy, AUC of class 1."""
    sim = query @ bank.T
    top, idx = sim.topk(min(k, len(bank)), dim=1)
    weights = (top / t).exp()
    n_classes = int(max(bank_y.max(), query_y.max())) + 1
    votes = torch.zeros(len(query), n_classes).scatter_add_(1, bank_y[idx], weights)
    prob = votes / votes.sum(dim=1, keepdim=True)
    pred = prob.argmax(dim=1)
    recalls = [float((pred[query_y == c] == c).float().mean()) for c in range(n_classes) if (query_y == c).any()]
    return {
        "acc": float((pred == query_y).float().mean()),
        "bacc": float(np.mean(recalls)),
        "auc": roc_auc(prob[:, 1], query_y) if n_classes == 2 else float("nan"),
    }


def balanced_bank(y: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of a class-balanced subset: ``per_class`` of each class (default: the smallest class's count)."""
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(y.numpy() == c) for c in np.unique(y.numpy())]
    n = min(len(c) for c in classes) if per_class is None else per_class
    return torch.from_numpy(np.sort(np.concatenate([rng.choice(c, min(n, len(c)), replace=False) for c in classes])))


# -------------------------------------------------------------------------------------------------------- summary
def smoothed(curve: list[dict], metric: str, window: int = 3) -> list[float]:
    """Trailing moving average of ``metric`` over ``window`` evaluations (kNN curves are noisy)."""
    values = [p[metric] for p in curve]
    return [float(np.mean(values[max(0, i - window + 1) : i + 1])) for i in range(len(values))]


def trained_levels(curve: list[dict], metric: str) -> list[tuple[dict, float]]:
    """``(evaluation, trailing mean of 3 of metric)`` for the trained evaluations (the random-init point at step 0 is
    left out, of the smoothing too)."""
    trained = [p for p in curve if p["step"] > 0]
    return list(zip(trained, smoothed(trained, metric)))


def first_time(curve: list[dict], metric: str, target: float, clock: str = "cpu_s") -> float | None:
    """Training time at which the smoothed ``metric`` first reaches ``target`` (``None``: never).

    The random-init point (step 0) is left out, of the smoothing too: only trained states count.
    """
    for p, value in trained_levels(curve, metric):
        if value >= target - 1e-9:
            return p[clock]
    return None


def best_level(curve: list[dict], metric: str) -> float:
    """Highest trailing mean of 3 over the trained evaluations (the best level a method held)."""
    levels = [value for _, value in trained_levels(curve, metric)]
    return max(levels) if levels else float("nan")


def level_at(curve: list[dict], metric: str, cpu_s: float) -> float | None:
    """Trailing mean of 3 at the last trained evaluation within ``cpu_s`` training CPU seconds (``None``: none yet)."""
    values = [value for p, value in trained_levels(curve, metric) if p["cpu_s"] <= cpu_s + 1e-9]
    return values[-1] if values else None


def plateau(curve: list[dict], metric: str, last: int = 3) -> float:
    """Mean of the last ``last`` evaluations (the level a method holds at the end of its budget)."""
    return float(np.mean([p[metric] for p in curve[-last:]]))


def plot_curves(curves: dict[str, list[dict]], targets: dict[str, float], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ("bacc_few", "auc_few", "bacc", "auc")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    axes = axes.ravel()
    for ax, metric in zip(axes, panels):
        title = METRIC_NAMES[metric]
        for m, curve in curves.items():
            ax.plot(
                [p["cpu_s"] / 60 for p in curve],
                [p[metric] for p in curve],
                marker=".",
                color=COLORS[m],
                label=LABELS[m],
            )
        if metric in targets:
            ax.axhline(targets[metric], color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel("training CPU time (min, 1 thread)")
        ax.set_title(f"kNN (k=20) {title}, PneumoniaMNIST val", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    common.save_figure(fig, path)


def main() -> None:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--budget", type=float, default=300.0, help="training CPU seconds per method")
    p.add_argument("--max-steps", type=int, default=1000, help="steps per method at most (and momentum schedule)")
    p.add_argument("--eval-every", type=int, default=30, help="steps between kNN evaluations")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--queue-size", type=int, default=256)
    p.add_argument("--bank-per-class", type=int, default=None, help="kNN bank images per class (default: all normal)")
    p.add_argument(
        "--small-bank-per-class", type=int, default=25, help="labelled images per class of the few-label kNN bank"
    )
    p.add_argument(
        "--target-metric", default="bacc_few", help="metric whose target defines time-to-accuracy (see --target-from)"
    )
    p.add_argument("--target-from", default="densecl", help="method whose end-of-budget plateau sets the target")
    p.add_argument("--plot", type=common.Path, default=None, help="PNG of the curves (default: docs/benchmarks/)")
    p.add_argument("--from-json", type=common.Path, default=None, help="re-report stored curves (no training)")
    args = p.parse_args()
    if args.from_json:
        stored = json.loads(args.from_json.read_text())
        if args.tag is None:
            args.tag = stored["args"].get("tag")
        report(stored, args)
        return
    if args.quick:
        args.image_size, args.batch_size, args.budget, args.max_steps, args.eval_every = 32, 8, 1e9, 2, 1
        args.bank_per_class = args.bank_per_class or 16
        args.small_bank_per_class = min(args.small_bank_per_class, 8)
        args.tag = "quick" if args.tag is None else args.tag
    common.apply_threads(args)
    machine = common.machine_info(args.device)
    print(common.machine_summary(machine))

    data = load_pneumoniamnist(args.image_size)
    bank_idx = balanced_bank(data["train_y"], args.bank_per_class, args.seed)
    bank_x, bank_y = data["train_x"][bank_idx], data["train_y"][bank_idx]
    val_x, val_y = data["val_x"], data["val_y"]
    if args.quick:
        val_x, val_y = val_x[:64], val_y[:64]

    methods: dict[str, Method] = {}
    batches = {}
    for m in args.methods:
        common.set_seed(args.seed)  # same backbone initialisation for every method
        methods[m] = BUILDERS[m](args)
        batches[m] = infinite_batches(data["train_x"], args.image_size, args.batch_size, args.seed)

    small = balanced_bank(bank_y, args.small_bank_per_class, args.seed + 1)  # subset of the bank, same features

    def evaluate(m: str) -> dict:
        bb = methods[m].backbone
        bank_f, val_f = embed(bb, bank_x), embed(bb, val_x)
        full = knn_metrics(bank_f, bank_y, val_f, val_y)
        few = knn_metrics(bank_f[small], bank_y[small], val_f, val_y)
        return {**full, **{f"{k}_few": v for k, v in few.items()}}

    def snapshot() -> dict:
        runs = {
            m: {
                "steps": state[m]["step"],
                "cpu_s": state[m]["cpu_s"],
                "wall_s": state[m]["wall_s"],
                "passes": methods[m].passes,
                "final_loss": float(np.mean(state[m]["losses"][-args.eval_every :])) if state[m]["losses"] else None,
                "curve": curves[m],
            }
            for m in args.methods
        }
        setting = (
            f"PneumoniaMNIST train ({len(data['train_x'])} images) at {args.image_size} px, batch {args.batch_size} "
            f"pairs, MONAI ResNet-18 (same init), AdamW lr {args.lr:g} wd {args.weight_decay:g}, temperature "
            f"{args.temperature:g}, queue {args.queue_size}, momentum 0.99→1 (cosine over {args.max_steps} steps), "
            f"budget {args.budget:g} CPU s per method, kNN every {args.eval_every} steps on {len(val_x)} val images "
            f"(banks: {len(bank_x)} class-balanced train images, and a few-label bank of {args.small_bank_per_class} "
            f"per class), {torch.get_num_threads()} torch thread(s), seed {args.seed}"
        )
        return {
            "benchmark": "lightly",
            "command": common.command_line(),
            "args": {k: str(v) if isinstance(v, common.Path) else v for k, v in vars(args).items()},
            "setting": setting,
            "machine": machine,
            "train_images": len(data["train_x"]),
            "runs": runs,
        }

    partial = args.out / "raw" / (f"lightly-{args.tag}-partial.json" if args.tag else "lightly-partial.json")
    partial.parent.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[dict]] = {}
    state = {m: {"step": 0, "cpu_s": 0.0, "wall_s": 0.0, "losses": []} for m in args.methods}
    for m in args.methods:
        curves[m] = [{"step": 0, "cpu_s": 0.0, "wall_s": 0.0, **evaluate(m)}]
    print("random init:", curves[args.methods[0]][0])
    active = list(args.methods)
    while active:
        for m in list(active):
            s = state[m]
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(args.eval_every):
                v1, v2, g1, g2 = next(batches[m])
                s["losses"].append(methods[m].step(v1, v2, g1, g2, s["step"]))
                s["step"] += 1
            s["cpu_s"] += time.process_time() - c0
            s["wall_s"] += time.perf_counter() - t0
            point = {"step": s["step"], "cpu_s": s["cpu_s"], "wall_s": s["wall_s"], **evaluate(m)}
            point["loss"] = float(np.mean(s["losses"][-args.eval_every :]))
            curves[m].append(point)
            print(
                f"{m:8s} step {s['step']:4d} cpu {s['cpu_s']:6.0f} s wall {s['wall_s']:6.0f} s loss {point['loss']:.3f} "
                f"kNN acc {point['acc']:.3f} bacc {point['bacc']:.3f} auc {point['auc']:.3f} "
                f"few-label bacc {point['bacc_few']:.3f} auc {point['auc_few']:.3f}",
                flush=True,
            )
            if s["cpu_s"] >= args.budget or s["step"] >= args.max_steps:
                active.remove(m)
            # progress so far (re-report an interrupted run with --from-json)
            partial.write_text(json.dumps(snapshot(), indent=1, default=str))

    report(snapshot(), args)


METRIC_NAMES = {
    "bacc_few": "bal. acc, few-label bank",
    "auc_few": "AUC, few-label bank",
    "bacc": "bal. acc",
    "auc": "AUC",
    "acc": "acc",
}


def report(payload: dict, args) -> None:
    """Targets, time-to-target table, plot and results files from the stored curves (``payload["runs"]``)."""
    runs = payload["runs"]
    methods = list(runs)
    ref = args.target_from if args.target_from in runs else methods[0]
    metric = args.target_metric
    keys = [k for k in METRIC_NAMES if all(k in p for r in runs.values() for p in r["curve"])]
    targets = {k: plateau(runs[ref]["curve"], k) for k in keys}
    best_targets = {k: best_level(runs[ref]["curve"], k) for k in keys}
    init = runs[methods[0]]["curve"][0]
    batch = payload["args"]["batch_size"]
    rows = []
    for m in methods:
        r, curve = runs[m], runs[m]["curve"]
        step_cpu = r["cpu_s"] / max(r["steps"], 1)
        row = {
            "method": LABELS[m],
            "steps": r["steps"],
            "epochs": r["steps"] * batch / payload["train_images"],
            "cpu_ms_per_step": step_cpu * 1e3,
            "views_per_s": 2 * batch / step_cpu,
            "encoder_passes_per_view": r["passes"],
            **{f"final_{k}": plateau(curve, k) for k in keys},
        }
        for k in keys:
            row[f"t_{k}_cpu_s"] = first_time(curve, k, targets[k])
            row[f"t_{k}_wall_s"] = first_time(curve, k, targets[k], "wall_s")
            row[f"tbest_{k}_cpu_s"] = first_time(curve, k, best_targets[k])
        rows.append(row)
    ref_row = rows[methods.index(ref)]
    for row in rows:
        for k in keys:
            for t_key, x_key in ((f"t_{k}_cpu_s", f"x_ref_{k}"), (f"tbest_{k}_cpu_s", f"xbest_ref_{k}")):
                t, t_ref = row[t_key], ref_row[t_key]
                row[x_key] = t / t_ref if t is not None and t_ref else None
    columns = [
        ("method", "method"),
        ("steps", "steps"),
        ("epochs", "epochs"),
        ("cpu_ms_per_step", "CPU ms/step"),
        ("views_per_s", "views/s (1 thread)"),
        ("encoder_passes_per_view", "encoder passes per view"),
        ("final_bacc_few", "kNN bal. acc, few-label (last 3)"),
        ("final_auc_few", "kNN AUC, few-label (last 3)"),
        ("final_bacc", "kNN bal. acc (last 3)"),
        ("final_auc", "kNN AUC (last 3)"),
        ("final_acc", "kNN acc (last 3)"),
        (f"t_{metric}_cpu_s", f"CPU s to target ({METRIC_NAMES[metric]})"),
        (f"x_ref_{metric}", f"x {LABELS[ref]}"),
        (f"t_{metric}_wall_s", "wall s to target"),
        (f"tbest_{metric}_cpu_s", "CPU s to best level"),
        (f"xbest_ref_{metric}", f"x {LABELS[ref]} (best level)"),
    ]
    budget = float(payload["args"]["budget"])
    checkpoints = [budget / 3, 2 * budget / 3, budget] if budget < 1e8 else []
    level_metrics = list(dict.fromkeys(k for k in (metric, "auc_few", "auc") if k in keys))
    for row, m in zip(rows, methods):
        for k in level_metrics:
            for t in checkpoints:
                row[f"at_{k}_{t:.0f}"] = level_at(runs[m]["curve"], k, t)
    level_columns = [("method", "method")] + [
        (f"at_{k}_{t:.0f}", f"{METRIC_NAMES[k]} @ {t:.0f} s") for k in level_metrics for t in checkpoints
    ]
    ratio_columns = [("method", "method")] + [
        (f"{prefix}_ref_{k}", f"{METRIC_NAMES[k]}: {what}")
        for k in keys
        for prefix, what in (("x", "end level"), ("xbest", "best level"))
    ]
    init_text = ", ".join(f"{METRIC_NAMES[k]} {init[k]:.3f}" for k in METRIC_NAMES if k in init)
    below = [METRIC_NAMES[k] for k in keys if k in init and targets[k] <= init[k]]
    caveat = (
        f" **Caveat:** the target is at or below the random-init level for {', '.join(below)}: within this budget "
        f"{LABELS[ref]} does not improve on random features there, so time to target measures the recovery from "
        "the early dip of contrastive training, not learning beyond random features."
        if below
        else ""
    )
    target_text = ", ".join(f"{METRIC_NAMES[k]} {targets[k]:.3f}" for k in keys)
    best_text = ", ".join(f"{METRIC_NAMES[k]} {best_targets[k]:.3f}" for k in keys)
    md = (
        f"Time to the same kNN accuracy: {payload['setting']}.\n\nRandom init (step 0, same for all): {init_text}. "
        f"Targets = {LABELS[ref]}'s level at the end of its budget (mean of its last 3 evaluations): {target_text}; "
        f"time to target = first evaluation whose trailing mean of 3 reaches it, in training CPU seconds (kNN "
        f"evaluations not counted). Headline metric: {METRIC_NAMES[metric]}.{caveat} Second target, robust to a "
        f"reference that ends in a dip: {LABELS[ref]}'s **best level** (highest trailing mean of 3): {best_text}.\n\n"
        + common.markdown_table(rows, columns, digits=2)
        + f"\n\nTime to target as a multiple of {LABELS[ref]}'s time, every metric (– = not reached within the "
        "budget; < 1 = faster):\n\n"
        + common.markdown_table(rows, ratio_columns, digits=2)
        + (
            "\n\nThe same comparison the other way round: kNN level (trailing mean of 3) reached within the same "
            f"training CPU time (random init: {METRIC_NAMES[metric]} {init[metric]:.3f}):\n\n"
            + common.markdown_table(rows, level_columns, digits=3)
            if checkpoints
            else ""
        )
    )
    plot_path = args.plot or (
        args.out / f"lightly_knn-{args.tag}.png" if args.tag else common.DOCS_IMG_DIR / "lightly_knn.png"
    )
    plot_curves({m: runs[m]["curve"] for m in methods}, targets, plot_path)
    payload = {
        **payload,
        "random_init": init,
        "targets": targets,
        "best_targets": best_targets,
        "target_from": ref,
        "target_metric": metric,
        "rows": rows,
        "plot": str(plot_path.relative_to(common.REPO_ROOT))
        if plot_path.is_relative_to(common.REPO_ROOT)
        else str(plot_path),
    }
    json_path, md_path = common.write_results("lightly", payload, md, args.out, args.tag)
    print(md)
    print(f"wrote {json_path}, {md_path} and {plot_path}")


if __name__ == "__main__":
    main()
