"""Median epoch time of one sweep group on 1 and on 2 local devices (CPU host devices here).

The group: ``--runs`` runs of ``--task`` at ``--level`` (default: cart-pole with 4 poles; the study
protocol: 256 + 256 states, batch 8, Adam 1e-3), ``bptt``, seeds 0..runs-1, trained for ``--epochs`` epochs as ONE vmapped program, once
with the runs on one device and once split over two (jax sharding of the run axis). Each measurement
runs in a fresh process with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the same for both,
so only the split differs); ``--repeats`` rounds alternate the order. Prints a table: device count,
median epoch seconds over all epochs of all rounds, speed-up against one device.

    .venv/bin/python benchmarks/device_scaling.py --runs 4 --poles 4 --epochs 5 --repeats 2
    .venv/bin/python benchmarks/device_scaling.py --task quantum --level 3 --runs 4 --epochs 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from trainers.presets import hardest_level

WORKER = """
import json, sys
from trainers import rundir
from trainers.experiments.sweep import SweepSpec, run_sweep
out, devices, runs, epochs, task = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5]), sys.argv[6]
level = float(sys.argv[4]) if task == "guidance" else int(sys.argv[4])
spec = SweepSpec(tasks=(task,), levels=(level,), strategies=("bptt",), clips=("none",),
                 seeds=tuple(range(runs)), options={"epochs": epochs})
result = run_sweep(spec, out, quiet=True, devices=devices)
rows = rundir.read_metrics(result.runs[0].run.run_dir)
print(json.dumps([row["epoch_seconds"] for row in rows[1:]]))
"""


def measure(devices: int, runs: int, level: str, epochs: int, task: str) -> list[float]:
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", WORKER, out, str(devices), str(runs), level, str(epochs), task],
                                env=environment, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--task", default="cartpole", choices=("cartpole", "guidance", "quantum"))
    parser.add_argument("--level", default=None, help="complexity level (default: 4 poles, rc 0.001, target 5)")
    parser.add_argument("--poles", type=int, default=None, help="cart-pole: the same as --level")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    level = args.level or (str(args.poles) if args.poles else str(hardest_level(args.task)))
    seconds: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.repeats):
        for devices in ((1, 2) if round_ % 2 == 0 else (2, 1)):
            seconds[devices] += measure(devices, args.runs, level, args.epochs, args.task)
    base = statistics.median(seconds[1])
    print(f"group of {args.runs} {args.task} runs, level {level}, study protocol, {args.epochs} epochs x "
          f"{args.repeats} rounds; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'devices':>8} {'median epoch s':>15} {'min':>8} {'max':>8} {'speed-up':>9}")
    for devices, values in seconds.items():
        median = statistics.median(values)
        print(f"{devices:>8} {median:>15.3f} {min(values):>8.3f} {max(values):>8.3f} {base / median:>8.2f}x")


if __name__ == "__main__":
    main()
