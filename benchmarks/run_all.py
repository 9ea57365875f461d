"""Run the benchmarks and write their sections of ``docs/benchmarks.md``.

Each benchmark is a script ``benchmarks/bench_<name>.py`` that writes ``<out>/<name>.json`` and ``<name>.md``;
this runner calls them one after another (each in its own process) and then pastes every ``<name>.md`` into the
results page between ``<!-- BEGIN <section> -->`` and ``<!-- END <section> -->``. Sections it does not own (the
label-efficiency / ablation section, anything a person wrote) are left as they are.

Usage::

    python benchmarks/run_all.py                  # full speed benchmarks (about an hour on 2 shared CPU cores)
    python benchmarks/run_all.py --quick          # smoke version: tiny sizes, results under benchmarks/results/raw/quick
    python benchmarks/run_all.py --only step data # some of them
    python benchmarks/run_all.py --group label-efficiency  # label efficiency and ablations only (~1.3 h on 2 cores)
    python benchmarks/run_all.py --docs-only      # rebuild docs/benchmarks.md from the committed results
    python benchmarks/run_all.py --device cuda

The lightly comparison runs with the interpreter of the separate benchmark environment (``--lightly-python``,
default ``benchmarks/.venv-lightly/bin/python``, see ``benchmarks/README.md``) and is skipped when it is missing.

To add a benchmark (e.g. label efficiency): write ``benchmarks/bench_<name>.py`` on the pattern of the others
(``common.base_parser``, ``common.write_results``), add a :class:`Bench` to :data:`BENCHMARKS` with the docs section
it fills, and put that section's markers into :data:`PAGE_TEMPLATE`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import common


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str  # results file stem and bench_<name>.py
    section: str  # docs section it fills
    title: str
    python: str = "default"  # "default" or "lightly"
    full_args: tuple[str, ...] = ()  # extra arguments of the full run
    group: str = "speed"


BENCHMARKS: tuple[Bench, ...] = (
    Bench("step", "speed-step", "Step cost against the floor"),
    Bench("lightly", "speed-lightly", "Against lightly (time to the same kNN accuracy)", python="lightly"),
    Bench("memory", "speed-memory", "Peak memory (ResNet-50, 224 px, batch 32)"),
    Bench("data", "speed-data", "Data pipeline"),
    Bench("profile", "speed-profile", "Profile of one step"),
    Bench(
        "label_efficiency",
        "label-efficiency",
        "Label efficiency and ablations",
        full_args=("--jobs", "2"),  # independent bundle runs two at a time (2.6 CPU-hours in all)
        group="label-efficiency",
    ),
)

PAGE_TEMPLATE = """# Benchmarks

Speed of DCL-CsTP against the floor and against lightly, memory, data pipeline, profile (issue 9), and, once run,
label efficiency and ablations. Every number here comes from a script in `benchmarks/` (see `benchmarks/README.md`);
the exact command, seed, versions and machine are in `benchmarks/results/<name>.json` and under each table.
Regenerate with `python benchmarks/run_all.py` (or `--docs-only` to rebuild this page from the committed results).

How to read the timings: the machines are shared and noisy, so configurations are timed **interleaved** (A B C A B C
...), each reported as min and median over rounds, ratios are taken within a round, and every CPU benchmark runs with
one torch thread and also reports the process's **CPU time** (the work done, unaffected by other jobs on the
machine). When the machine is busy, trust the CPU-time ratios over the wall-clock ones.

<!-- BEGIN speed-summary -->
<!-- END speed-summary -->

<!-- BEGIN speed-notes -->
*Findings and decisions (written by hand after a run; `run_all.py` leaves this section alone).*
<!-- END speed-notes -->

## Speed

### Step cost against the floor

<!-- BEGIN speed-step -->
<!-- END speed-step -->

### Against lightly (time to the same kNN accuracy)

<!-- BEGIN speed-lightly -->
<!-- END speed-lightly -->

### Peak memory (ResNet-50, 224 px, batch 32)

<!-- BEGIN speed-memory -->
<!-- END speed-memory -->

### Data pipeline

<!-- BEGIN speed-data -->
<!-- END speed-data -->

### Profile of one step

<!-- BEGIN speed-profile -->
<!-- END speed-profile -->

## Label efficiency and ablations

