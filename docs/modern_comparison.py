"""The modern gradient estimators beside the study's at the hardest levels: the table and figure of
docs/results.md ("Modern gradient estimators at the hardest levels").

    python docs/modern_comparison.py docs/results/cartpole.csv.gz docs/results/guidance.csv.gz \\
        docs/results/quantum.csv.gz --plot docs/images/modern_estimators.png

The runs: the runs without clipping at cart-pole 4 poles, guidance rc 0.001 and quantum control
target 5 found in the archives or run directories given, of the methods with a measured cost
(:data:`COST`: the study's ``bptt`` and ``combined``, and ``shac``, ``ivw``, ``hig``; a float64 run is
a method of its own, labelled ``, float64``).

The table, per task and method: the seeds, the epochs, the cost of one epoch against ``bptt``
(:data:`COST`, measured on the idle machine: docs/strategies.md, "Cost per epoch", and
docs/extending.md for float64), the test loss at epoch 0, at the end and at the compute of 1000
``bptt`` epochs (at epoch 1000 / cost), each as the median over the seeds with their min-max. A loss
"at epoch E" is the median over the last 5 % of the epochs up to E (epochs 951-1000 at E = 1000, the
study's 50; the single epoch E when E < 40), so that short runs are read at their end too.

The figure: one panel per task, the test loss against the cost in ``bptt`` epochs (epoch x cost
ratio, so that equal x is equal compute), the median over the seeds (moving average over 30 epochs,
fewer for short runs) with the seeds' min-max as a band.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from diffenvs.registry import canonical_name
from trainers.experiments.plotting import (RunRecord, draw_seed_band, final_loss, find_runs, loss_at_epoch,
                                           median_range, run_level, pyplot, save_figure, seeds_epochs_initial,
                                           strategy_label, tables_and_figure_command)
from trainers.presets import hardest_level

HARDEST = {task: hardest_level(task) for task in ("cartpole", "guidance", "quantum")}
TASK_TITLES = {"cartpole": "cart-pole, 4 poles", "guidance": "guidance, rc 0.001", "quantum": "quantum control, target 5"}
COST = {
    "cartpole": {"bptt": 1.0, "combined": 1.1, "shac": 3.4, "ivw": 6.4, "hig": 45.6},
    "guidance": {"bptt": 1.0, "combined": 1.3, "shac": 2.9, "ivw": 6.8, "hig": 298.0},
    "quantum": {"bptt": 1.0, "combined": 1.3, "shac": 1.4, "ivw": 5.0, "hig": 12.9, "ivw, float64": 6.9},
}
"""Seconds per epoch of each method over those of ``bptt`` (float32) on the same task, measured with
``benchmarks/strategy_cost.py`` and ``benchmarks/precision_cost.py`` (ivw in float64: 11.084 s against
1.597 s) on the idle 2-core machine."""
METHOD_ORDER = ("bptt", "combined", "shac", "ivw", "ivw, float64", "hig")
BUDGET = 1000
SMOOTH = 30


def task_key(config: dict) -> str | None:
    """``cartpole``, ``guidance`` or ``quantum`` for a run at that task's hardest level without clipping."""
    task = canonical_name(str(config.get("task", "")))
    for key, level in HARDEST.items():
        if task == canonical_name(key) and float(run_level(config)) == float(level) and config.get("clip") == "none":
            return key
    return None


def method_label(config: dict) -> str:
    """The strategy label, with ``, float64`` for a float64 run."""
    label = strategy_label(config)
    return f"{label}, float64" if config.get("precision") == "float64" else label


def _rank(label: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(label) if label in METHOD_ORDER else len(METHOD_ORDER), label)


def collect(paths: Sequence[str | Path]) -> dict[str, dict[str, list[RunRecord]]]:
    """The runs by task key and method label, each list sorted by seed."""
    runs: dict[str, dict[str, list[RunRecord]]] = {}
    for record in find_runs(paths):
        key = task_key(record.config)
        label = method_label(record.config)
        if key is not None and label in COST[key] and len(record.columns["test_loss"]) > 1:   # a trained epoch
            runs.setdefault(key, {}).setdefault(label, []).append(record)
    for methods in runs.values():
        for records in methods.values():
            records.sort(key=lambda record: int(record.config.get("seed", 0)))
    return runs


def loss_at_compute(record: RunRecord, cost: float, budget: float = BUDGET) -> float:
    """The test loss when the run had spent the compute of ``budget`` ``bptt`` epochs: at epoch
    ``budget / cost`` (rounded down; the last epoch when it ran fewer)."""
    return loss_at_epoch(record, int(budget / cost))


def comparison_markdown(paths: Sequence[str | Path]) -> str:
    """The table (markdown): one row per task and method."""
    runs = collect(paths)
    if not runs:
        raise ValueError(f"no runs without clipping at the hardest levels in {list(map(str, paths))}")
    lines = ["| task | method | seeds | epochs | cost per epoch (× `bptt`) | test loss at epoch 0 | "
             "at the end | at the compute of 1000 `bptt` epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for key in HARDEST:
        for label in sorted(runs.get(key, {}), key=_rank):
            records = runs[key][label]
            seeds, epochs, initial = seeds_epochs_initial(records)
            lines.append(f"| {TASK_TITLES[key]} | `{label}` | {seeds} | {epochs} | {COST[key][label]:g} | "
                         f"{median_range(initial)} | {median_range([final_loss(record) for record in records])} | "
                         f"{median_range([loss_at_compute(record, COST[key][label]) for record in records])} |")
    return "\n".join(lines) + "\n"


def plot(paths: Sequence[str | Path], out: Path) -> Path:
    """The figure: one panel per task, test loss against the cost in ``bptt`` epochs."""
    plt = pyplot()
    runs = collect(paths)
    keys = [key for key in HARDEST if key in runs]
    if not keys:
        raise ValueError(f"no runs without clipping at the hardest levels in {list(map(str, paths))}")
    figure, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.2), squeeze=False)
    colours = {label: f"C{index}" for index, label in enumerate(METHOD_ORDER)}
    for axis, key in zip(axes[0], keys):
        for label in sorted(runs[key], key=_rank):
            records = runs[key][label]
            draw_seed_band(axis, records, colour=colours.get(label, "k"), label=label, smooth=SMOOTH,
                           epoch_scale=COST[key][label])
        axis.set_yscale("log")
        axis.set_title(TASK_TITLES[key])
        axis.set_xlabel("cost in bptt epochs (epoch × cost ratio)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("test loss")
    legend: dict[str, object] = {}                  # one entry per method over all panels
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label.split(" (")[0], handle)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=9,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(figure, out)


def main(argv: Sequence[str] | None = None) -> int:
    return tables_and_figure_command(__doc__, comparison_markdown, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
