"""What the full comparison grid of issue 4 costs in floating-point operations, and what that means in time.

For each task (and each cart-pole pole count), XLA's cost analysis gives the FLOPs of one time step of a
`bptt` gradient and of a forward rollout for a batch of 8 (the study's batch; environments with
``num_steps = 1``, since XLA counts a loop body once). One study epoch is then

    num_steps x (num_train / batch x grad step + (num_train + num_test) / batch x forward step)

(the updates, then the full training- and test-set losses). The grid: the study's levels x 4 strategies x
3 clipping modes x 1 seed, 2 more seeds at the hardest level of each task, and `truncated(k)` (as
`bptt`) and `es` (population + 1 forward rollouts per update) at the hardest level, 3 clipping modes, 1
seed; 1000 epochs each. `combined`'s second backward sweep is counted as a `bptt` gradient (it is
1.0-1.1x `bptt` in docs/performance.md).

The machine's rate is measured twice: a large float32 matrix product (what XLA's CPU backend reaches
at best) and one timed `bptt` epoch per task (what training reaches). The table prints FLOPs per epoch,
the achieved rate and the grid's time at both rates. A second table prints what ONE run of each task
costs (a `bptt` run, and a timed `es` run at the hardest levels): with one run per task on a cluster
(docs/cluster.md) the grid needs about the time of the longest of them.

``--workers N ...`` adds the expected wall time of the grid on N workers (each like this machine, one
run per task: ``diffenvs-sweep --max-group 1``): the runs' times dealt longest first to the worker that
is free first, as the Ray executor submits them.

    python benchmarks/grid_cost.py [--epochs-timed 3] [--skip-es] [--workers 1 16 64 256]
"""

from __future__ import annotations

import argparse
import heapq
import os
import platform
import time

import jax
import jax.numpy as jnp

from trainers.presets import study_preset
from trainers.rollout import rollout_loss
from trainers.training import initial_states, train

ES_POPULATION = 32
CASES = (("cartpole", 1), ("cartpole", 2), ("cartpole", 3), ("cartpole", 4), ("guidance", 0.001), ("quantum", 3))
# runs per case in the grid: 12 per level (4 strategies x 3 clips); at the hardest level 24 more seeds
# (2 x 12) and truncated + es (3 clips each)
GUIDANCE_LEVELS, QUANTUM_LEVELS = 4, 3


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis["flops"])


def step_flops(task: str, level) -> tuple[float, float, int]:
    """FLOPs of one time step for a batch of 8: (bptt gradient, forward rollout), and the horizon."""
    horizon = study_preset(task, level).make_env().num_steps()
    config = study_preset(task, level, strategy="bptt", env_params={"num_steps": 1})
    problem = config.make_problem()
    env = problem.env
    key = jax.random.PRNGKey(0)
    params, states = problem.controller.init(key), initial_states(env, key, config.batch_size)
    loss = lambda p, s: rollout_loss(problem, p, s)
    grad = _flops(jax.jit(jax.grad(loss)).lower(params, states).compile())
    forward = _flops(jax.jit(loss).lower(params, states).compile())
    return grad, forward, horizon


