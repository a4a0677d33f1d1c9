"""The study's strategies on differentiable environments of gymnax and brax: the tables and figure of
docs/results-external.md.

    python docs/external_tasks.py docs/results/external_tasks.csv.gz --plot docs/images/external_tasks.png

The runs: every run of the archives or run directories given whose task is one of :data:`TASKS`
(trained with its preset, ``trainers.presets.EXTERNAL_PRESETS``), grouped by task and strategy.

The results table, per task and strategy: the seeds, the epochs, the test loss at epoch 0 and at the
end (the median over the last 5 % of the epochs), each as the median over the seeds with their
min-max, and the return at the end in the environment's own units: the sum of its rewards over the
horizon, the mean over the test states (the loss is its negative). The verdict column says whether
``combined`` beats ``bptt`` by more than the seed spread: its worst seed is better than ``bptt``'s best.

The figure: one panel per task, the return on the test states against the epoch, the median over the
seeds (moving average over 10 epochs) with their min-max as a band.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from diffenvs.registry import canonical_name
from trainers.experiments.plotting import (RunRecord, draw_seed_band, final_loss, find_runs, median_range,
                                           pyplot, save_figure, seeds_epochs_initial, strategy_label,
                                           tables_and_figure_command)

TASKS = {"gymnax:Pendulum-v1": "Pendulum-v1 (gymnax)", "gymnax:Reacher-misc": "Reacher-misc (gymnax)",
         "gymnax:Swimmer-misc": "Swimmer-misc (gymnax)",
         "brax:inverted_double_pendulum": "inverted_double_pendulum (brax)"}
"""The tasks of the page, in its order, with their titles."""
METHODS = ("bptt", "combined", "shac")
SMOOTH = 10


def collect(paths: Sequence[str | Path]) -> dict[str, dict[str, list[RunRecord]]]:
    """The runs by task and strategy (of :data:`METHODS`), each list sorted by seed."""
    runs: dict[str, dict[str, list[RunRecord]]] = {}
    for record in find_runs(paths):
        task = canonical_name(str(record.config.get("task", "")))
        label = strategy_label(record.config)
        if task in TASKS and label in METHODS and len(record.columns["test_loss"]) > 1:
            runs.setdefault(task, {}).setdefault(label, []).append(record)
    for methods in runs.values():
        for records in methods.values():
            records.sort(key=lambda record: int(record.config.get("seed", 0)))
    if not runs:
        raise ValueError(f"no runs of {', '.join(TASKS)} in {list(map(str, paths))}")
    return runs


def combined_beats_bptt(methods: dict[str, list[RunRecord]]) -> str:
    """"yes" when every ``combined`` seed ends below every ``bptt`` seed (lower loss), "no, the reverse"
    when every ``bptt`` seed ends below every ``combined`` seed, else "no: within the seed spread"."""
    if "combined" not in methods or "bptt" not in methods:
        return "–"
    combined = [final_loss(record) for record in methods["combined"]]
    bptt = [final_loss(record) for record in methods["bptt"]]
    if max(combined) < min(bptt):
        return "yes"
    if max(bptt) < min(combined):
        return "no: `bptt` is better"
    return "no: within the seed spread"


def results_markdown(paths: Sequence[str | Path]) -> str:
    """The results table (markdown): one row per task and strategy."""
    runs = collect(paths)
    lines = ["| task | strategy | seeds | epochs | test loss at epoch 0 | at the end | return at the end | "
             "`combined` beats `bptt` by more than the seed spread |",
             "|---|---|---|---|---|---|---|---|"]
    for task, title in TASKS.items():
        methods = runs.get(task, {})
        verdict = combined_beats_bptt(methods)
        for label in (label for label in METHODS if label in methods):
            records = methods[label]
            seeds, epochs, initial = seeds_epochs_initial(records)
            final = [final_loss(record) for record in records]
            lines.append(f"| {title} | `{label}` | {seeds} | {epochs} | {median_range(initial)} | "
                         f"{median_range(final)} | {median_range([-value for value in final])} | "
                         f"{verdict if label == 'combined' else ''} |")
    return "\n".join(lines) + "\n"


def plot(paths: Sequence[str | Path], out: Path) -> Path:
    """The figure: one panel per task, the test return against the epoch."""
    plt = pyplot()
    runs = collect(paths)
    tasks = [task for task in TASKS if task in runs]
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 3.8), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for index, label in enumerate(METHODS):
            records = runs[task].get(label)
            if not records:
                continue
            draw_seed_band(axis, records, colour=f"C{index}", label=label, smooth=SMOOTH, sign=-1.0)
        axis.set_title(TASKS[task], fontsize=10)
        axis.set_xlabel("epoch")
        axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("return on the test states")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(figure, out)


def main(argv: Sequence[str] | None = None) -> int:
    return tables_and_figure_command(__doc__, results_markdown, plot, argv)


if __name__ == "__main__":
    sys.exit(main())
