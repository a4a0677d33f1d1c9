"""Per-run milestones of sweep runs, as the markdown tables of docs/results.md.

    python docs/run_milestones.py docs/results/quantum.csv.gz --level 3 --epochs 50 300 600 800

For every run of the archive(s) or run directories given (optionally of one complexity level): the
test loss at epoch 0, the best test loss and its epoch, the median test loss over the 50 epochs
around each given epoch (epochs E-25 to E+24) and the median over the last 50 epochs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from trainers.experiments.plotting import find_runs, run_level, strategy_label, strategy_rank

CLIP_NAMES = {"none": "no clipping", "norm": "clip by norm 1", "value": "clip by value 1"}
WINDOW = 50


def milestones_markdown(paths: Sequence[str | Path], epochs: Sequence[int], level: float | None = None) -> str:
    """The table: one row per run, sorted by strategy (as in the figures), clipping mode and seed."""
    records = [record for record in find_runs(paths)
               if level is None or float(run_level(record.config)) == float(level)]
    if not records:
        raise ValueError(f"no runs{'' if level is None else f' of level {level:g}'} in {list(map(str, paths))}")
    clip_order = list(CLIP_NAMES)

    def key(record):
        return (strategy_rank(strategy_label(record.config)), clip_order.index(record.config.get("clip", "none")),
                record.config.get("seed", 0))

    header = " | ".join(str(epoch) if index else f"epoch {epoch}" for index, epoch in enumerate(epochs))
    lines = [f"| run | seed | test loss at epoch 0 | best (epoch) | {header} | median of the last {WINDOW} epochs |",
             "|---|---|---|---|" + "---|" * (len(epochs) + 1)]
    for record in sorted(records, key=key):
        losses, run_epochs = record.columns["test_loss"], record.columns["epoch"]
        best = int(np.nanargmin(losses))
        cells = []
        for epoch in epochs:
            window = losses[(run_epochs >= epoch - WINDOW // 2) & (run_epochs < epoch + WINDOW // 2)]
            cells.append(f"{np.nanmedian(window):.1f}" if window.size else "–")
        clip = CLIP_NAMES.get(record.config.get("clip"), str(record.config.get("clip")))
        if record.failed:
            clip += f" (stopped after epoch {int(run_epochs[-1])}: non-finite)"
        lines.append(f"| `{strategy_label(record.config)}`, {clip} | {record.config.get('seed', 0)} | "
                     f"{losses[0]:.1f} | {losses[best]:.1f} ({int(run_epochs[best])}) | {' | '.join(cells)} | "
                     f"{np.nanmedian(losses[-WINDOW:]):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run archives (.csv.gz) or run directories/roots")
    parser.add_argument("--level", type=float, default=None, help="only runs of this complexity level")
    parser.add_argument("--epochs", nargs="+", type=int, default=[50, 300, 600, 800],
                        help="epochs at which to report the median over 50 epochs")
    args = parser.parse_args(argv)
    try:
        print(milestones_markdown(args.paths, args.epochs, args.level), end="")
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