def epoch_seconds(task: str, level, epochs: int, strategy: str = "bptt") -> float:
    """Best of ``epochs`` timed study epochs of one run (``train``'s epoch times, compilation excluded)."""
    options = {"es_population": ES_POPULATION} if strategy == "es" else {}
    result = train(study_preset(task, level, strategy=strategy, epochs=epochs, **options), quiet=True)
    return min(row["epoch_seconds"] for row in result.metrics[1:])


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a float32 size x size matrix product (best of ``repeats``)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    product = jax.jit(jnp.dot).lower(a, a).compile()
    jax.block_until_ready(product(a, a))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(product(a, a))
        best = min(best, time.perf_counter() - started)
    return 2.0 * size ** 3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-timed", type=int, default=3, help="timed bptt epochs per task (best is kept)")
    parser.add_argument("--skip-es", action="store_true", help="do not time es epochs for the per-run table")
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="print the grid's expected wall time on these numbers of workers")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"({jax.default_backend()}), python {platform.python_version()}")
    peak = matmul_rate()
    print(f"float32 2048x2048 matrix product: {peak / 1e9:.1f} GFLOP/s")
    header = (f"{'case':<20}{'grad/batch':>11}{'fwd/batch':>10}{'GFLOP/epoch':>13}{'s/epoch':>9}{'GFLOP/s':>9}"
              f"{'runs':>6}{'grid GFLOP':>12}{'h at rate':>11}{'h at matmul':>13}")
    print(header)
    total_flops = total_hours = 0.0
    per_run = []
    for task, level in CASES:
        grad, forward, horizon = step_flops(task, level)
        config = study_preset(task, level)
        batches = config.num_train // config.batch_size
        evaluations = (config.num_train + config.num_test) / config.batch_size
        epoch = horizon * (batches * grad + evaluations * forward)
        es_epoch = horizon * (batches * (ES_POPULATION + 1) * forward + evaluations * forward)
        seconds = epoch_seconds(task, level, args.epochs_timed)
        rate = epoch / seconds
        levels = GUIDANCE_LEVELS if task == "guidance" else QUANTUM_LEVELS if task == "quantum" else 1
        hardest = (task, level) in (("cartpole", 4), ("guidance", 0.001), ("quantum", 3))
        runs = 12 * levels + (24 + 3 if hardest else 0)               # + truncated (3 clips) at the hardest
        grid = config.epochs * (runs * epoch + (3 * es_epoch if hardest else 0))
        hours = grid / rate / 3600
        total_flops += grid
        total_hours += hours
        name = f"{task}:{level}" + (f" x{levels} lvls" if levels > 1 else "")
        es_seconds = epoch_seconds(task, level, args.epochs_timed, "es") if hardest and not args.skip_es else None
        per_run.append((name, runs, seconds, es_seconds, config.epochs))
        print(f"{name:<20}{grad * horizon / 1e6:>9.1f} M{forward * horizon / 1e6:>8.1f} M{epoch / 1e9:>13.2f}"
              f"{seconds:>9.3f}{rate / 1e9:>9.1f}{runs + (3 if hardest else 0):>6}{grid / 1e9:>12.0f}"
              f"{hours:>11.2f}{grid / peak / 3600:>13.2f}")
    print(f"{'grid':<20}{'':>11}{'':>10}{'':>13}{'':>9}{'':>9}{'':>6}{total_flops / 1e9:>12.0f}"
          f"{total_hours:>11.2f}{total_flops / peak / 3600:>13.2f}")
    print("(grad/fwd per batch: FLOPs of a bptt gradient and of a forward rollout of 8 episodes; "
          "runs include es)")
    print()
    print(f"{'one run of':<20}{'gradient runs':>14}{'h per run':>11}{'es s/epoch':>12}{'h per es run':>14}")
    longest = ("", 0.0)
    for name, runs, seconds, es_seconds, epochs in per_run:
        hours = epochs * seconds / 3600
        es_hours = epochs * es_seconds / 3600 if es_seconds is not None else None
        longest = max(longest, (name, hours), (f"{name} es", es_hours or 0.0), key=lambda item: item[1])
        es_text = f"{es_seconds:>12.3f}{es_hours:>14.2f}" if es_seconds is not None else f"{'':>12}{'':>14}"
        print(f"{name:<20}{runs:>14}{hours:>11.2f}{es_text}")
    print(f"longest run: {longest[0]}, {longest[1]:.2f} h at the timed rate (the grid's wall time with one "
          f"run per worker and enough workers)")
    run_hours = []
    for name, runs, seconds, es_seconds, epochs in per_run:
        run_hours += [epochs * seconds / 3600] * runs + ([epochs * es_seconds / 3600] * 3 if es_seconds else [])
    if args.workers:
        print(f"{len(run_hours)} runs, {sum(run_hours):.1f} h of run time; wall time on N workers (longest first):")
        for workers in args.workers:
            print(f"  N = {workers:>4}: {schedule_hours(run_hours, workers):6.2f} h")


def schedule_hours(hours: list[float], workers: int) -> float:
    """Wall time of running tasks of ``hours`` on ``workers`` workers, longest first, each task on the
    worker that is free first (list scheduling; within 4/3 of the best possible)."""
    free = [0.0] * max(1, workers)
    for task in sorted(hours, reverse=True):
        heapq.heapreplace(free, free[0] + task)
    return max(free)


if __name__ == "__main__":
    main()
