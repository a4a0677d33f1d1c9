"""Training-epoch seconds in float32 and in float64 at the hardest level of each task.

For each task (cart-pole 4 poles, guidance rc 0.001, quantum control target 5; the study protocol:
256 + 256 states, batch 8, Adam 1e-3) and strategy, trains ``--epochs`` epochs in each precision,
alternating the precisions for ``--repeats`` rounds, and prints the median epoch time (compilation
excluded) and the float64 / float32 ratio.

    .venv/bin/python benchmarks/precision_cost.py --epochs 3 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics

from trainers.presets import hardest_level, study_preset
from trainers.training import strategy_fields, train

CASES = tuple((task, hardest_level(task)) for task in ("cartpole", "guidance", "quantum"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=["bptt", "es"],
                        help="strategy spellings (e.g. ivw:population=8)")
    args = parser.parse_args()
    for spelling in args.strategies:
        try:
            strategy_fields(spelling)
        except ValueError as error:
            parser.error(str(error))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{'task':<16} {'strategy':<9} {'float32 s':>10} {'float64 s':>10} {'ratio':>6}")
    for task, level in CASES:
        for strategy in args.strategies:
            seconds: dict[str, list[float]] = {"float32": [], "float64": []}
            for round_ in range(args.repeats):
                order = ("float32", "float64") if round_ % 2 == 0 else ("float64", "float32")
                for precision in order:
                    config = study_preset(task, level, **strategy_fields(strategy), epochs=args.epochs,
                                          precision=precision)
                    rows = train(config, quiet=True).metrics
                    seconds[precision] += [row["epoch_seconds"] for row in rows[1:]]
            single, double = (statistics.median(seconds[p]) for p in ("float32", "float64"))
            print(f"{task + ':' + str(level):<16} {strategy:<9} {single:>10.3f} {double:>10.3f} {double / single:>6.2f}")


if __name__ == "__main__":
    main()
