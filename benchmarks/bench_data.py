"""Two-view data pipeline throughput against the trainer's (issue 9, "Speed: data pipeline").

Builds the pretraining bundle's training transforms (``bundles/pretrain/configs/train.json``: ``load_transforms`` →
``TwoViewAugmentd`` → ``SelectItemsd``; with the documented chain ``LoadImaged → EnsureChannelFirstd →
ScaleIntensityRanged → TwoViewAugmentd`` when the bundle is not there) on the PneumoniaMNIST train split (written
once as PNGs by :func:`monai_dclcstp.data.load_datalist`), and measures, in pairs (two-view items) per second:

1. **loader alone**: ``Dataset`` / ``CacheDataset`` with ``DataLoader`` at 0, 1, 2 worker processes and
   ``ThreadDataLoader`` (0 workers, or thread workers); a fresh loader per repeat, the first batches (worker start,
   prefetch) untimed; the whole sweep is repeated and min/median reported;
2. **trainer alone**: ``DCLCsTPTrainer`` with the bundle's network/loss/optimiser on in-memory batches;
3. **end to end**: the trainer fed by a few of the loaders, against in-memory batches (shows whether training is
   data-bound once loader and trainer share the cores).

Target (issue 9): loader throughput >= 1.5x the trainer's, so training is never data-bound.

Example::

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --device cuda
    python benchmarks/bench_data.py --quick
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: I001 - puts the repository root on sys.path
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader

from monai_dclcstp.engines import DCLCsTPTrainer
from monai_dclcstp.losses import DualStreamLoss
from monai_dclcstp.networks import DCLCsTPNet, DualStreamEncoder

BUNDLE_CONFIG = common.REPO_ROOT / "bundles" / "pretrain" / "configs" / "train.json"

# name: (dataset kind, loader kind, workers)
LOADER_VARIANTS: dict[str, tuple[str, str, int]] = {
    "Dataset + DataLoader(0)": ("dataset", "torch", 0),
    "Dataset + DataLoader(1)": ("dataset", "torch", 1),
    "Dataset + DataLoader(2)": ("dataset", "torch", 2),
    "CacheDataset + DataLoader(0)": ("cache", "torch", 0),
    "CacheDataset + DataLoader(1)": ("cache", "torch", 1),
    "CacheDataset + DataLoader(2)": ("cache", "torch", 2),
    "CacheDataset + ThreadDataLoader(0)": ("cache", "thread", 0),
    "CacheDataset + ThreadDataLoader(1 thread)": ("cache", "thread", 1),
    "CacheDataset + ThreadDataLoader(2 threads)": ("cache", "thread", 2),
}
END_TO_END_VARIANTS = (
    "CacheDataset + DataLoader(0)",
    "CacheDataset + DataLoader(1)",
    "CacheDataset + ThreadDataLoader(0)",
    "CacheDataset + ThreadDataLoader(1 thread)",
)


def bundle_settings(image_size: int | None) -> dict:
    """The pretraining bundle's transform chain and training settings (or documented fallbacks)."""
    if BUNDLE_CONFIG.is_file():
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(BUNDLE_CONFIG))
        if image_size is not None:
            parser["image_size"] = image_size
        transforms = [
            *parser.get_parsed_content("load_transforms"),
            parser.get_parsed_content("train#augmentation"),
            parser.get_parsed_content("train#select"),
        ]
        keys = ("image_size", "batch_size", "embed_dim", "out_dim", "queue_size", "lr", "weight_decay", "backbone")
        settings = {k: parser[k] for k in keys}
        settings["lambda_local"], settings["temperature"] = parser["lambda_local"], parser["temperature"]
        settings["source"] = str(BUNDLE_CONFIG.relative_to(common.REPO_ROOT))
        settings["transforms"] = transforms
        settings["bundle_num_workers"] = "default_num_workers() (= usable cores - 1, at most 4)"
        return settings
    from monai.transforms import EnsureChannelFirstd, LoadImaged, ScaleIntensityRanged, SelectItemsd

    from monai_dclcstp.transforms import TwoViewAugmentd

    size = image_size or 64
    return {
        "image_size": size,
        "batch_size": 32,
        "embed_dim": 128,
        "out_dim": 128,
        "queue_size": 256,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "backbone": "resnet18",
        "lambda_local": 0.5,
        "temperature": 0.2,
        "source": "documented fallback chain (bundle config not found)",
        "transforms": [
            LoadImaged("image", image_only=True),
            EnsureChannelFirstd("image"),
            ScaleIntensityRanged("image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
            TwoViewAugmentd("image", spatial_size=size),
            SelectItemsd(["view1", "view2", "geometry1", "geometry2"]),
        ],
    }


def training_items(n: int | None, cache_dir: Path, seed: int) -> list[dict]:
    """PneumoniaMNIST train items (PNG paths); a deterministic subset of ``n`` when given."""
    from monai_dclcstp.data import load_datalist

    if not common.PNEUMONIAMNIST_NPZ.is_file():
        raise FileNotFoundError(f"{common.PNEUMONIAMNIST_NPZ} not found (see /work/shared/data/README.md).")
    items = load_datalist(dataset_dir=common.PNEUMONIAMNIST_NPZ, task="pretrain", cache_dir=cache_dir)["training"]
    if n is not None and n < len(items):
        idx = np.random.default_rng(seed).choice(len(items), n, replace=False)
        items = [items[i] for i in sorted(idx)]
    return [{"image": it["image"], "synthetic": False} for it in items]


def make_loader(variant: str, datasets: dict, batch_size: int, seed: int):
    kind, loader_kind, workers = LOADER_VARIANTS[variant]
    ds = datasets[kind]
    g = torch.Generator().manual_seed(seed)
    if loader_kind == "torch":
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=g,
        )
    return ThreadDataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        use_thread_workers=workers > 0,
        generator=g,
    )


