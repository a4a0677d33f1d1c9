"""Seconds per training epoch of the modern estimators against bptt, at each task's hardest study level.

The study protocol (:func:`trainers.presets.study_preset`): 32 updates of batch 8 over 256 training
states, then the full train and test losses (256 states each), Adam 1e-3, no clipping. Levels: cart-pole
4 poles, guidance rc = 0.001, quantum control target 5. Strategies with their defaults: ``bptt``,
``combined``, ``shac`` (horizon 32), ``ivw`` (16 perturbations per episode) and ``hig`` (truncation
1e-5). Compilation is excluded (``epoch_seconds`` of the engine); the table gives the median over the
measured epochs and the ratio to ``bptt`` on the same task, and the load average before and after
(the machine may be shared: compare ratios measured close together, not absolute times).

    python benchmarks/strategy_cost.py --epochs 2
    python benchmarks/strategy_cost.py --tasks cartpole:4 --strategies bptt hig --epochs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

from trainers.presets import hardest_level, study_preset
from trainers.training import strategy_fields, train

TASKS = {f"{task}:{hardest_level(task):g}": (task, hardest_level(task)) for task in ("cartpole", "quantum", "guidance")}
STRATEGIES = ("bptt", "combined", "shac", "ivw", "hig")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES),
                        help="strategy spellings (e.g. shac:horizon=16); bptt first gives the ratios")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs per run (>= 1)")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be an integer >= 1, got {args.epochs}")
    for spelling in args.strategies:
        try:
            strategy_fields(spelling)
        except ValueError as error:
            parser.error(str(error))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'task':<16}{'strategy':<10}{'s/epoch':>10}{'vs bptt':>9}{'compile+run s':>15}{'test loss':>12}")
    for task_name in args.tasks:
        task, level = TASKS[task_name]
        baseline = None
        for spelling in args.strategies:
            config = study_preset(task, level, epochs=args.epochs, **strategy_fields(spelling))
            started = time.perf_counter()
            result = train(config, quiet=True)
            wall = time.perf_counter() - started
            seconds = statistics.median(row["epoch_seconds"] for row in result.metrics[1:])
            baseline = seconds if spelling == "bptt" else baseline
            ratio = f"{seconds / baseline:.1f}x" if baseline else "-"
            print(f"{task_name:<16}{spelling:<10}{seconds:>10.3f}{ratio:>9}{wall:>15.1f}"
                  f"{result.metrics[-1]['test_loss']:>12.4g}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
