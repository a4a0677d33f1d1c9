"""Run-epochs per second of a sweep with the local executor and with the Ray executor, side by side.

The grid: ``--groups`` groups of ``--runs-per-group`` runs (one task and level, ``bptt``, no clipping,
seeds 0, 1, ...; ``max_group`` cuts them into equal groups) of ``--epochs`` epochs each, trained four
times into fresh directories:

* local: ``run_sweep`` (the groups one after the other in this process, each group on one device);
* local, 2 devices: the same, each group's runs split over two CPU host devices (``--devices 2``; the
  process asks for two host devices before jax starts, so both local rows run in the same setting);
* Ray, one task at a time: a local Ray cluster of this machine, each task reserving every CPU, so the
  tasks run one after the other like the local executor and the difference is Ray's overhead (task
  dispatch, the worker process, its own compilation, the driver's polling);
* Ray, one task per CPU: the same cluster, each task reserving one CPU (what a cluster of that many
  workers does, here on the cores of one machine).

Every figure is the wall time of the whole sweep call (compilation included); the Ray cluster's start
is printed apart (a cluster is started once for many sweeps). With ``--repeats R`` the four sweeps
run R times in turn (local, local on 2 devices, Ray, Ray, then again) and the best wall time of each is kept, which is the
figure least disturbed by other work on a shared machine (from the second round on, the driver and the
Ray workers reuse the programs they compiled); the median epoch time of the runs (from
their metrics) shows how busy the cores were during each. The metrics of all one-device sweeps (local
and Ray) are checked to be bit-identical, and those of the two-device sweeps among themselves (epoch
times excluded; two devices agree with one only to float rounding).

    python benchmarks/sweep_scaling.py
    python benchmarks/sweep_scaling.py --task cartpole --level 1 --groups 4 --runs-per-group 2 --epochs 100 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax

from trainers import rundir
from trainers.engine import request_host_devices
from trainers.experiments.ray_executor import import_ray, run_sweep_on_ray, start_local_cluster
from trainers.experiments.sweep import SweepResult, SweepSpec, run_sweep


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
    parser.add_argument("--repeats", type=int, default=1, help="run the four sweeps this many times in turn")
    args = parser.parse_args()
    request_host_devices(2)
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
    # (name, Ray CPUs per task or None for the local executor, devices per group)
    executors = (("local", None, 1), ("local, 2 devices", None, 2), ("ray, one task at a time", cpus, 1),
                 ("ray, one task per CPU", 1, 1))
    walls: dict[str, list[float]] = {name: [] for name, _, _ in executors}
    epoch_times: dict[str, list[float]] = {name: [] for name, _, _ in executors}
    ray = import_ray()
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        start_local_cluster(num_cpus=cpus)
        cluster_seconds = time.perf_counter() - started
        reference: dict[int, list[str]] = {}
        try:
            for repeat in range(args.repeats):
                for index, (name, cpus_per_task, devices) in enumerate(executors):
                    out = Path(root, f"{repeat}-{index}")
                    started = time.perf_counter()
                    if cpus_per_task is None:
                        result = run_sweep(spec, out, max_group=args.runs_per_group, quiet=True, devices=devices)
                    else:
                        result = run_sweep_on_ray(spec, out, cpus_per_task=cpus_per_task,
                                                  max_group=args.runs_per_group, quiet=True, devices=devices)
                    walls[name].append(time.perf_counter() - started)
                    epoch_times[name] += [row["epoch_seconds"] for status in result.runs
                                          for row in rundir.read_metrics(status.run.run_dir)[2:]]
                    metrics = _metrics_without_time(result)
                    # bit-identical among the sweeps on one device; two devices agree with one only to
                    # rounding (other batch shapes per device), so they are compared among themselves
                    reference.setdefault(devices, metrics)
                    if metrics != reference[devices]:
                        raise SystemExit(f"{name}: the metrics differ from the first {devices}-device sweep's")
        finally:
            ray.shutdown()
    print(f"Ray cluster start (once, not in the rows): {cluster_seconds:.1f} s")
    print(f"{'executor':<26}{'tasks at once':>14}{'best wall s':>12}{'run-epochs/s':>14}{'vs local':>10}"
          f"{'median epoch s':>16}")
    best_local = min(walls["local"])
    for name, cpus_per_task, _ in executors:
        concurrent = 1 if cpus_per_task is None else min(cpus // cpus_per_task, args.groups)
        best = min(walls[name])
        print(f"{name:<26}{concurrent:>14}{best:>12.1f}{run_epochs / best:>14.1f}{best_local / best:>9.2f}x"
              f"{statistics.median(epoch_times[name]):>16.3f}")
    print("all wall times (s): " + "; ".join(f"{name}: {', '.join(f'{w:.1f}' for w in walls[name])}"
                                            for name, _, _ in executors))
    print("metrics bit-identical across all one-device sweeps (local and Ray) and across the two-device sweeps "
          "(epoch times excluded): True")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