def cycle(loader):
    while True:
        yield from loader


def time_loader(
    variant: str, datasets: dict, batch_size: int, batches: int, seed: int
) -> tuple[float, float, float | None]:
    """(pairs/s over ``batches`` timed batches, seconds to the first batches that were skipped, pairs per CPU-second
    of this process — only for in-process loaders, where it is the load-independent cost)."""
    _, _, workers = LOADER_VARIANTS[variant]
    loader = make_loader(variant, datasets, batch_size, seed)
    it = cycle(loader)
    t0 = time.perf_counter()
    for _ in range(max(1, 2 * workers + 1)):  # worker start-up and the prefetched batches
        next(it)
    startup = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    del it, loader
    in_process = workers == 0 or LOADER_VARIANTS[variant][1] == "thread"
    return batches * batch_size / elapsed, startup, batches * batch_size / cpu if in_process else None


def build_trainer(settings: dict, device: str, loader, iterations: int) -> DCLCsTPTrainer:
    encoder = DualStreamEncoder(
        spatial_dims=2,
        in_channels=1,
        backbone=settings["backbone"],
        embed_dim=settings["embed_dim"],
        out_dim=settings["out_dim"],
    )
    net = DCLCsTPNet(encoder).to(device)
    loss = DualStreamLoss(
        lambda_local=settings["lambda_local"],
        temperature=settings["temperature"],
        queue_size=settings["queue_size"],
        embed_dim=settings["out_dim"],
    ).to(device)
    opt = torch.optim.AdamW(
        [p for p in net.parameters() if p.requires_grad], lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    trainer = DCLCsTPTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=loss,
        epoch_length=iterations,
        grad_clip_norm=3.0,
    )
    trainer.logger.setLevel("WARNING")
    return trainer


def time_trainer(trainer: DCLCsTPTrainer, warmup: int) -> tuple[float, float]:
    """Wall and CPU seconds per iteration, skipping the first ``warmup`` iterations (timed with ignite events)."""
    from ignite.engine import Events

    marks: list[tuple[float, float]] = []
    handle = trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda _: marks.append((time.perf_counter(), time.process_time()))
    )
    trainer.run()
    handle.remove()
    marks = marks[warmup:]
    n = len(marks) - 1
    return (marks[-1][0] - marks[0][0]) / n, (marks[-1][1] - marks[0][1]) / n


