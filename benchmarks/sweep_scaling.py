"""Run-epochs per second of a sweep with the local executor and with the Ray executor, side by side.

The grid: ``--groups`` groups of ``--runs-per-group`` runs (one task and level, ``bptt``, no clipping,
seeds 0, 1, ...; ``max_group`` cuts them into equal groups) of ``--epochs`` epochs each, trained three
times into fresh directories:

* local: ``run_sweep`` (the groups one after the other in this process);
* Ray, one task at a time: a local Ray cluster of this machine, each task reserving every CPU, so the
  tasks run one after the other like the local executor and the difference is Ray's overhead (task
  dispatch, the worker process, its own compilation, the driver's polling);
* Ray, one task per CPU: the same cluster, each task reserving one CPU (what a cluster of that many
  workers does, here on the cores of one machine).

Every figure is the wall time of the whole sweep call (compilation included); the Ray cluster's start
is printed apart (a cluster is started once for many sweeps). The metrics of the three sweeps are
checked to be equal (epoch times excluded).

    python benchmarks/sweep_scaling.py
    python benchmarks/sweep_scaling.py --task cartpole --level 1 --groups 4 --runs-per-group 2 --epochs 100
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import jax

from trainers import rundir
from trainers.ray_executor import import_ray, run_sweep_on_ray, start_local_cluster
from trainers.sweep import SweepResult, SweepSpec, run_sweep


def _metrics_without_time(result: SweepResult) -> list[str]:
    return [repr([{key: value for key, value in row.items() if key != "epoch_seconds"}
                  for row in rundir.read_metrics(status.run.run_dir)]) for status in result.runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="cartpole")
    parser.add_argument("--level", type=float, default=1)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--runs-per-group", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run (the group's length)")
    args = parser.parse_args()
    level = int(args.level) if args.level == int(args.level) and args.task != "guidance" else args.level
    runs = args.groups * args.runs_per_group
    spec = SweepSpec(tasks=(args.task,), levels=(level,), strategies=("bptt",), clips=("none",),
                     seeds=tuple(range(runs)), options={"epochs": args.epochs, "checkpoint_every": 10})
    cpus = os.cpu_count() or 1
    run_epochs = runs * args.epochs
    print(f"machine: {platform.machine()}, {cpus} cores, jax {jax.__version__} ({jax.default_backend()}), "
          f"ray {import_ray().__version__}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"grid: {args.task} level {level}, {args.groups} groups x {args.runs_per_group} runs x {args.epochs} "
          f"epochs = {run_epochs} run-epochs (study protocol otherwise)")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        local = run_sweep(spec, Path(root, "local"), max_group=args.runs_per_group, quiet=True)
        rows.append(("local", 1, time.perf_counter() - started))
        started = time.perf_counter()
        start_local_cluster(num_cpus=cpus)
        cluster_seconds = time.perf_counter() - started
        ray = import_ray()
        try:
            results = [local]
            for name, cpus_per_task in (("ray, one task at a time", cpus), ("ray, one task per CPU", 1)):
                started = time.perf_counter()
                results.append(run_sweep_on_ray(spec, Path(root, f"ray{cpus_per_task}"), cpus_per_task=cpus_per_task,
                                                max_group=args.runs_per_group, quiet=True))
                rows.append((name, min(cpus // cpus_per_task, args.groups), time.perf_counter() - started))
        finally:
            ray.shutdown()
        same = all(_metrics_without_time(result) == _metrics_without_time(local) for result in results)
    print(f"Ray cluster start (once, not in the rows): {cluster_seconds:.1f} s")
    print(f"{'executor':<26}{'tasks at once':>14}{'wall s':>9}{'run-epochs/s':>14}{'vs local':>10}")
    for name, concurrent, seconds in rows:
        print(f"{name:<26}{concurrent:>14}{seconds:>9.1f}{run_epochs / seconds:>14.1f}"
              f"{rows[0][2] / seconds:>9.2f}x")
    print(f"metrics equal to the local executor's (epoch times excluded): {same}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
