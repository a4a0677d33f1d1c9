"""Do concurrent processes use the 2-core machine better than one run at a time?

A sweep's vmapped groups were no faster than the runs one by one (docs/results.md, "Speed"), and one
training process keeps only about 1.3 of the 2 cores busy. This script measures whether two training
processes side by side, for example two ``diffenvs-sweep ... --part I/2`` commands, get more run-epochs
per second out of the machine than one.

For each case it starts one ``bptt`` run of the study protocol in a fresh process and records
``train()``'s median ``epoch_seconds`` (compilation excluded); then ``--processes`` processes at once,
each one run of the same shape (seeds 0, 1, ...), and records each one's median epoch time. The
median is taken over the epochs after the first, so the edges where one process is still compiling
and the other already trains hardly move it. Run-epochs per second = processes / median epoch time;
the speed-up is against the single process. ``--xla-single-thread`` repeats everything with XLA's
CPU thread pool limited to one thread per process (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1``).

    python benchmarks/process_parallel.py
    python benchmarks/process_parallel.py --cases cartpole:4 quantum:3 --xla-single-thread
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

from trainers.experiments.comparison import parse_case

WORKER = """
import json, sys
from trainers.presets import study_preset
from trainers.training import train
task, level, seed, epochs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
result = train(study_preset(task, level, strategy="bptt", seed=seed, epochs=epochs), quiet=True)
print(json.dumps([row["epoch_seconds"] for row in result.metrics[2:]]))
"""
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DEFAULT_EPOCHS = {"CartPole": 120, "GuidanceByRepulsion": 120, "QuantumControl": 25}


def median_epoch_seconds(task: str, level: float, epochs: int, processes: int, xla_flags: str | None) -> list[float]:
    """Start ``processes`` training processes at once; each one's median epoch seconds."""
    environment = dict(os.environ)
    if xla_flags:
        environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") + " " + xla_flags).strip()
    # stderr goes to a file, not a pipe: an unread pipe could fill up and stall a worker being timed.
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(processes)]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, task, json.dumps(level), str(seed), str(epochs)],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=environment)
               for seed, log in enumerate(logs)]
    medians = []
    try:
        for seed, (worker, log) in enumerate(zip(workers, logs)):
            output, _ = worker.communicate()
            if worker.returncode != 0:
                log.seek(0)
                last_line = (log.read().strip().splitlines() or ["(no output)"])[-1]
                raise RuntimeError(f"worker for {task} {level} seed {seed} failed with exit code "
                                   f"{worker.returncode}: {last_line}")
            medians.append(statistics.median(json.loads(output.strip().splitlines()[-1])))
    finally:
        for worker in workers:  # after a failure, do not leave the other workers training
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        for log in logs:
            log.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["cartpole:4", "quantum:3"], help="TASK:LEVEL")
    parser.add_argument("--processes", type=int, default=2, help="processes side by side")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default per task)")
    parser.add_argument("--xla-single-thread", action="store_true",
                        help="also measure with one XLA thread per process")
    args = parser.parse_args()
    if args.processes < 2:
        parser.error(f"--processes must be an integer >= 2, got {args.processes}")
    try:
        cases = [(case, *parse_case(case)) for case in args.cases]
    except ValueError as error:
        parser.error(str(error))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    variants = [("default", None)] + ([("1 XLA thread", SINGLE_THREAD_FLAGS)] if args.xla_single_thread else [])
    print(f"{'case':<14}{'XLA threads':<14}{'processes':>10}{'s/epoch (median per run)':>28}"
          f"{'run-epochs/s':>14}{'speed-up':>10}")
    for case, task, level in cases:
        epochs = args.epochs or DEFAULT_EPOCHS[task]
        reference = None
        for label, flags in variants:
            for processes in (1, args.processes):
                medians = median_epoch_seconds(task, level, epochs, processes, flags)
                rate = sum(1.0 / seconds for seconds in medians)
                reference = reference or rate
                shown = " ".join(f"{seconds:.3f}" for seconds in medians)
                print(f"{case:<14}{label:<14}{processes:>10}{shown:>28}{rate:>14.2f}{rate / reference:>9.2f}x",
                      flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
