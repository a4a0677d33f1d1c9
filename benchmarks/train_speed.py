"""Seconds per training epoch for each gradient strategy on each task at the study settings.

Each epoch is the study protocol's: 32 updates of batch 8 over 256 training states, then the full
train and test losses (256 states each). The compile time is excluded; the table gives the median
over the measured epochs and the ratio of each strategy to ``bptt`` on the same task.

    python benchmarks/train_speed.py                 # all tasks, all strategies
    python benchmarks/train_speed.py --epochs 5 --tasks cartpole:2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import jax

from trainers.presets import study_preset
from trainers.training import train

TASKS = {"cartpole:1": ("cartpole", 1), "cartpole:2": ("cartpole", 2), "cartpole:4": ("cartpole", 4),
         "guidance:0.01": ("guidance", 0.01), "quantum:3": ("quantum", 3)}
STRATEGIES = {"bptt": {}, "modified": {}, "network_only": {}, "one_step": {}, "combined": {},
              "truncated(10)": {"strategy": "truncated", "truncate_every": 10},
              "es(32)": {"strategy": "es", "es_population": 32}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--epochs", type=int, default=7, help="epochs per measurement (first is dropped)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), python {platform.python_version()}")
    print(f"{'task':<15}{'strategy':<15}{'s/epoch':>10}{'vs bptt':>10}{'test loss':>12}")
    for task_name in args.tasks:
        task, level = TASKS[task_name]
        baseline = None
        for label in args.strategies:
            options = {"strategy": label, **STRATEGIES[label]}
            config = study_preset(task, level, epochs=args.epochs, **options)
            result = train(config, quiet=True)
            seconds = statistics.median(row["epoch_seconds"] for row in result.metrics[2:])
            baseline = seconds if label == "bptt" else baseline
            ratio = f"{seconds / baseline:.2f}" if baseline else "-"
            print(f"{task_name:<15}{label:<15}{seconds:>10.4f}{ratio:>10}{result.metrics[-1]['test_loss']:>12.4g}",
                  flush=True)


if __name__ == "__main__":
    main()