def main() -> None:
    p = common.base_parser(__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=None, help="default: the bundle's image_size")
    p.add_argument("--batch-size", type=int, default=None, help="default: the bundle's batch_size")
    p.add_argument("--items", type=int, default=None, help="use this many training images (default: all)")
    p.add_argument("--batches", type=int, default=24, help="timed batches per loader measurement")
    p.add_argument("--repeats", type=int, default=3, help="repeats of the loader sweep")
    p.add_argument("--trainer-steps", type=int, default=6, help="timed trainer iterations (after 2 untimed)")
    p.add_argument("--variants", nargs="+", default=list(LOADER_VARIANTS), choices=list(LOADER_VARIANTS))
    p.add_argument("--end-to-end", nargs="*", default=list(END_TO_END_VARIANTS), choices=list(LOADER_VARIANTS))
    p.add_argument("--cache-dir", type=Path, default=None, help="where the npz is written as PNGs")
    args = p.parse_args()
    if args.quick:
        args.items, args.batches, args.repeats, args.trainer_steps = 64, 2, 1, 2
        args.image_size, args.batch_size = args.image_size or 32, args.batch_size or 4
        args.variants = ["Dataset + DataLoader(0)", "CacheDataset + ThreadDataLoader(0)"]
        args.end_to_end = ["CacheDataset + ThreadDataLoader(0)"]
        args.tag = "quick" if args.tag is None else args.tag
    common.apply_threads(args)
    common.set_seed(args.seed)
    machine = common.machine_info(args.device)
    print(common.machine_summary(machine))

    settings = bundle_settings(args.image_size)
    batch_size = args.batch_size or int(settings["batch_size"])
    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "monai_dclcstp_bench_cache"
    items = training_items(args.items, cache_dir, args.seed)
    print(f"{len(items)} images, transforms from {settings['source']}, {settings['image_size']} px, batch {batch_size}")
    from monai.transforms import Compose

    transform = Compose(settings["transforms"]).set_random_state(args.seed)
    datasets: dict = {"dataset": Dataset(items, transform)}
    t0 = time.perf_counter()
    datasets["cache"] = CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
    cache_build_s = time.perf_counter() - t0

    # 1. loader alone, sweep repeated
    loader_samples: dict[str, list[float]] = {v: [] for v in args.variants}
    startup: dict[str, list[float]] = {v: [] for v in args.variants}
    cpu_rates: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.repeats):
        for v in args.variants:
            rate, start, cpu_rate = time_loader(v, datasets, batch_size, args.batches, args.seed + r)
            loader_samples[v].append(rate)
            startup[v].append(start)
            if cpu_rate is not None:
                cpu_rates[v].append(cpu_rate)
            print(f"repeat {r + 1}/{args.repeats}: {v}: {rate:.0f} pairs/s (start-up {start:.2f} s)")

    # 2. trainer alone on in-memory batches (the loader's output, collated once)
    memory_batches = [b for _, b in zip(range(4), make_loader("CacheDataset + DataLoader(0)", datasets, batch_size, 0))]
    steps = args.trainer_steps + 2
    mem_loader = [memory_batches[i % len(memory_batches)] for i in range(steps)]
    trainer_s, trainer_cpu_s = time_trainer(build_trainer(settings, args.device, mem_loader, steps), warmup=2)
    trainer_rate, trainer_cpu_rate = batch_size / trainer_s, batch_size / trainer_cpu_s
    print(
        f"trainer alone: {trainer_s * 1e3:.0f} ms/iteration = {trainer_rate:.1f} pairs/s "
        f"({trainer_cpu_rate:.1f} pairs per CPU-second)"
    )

    # 3. end to end: trainer fed by a loader
    e2e_rows = [{"feed": "in-memory batches", "ms_per_iteration": trainer_s * 1e3, "pairs_per_s": trainer_rate}]
    for v in args.end_to_end:
        loader = make_loader(v, datasets, batch_size, args.seed)
        s, _ = time_trainer(build_trainer(settings, args.device, loader, steps), warmup=2)
        e2e_rows.append(
            {"feed": v, "ms_per_iteration": s * 1e3, "pairs_per_s": batch_size / s, "slowdown": s / trainer_s}
        )
        print(f"end to end with {v}: {s * 1e3:.0f} ms/iteration ({s / trainer_s:.2f}x in-memory)")
        del loader

    rows = []
    for v in args.variants:
        rates = loader_samples[v]
        rows.append(
            {
                "variant": v,
                "pairs_per_s_max": max(rates),
                "pairs_per_s_median": statistics.median(rates),
                "x_trainer": statistics.median(rates) / trainer_rate,
                "startup_s": statistics.median(startup[v]),
                "meets_1_5x": statistics.median(rates) / trainer_rate >= 1.5,
                "pairs_per_cpu_s": statistics.median(cpu_rates[v]) if cpu_rates[v] else None,
                "x_trainer_cpu": statistics.median(cpu_rates[v]) / trainer_cpu_rate if cpu_rates[v] else None,
            }
        )
    fastest = max(rows, key=lambda r: r["pairs_per_s_median"])
    columns = [
        ("variant", "dataset + loader (workers)"),
        ("pairs_per_s_max", "pairs/s (best)"),
        ("pairs_per_s_median", "pairs/s (median)"),
        ("x_trainer", "x trainer pairs/s"),
        ("meets_1_5x", ">= 1.5x"),
        ("pairs_per_cpu_s", "pairs per CPU-second (in-process loaders)"),
        ("x_trainer_cpu", "x trainer, CPU time"),
        ("startup_s", "start-up s (first batches)"),
    ]
    e2e_columns = [
        ("feed", "trainer fed by"),
        ("ms_per_iteration", "ms/iteration"),
        ("pairs_per_s", "pairs/s"),
        ("slowdown", "x in-memory"),
    ]
    setting = (
        f"PneumoniaMNIST train ({len(items)} images, 28 px PNG) → {settings['image_size']} px two views, batch "
        f"{batch_size}, transforms from `{settings['source']}`; CacheDataset build {cache_build_s:.1f} s (once); "
        f"{args.repeats} repeats x {args.batches} batches; trainer: {settings['backbone']}, DCL-CsTP defaults, AdamW, "
        f"{torch.get_num_threads()} torch thread(s), seed {args.seed}"
    )
    md = (
        f"Data pipeline: {setting}.\n\n"
        + common.markdown_table(rows, columns, digits=1)
        + f"\n\nTrainer alone (in-memory batches): {trainer_s * 1e3:.0f} ms/iteration = {trainer_rate:.1f} pairs/s "
        f"wall, {trainer_cpu_rate:.1f} pairs per CPU-second (one core). The CPU-time column compares what one core "
        "of loading feeds against what one core of training eats, whatever else runs on the machine. "
        f"Fastest loader: **{fastest['variant']}** ({fastest['pairs_per_s_median']:.0f} pairs/s, "
        f"{fastest['x_trainer']:.1f}x the trainer).\n\nEnd to end (trainer fed by the loader, "
        f"{args.trainer_steps} timed iterations):\n\n" + common.markdown_table(e2e_rows, e2e_columns)
    )
    payload = {
        "benchmark": "data",
        "command": common.command_line(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "setting": setting,
        "bundle": {k: v for k, v in settings.items() if k != "transforms"},
        "machine": machine,
        "cache_build_s": cache_build_s,
        "trainer_s_per_iteration": trainer_s,
        "trainer_pairs_per_s": trainer_rate,
        "trainer_pairs_per_cpu_s": trainer_cpu_rate,
        "samples_pairs_per_cpu_s": cpu_rates,
        "rows": rows,
        "end_to_end": e2e_rows,
        "fastest": fastest["variant"],
        "samples_pairs_per_s": loader_samples,
    }
    json_path, md_path = common.write_results("data", payload, md, args.out, args.tag)
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
