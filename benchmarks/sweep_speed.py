"""Seconds per epoch of a sweep group trained as ONE vmapped program vs the same runs one by one.

The group is a study level (default cart-pole, 2 poles, the study protocol: 256 + 256 states, batch 8):
4 study strategies x 3 clipping modes x 1 seed = 12 runs. Compilation is excluded from every figure; each
figure is the wall time of one epoch of ALL the runs, the minimum over the measured epochs (the first
measured epoch is dropped; the minimum is the figure least disturbed by other work on the machine):

* one by one: the sum over the runs of ``train()``'s median ``epoch_seconds``;
* vmapped, one group (``split_combined=False``): the group epoch time (every run carries two backward
  fields because the group holds ``combined``);
* vmapped, split (``run_sweep``'s default): ``combined`` in its own group (two fields) and the other
  strategies in a second group (one field), the sum of the two groups' epoch times.

    python benchmarks/sweep_speed.py
    python benchmarks/sweep_speed.py --task cartpole --level 4 --epochs 4 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax

from trainers import rundir
from trainers.presets import study_preset
from trainers.experiments.sweep import STUDY_STRATEGIES, SweepSpec, run_sweep
from trainers.training import CLIP_MODES, train


def _group_seconds(spec: SweepSpec, root: str, **options) -> tuple[float, float]:
    """(median group epoch seconds, wall seconds of the whole sweep call incl. compilation)."""
    started = time.perf_counter()
    result = run_sweep(spec, root, quiet=True, **options)
    wall = time.perf_counter() - started
    # every run of a group records the group's epoch time; a spec here makes exactly one group
    rows = rundir.read_metrics(result.runs[0].run.run_dir)
    return min(row["epoch_seconds"] for row in rows[2:]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole")
    parser.add_argument("--level", type=float, default=2)
    parser.add_argument("--strategies", nargs="+", default=list(STUDY_STRATEGIES))
    parser.add_argument("--clips", nargs="+", default=list(CLIP_MODES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (the first is dropped)")
    parser.add_argument("--skip-one-by-one", action="store_true")
    args = parser.parse_args()
    level = int(args.level) if args.level == int(args.level) and args.task != "guidance" else args.level
    options = {"epochs": args.epochs, "checkpoint_every": args.epochs}
    runs = len(args.strategies) * len(args.clips) * len(args.seeds)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()}), "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"group: {args.task} level {level}, {runs} runs ({', '.join(args.strategies)} x {', '.join(args.clips)} "
          f"x seeds {args.seeds}), study protocol, {args.epochs} epochs per measurement")
    table = []
    with tempfile.TemporaryDirectory() as root:
        spec = SweepSpec(tasks=(args.task,), levels=(level,), strategies=tuple(args.strategies),
                         clips=tuple(args.clips), seeds=tuple(args.seeds), options=options)
        seconds, wall = _group_seconds(spec, os.path.join(root, "one"), split_combined=False)
        table.append(("vmapped, one group", seconds, wall))
        if "combined" in args.strategies and len(args.strategies) > 1:
            others = tuple(s for s in args.strategies if s != "combined")
            split = 0.0
            wall = 0.0
            for strategies in (("combined",), others):
                part = SweepSpec(tasks=(args.task,), levels=(level,), strategies=strategies,
                                 clips=tuple(args.clips), seeds=tuple(args.seeds), options=options)
                seconds, part_wall = _group_seconds(part, os.path.join(root, "split"))
                split += seconds
                wall += part_wall
            table.append(("vmapped, combined split off", split, wall))   # run_sweep's default
    if not args.skip_one_by_one:
        total, wall = 0.0, 0.0
        for strategy in args.strategies:
            for clip in args.clips:
                for seed in args.seeds:
                    started = time.perf_counter()
                    result = train(study_preset(args.task, level, strategy=strategy, clip=clip, seed=seed,
                                                **options), quiet=True)
                    wall += time.perf_counter() - started
                    total += min(row["epoch_seconds"] for row in result.metrics[2:])
        table.append(("one by one (train)", total, wall))
    reference = table[-1][1]
    print(f"{'mode':<30}{'s/epoch (all runs)':>20}{'speed-up':>10}{'wall incl. compile':>20}")
    for label, seconds, wall in table:
        print(f"{label:<30}{seconds:>20.3f}{reference / seconds:>9.2f}x{wall:>19.1f}s")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