<!-- BEGIN label-efficiency -->
*Not run yet.* Reserved for the second half of issue 9 (PneumoniaMNIST 1/10/100 % labels: random init, global only,
local only, no cross-scale projection, full DCL-CsTP, + LDM images; PH2 Dice). Add `benchmarks/bench_<name>.py`
scripts and register them in `benchmarks/run_all.py` (`BENCHMARKS`), which fills this section.
<!-- END label-efficiency -->
"""

_SECTION = re.compile(r"(<!-- BEGIN (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)", re.S)


def update_section(page: str, name: str, body: str) -> str:
    """Replace the body of section ``name`` (appended at the end when the page has no such markers)."""
    body = body.rstrip() + "\n"
    pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->\n)(.*?)(<!-- END {re.escape(name)} -->)", re.S)
    if pattern.search(page):
        return pattern.sub(lambda m: m.group(1) + body + m.group(3), page, count=1)
    return page.rstrip() + f"\n\n<!-- BEGIN {name} -->\n{body}<!-- END {name} -->\n"


def section_names(page: str) -> list[str]:
    return [m.group("name") for m in _SECTION.finditer(page)]


def _image_link(path: str | None, page: Path, alt: str) -> str:
    if not path:
        return ""
    img = Path(path)
    if not img.is_absolute():
        img = common.REPO_ROOT / img
    if not img.is_file():
        return ""
    try:
        rel = img.resolve().relative_to(page.resolve().parent)
    except ValueError:
        rel = img
    return f"\n\n![{alt}]({rel.as_posix()})\n"


def plot_step(payload: dict, path: Path) -> Path:
    """Bar chart of each configuration's step time relative to the floor (CPU time and wall, median of rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["rows"]
    names = [r["config"] for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2, 3.6))
    cpu = [r["ratio_cpu_median"] for r in rows]
    err = None
    if all("ratio_cpu_min" in r for r in rows):  # whiskers: lowest and highest per-round ratio
        err = [[c - r["ratio_cpu_min"] for c, r in zip(cpu, rows)], [r["ratio_cpu_max"] - c for c, r in zip(cpu, rows)]]
    ax.bar([i - 0.2 for i in x], cpu, width=0.4, yerr=err, capsize=3, label="CPU time (whiskers: min-max of rounds)")
    ax.bar([i + 0.2 for i in x], [r["ratio_wall_median"] for r in rows], width=0.4, label="wall clock")
    ax.axhline(1.25, color="tab:red", ls="--", lw=1, label="target 1.25x")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("step time / floor (median of rounds)")
    ax.set_title(payload.get("setting", "")[:90], fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return common.save_figure(fig, path)


def summary_section(results: Path) -> str:
    """Headline table: the targets of issue 9 and where they stand."""
    rows = []
    step = common.load_results("step", results)
    if step:
        by = {r["config"]: r for r in step["rows"]}
        for cfg, label in (
            ("default", "full step, default configuration"),
            ("trainer", "DCLCsTPTrainer step, default"),
        ):
            if cfg in by:
                r = by[cfg]
                rows.append(
                    {
                        "what": f"{label} / floor",
                        "target": "<= 1.25x",
                        "measured": f"{r['ratio_cpu_median']:.2f}x CPU time, {r['ratio_wall_median']:.2f}x wall "
                        "(median of interleaved rounds)",
                        "met": r["ratio_cpu_median"] <= 1.25,
                    }
                )
        for cfg, label in (("paper", "paper scale (E=256, 2 blocks)"), ("linear", "linear attention")):
            if cfg in by:
                r = by[cfg]
                rows.append(
                    {
                        "what": f"{label} / floor",
                        "target": "(reference)",
                        "measured": f"{r['ratio_cpu_median']:.2f}x CPU time, {r['ratio_wall_median']:.2f}x wall",
                        "met": None,
                    }
                )
    lightly = common.load_results("lightly", results)
    if lightly:
        ref = lightly.get("target_from", "densecl")
        metric = lightly.get("target_metric", "bacc")
        ref_row = lightly["rows"][list(lightly["runs"]).index(ref)] if ref in lightly["runs"] else None
        level_keys = [k for k in (ref_row or {}) if k.startswith(f"at_{metric}_")]  # at_<metric>_<CPU s>
        last = max(level_keys, key=lambda k: float(k.rsplit("_", 1)[1])) if level_keys else None
        for r in lightly["rows"]:
            if r["method"].startswith("DCL-CsTP"):
                x = r.get(f"x_ref_{metric}")
                rows.append(
                    {
                        "what": f"{r['method']}: time to lightly {ref}'s kNN {metric} "
                        f"({lightly['targets'][metric]:.3f}), CPU time",
                        "target": "<= 1.0x",
                        "measured": f"{x:.2f}x" if x is not None else "not reached within budget",
                        "met": x is not None and x <= 1.0,
                    }
                )
                if last and r.get(last) is not None and ref_row.get(last) is not None:
                    rows.append(
                        {
                            "what": f"{r['method']}: kNN {metric} at {last.rsplit('_', 1)[1]} CPU s vs lightly {ref}",
                            "target": "(same time)",
                            "measured": f"{r[last]:.3f} vs {ref_row[last]:.3f}",
                            "met": None,
                        }
                    )
    memory = common.load_results("memory", results)
    if memory:
        by = {r["config"]: r for r in memory["rows"]}
        if "default" in by:
            r = by["default"]
            rows.append(
                {
                    "what": f"peak RSS, {memory['args']['backbone']} {memory['args']['image_size']} px batch "
                    f"{memory['args']['batch_size']}",
                    "target": f"<= {memory['target_gib']:g} GiB",
                    "measured": f"{r['peak_rss_gib']:.2f} GiB",
                    "met": r["within_target"],
                }
            )
    data = common.load_results("data", results)
    if data:
        by = {r["variant"]: r for r in data["rows"]}
        from monai_dclcstp.utils import default_num_workers

        bundle_default = f"CacheDataset + DataLoader({default_num_workers()})"
        default = by.get(bundle_default) or max(data["rows"], key=lambda r: r["pairs_per_s_median"])
        label = "the bundle's default here" if default["variant"] == bundle_default else "fastest measured"
        cpu = [r for r in data["rows"] if r.get("x_trainer_cpu")]
        cpu_text = ""
        if cpu:
            best_cpu = max(cpu, key=lambda r: r["x_trainer_cpu"])
            cpu_text = f"; per core (CPU time): {best_cpu['x_trainer_cpu']:.1f}x ({best_cpu['variant']})"
        rows.append(
            {
                "what": "data pipeline / trainer throughput",
                "target": ">= 1.5x",
                "measured": f"{default['x_trainer']:.1f}x wall ({default['variant']}, {label})" + cpu_text,
                "met": default["x_trainer"] >= 1.5,
            }
        )
    if not rows:
        return "*No speed results yet: run `python benchmarks/run_all.py`.*"
    cols = [("what", "target of issue 9"), ("target", "target"), ("measured", "measured"), ("met", "met")]
    return "### Headline (speed)\n\n" + common.markdown_table(rows, cols)


def build_docs(results: Path, page_path: Path) -> Path:
    page = page_path.read_text() if page_path.is_file() else PAGE_TEMPLATE
    previous = None
    for name in section_names(PAGE_TEMPLATE):  # add sections that an older page lacks, after their predecessor
        if name not in section_names(page):
            block = re.search(rf"<!-- BEGIN {name} -->\n.*?<!-- END {name} -->\n", PAGE_TEMPLATE, re.S).group(0)
            end = f"<!-- END {previous} -->\n" if previous else None
            if end and end in page:
                page = page.replace(end, end + "\n" + block, 1)
            else:
                page = update_section(page, name, "")
        previous = name
    summary = summary_section(results)
    if results.resolve() != common.RESULTS_DIR.resolve():
        summary = (
            f"*Results from `{results}` (a `--quick` smoke run uses tiny sizes: its numbers are not results).*\n\n"
            + summary
        )
    page = update_section(page, "speed-summary", summary)
    for bench in BENCHMARKS:
        md = results / f"{bench.name}.md"
        if not md.is_file():
            continue
        body = md.read_text()
        payload = common.load_results(bench.name, results) or {}
        if bench.name == "step" and payload.get("rows"):
            img_dir = common.DOCS_IMG_DIR if results == common.RESULTS_DIR else results
            payload["plot"] = str(plot_step(payload, img_dir / "step_ratios.png"))
        body += _image_link(payload.get("plot"), page_path, bench.title)
        body += f"\nCommand: `{payload.get('command', '')}`\n"
        page = update_section(page, bench.section, body)
    page_path.parent.mkdir(parents=True, exist_ok=True)
    page_path.write_text(page)
    return page_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke version of every benchmark")
    p.add_argument("--only", nargs="+", default=None, choices=[b.name for b in BENCHMARKS])
    p.add_argument("--group", default=None, choices=sorted({b.group for b in BENCHMARKS}), help="one group only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results)")
    p.add_argument("--docs", type=Path, default=None, help="results page (default: docs/benchmarks.md)")
    p.add_argument("--docs-only", action="store_true", help="only rebuild the page from existing results")
    p.add_argument("--lightly-python", default=str(common.BENCH_DIR / ".venv-lightly" / "bin" / "python"))
    args = p.parse_args()
    out = args.out or (common.RESULTS_DIR / "raw" / "quick" if args.quick else common.RESULTS_DIR)
    page = args.docs or (out / "benchmarks.md" if args.quick else common.DOCS_PAGE)
    failures = []
    if not args.docs_only:
        for bench in BENCHMARKS:
            if args.only and bench.name not in args.only:
                continue
            if args.group and bench.group != args.group:
                continue
            python = sys.executable
            if bench.python == "lightly":
                if not Path(args.lightly_python).is_file():
                    print(
                        f"skip {bench.name}: no benchmark environment at {args.lightly_python} (benchmarks/README.md)"
                    )
                    continue
                python = args.lightly_python
            cmd = [python, str(common.BENCH_DIR / f"bench_{bench.name}.py"), "--device", args.device, "--out", str(out)]
            cmd += ["--quick", "--tag", ""] if args.quick else list(bench.full_args)
            if bench.name == "lightly" and args.quick:
                cmd += ["--plot", str(out / "lightly_knn.png")]
            print(f"== {bench.name}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            rc = subprocess.call(cmd, cwd=common.REPO_ROOT)
            print(f"== {bench.name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
            if rc != 0:
                failures.append(bench.name)
    path = build_docs(out, page)
    print(f"wrote {path}")
    if failures:
        sys.exit(f"benchmarks failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
