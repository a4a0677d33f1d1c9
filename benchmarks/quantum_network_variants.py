"""Time one `bptt` gradient (batch 8, 128 steps) and one evaluation (256 states) on quantum control
for two forms of the study's CNN and several ``lax.scan`` unroll factors.

``im2col``: the library's :class:`trainers.networks.StridedConv` (the taps' strided slices
concatenated, then one matrix product). ``per-tap``: one matrix product per kernel tap, summed (the
library's form until 2026-12-03). Both compute the same function; the table says whether either
form or unrolling the rollout's scan is faster.

``--epochs N`` instead times whole training epochs of the study protocol (target 3, ``combined`` and
``bptt``, 256 + 256 states, batch 8) with each form: ``train`` for N epochs, the median
``epoch_seconds`` of epochs 2..N, the forms alternating over ``--repeats`` rounds.

    python benchmarks/quantum_network_variants.py
    python benchmarks/quantum_network_variants.py --epochs 6 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import diffenvs
from trainers.networks import QuantumCNN, StridedConv, from_flax
from trainers.rollout import Problem, instance_losses, rollout_loss
from trainers.presets import study_preset
from trainers.training import initial_states, train


class PerTapConv(StridedConv):
    """:class:`StridedConv` as one matrix product per kernel tap, summed (the library's form until
    2026-12-03)."""

    def combine(self, slices: list[jax.Array], weights: jax.Array) -> jax.Array:
        return sum(tap_slice @ tap_weights for tap_slice, tap_weights in zip(slices, weights))


def median_ms(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[repeats // 2]


FORMS = {"per-tap": PerTapConv, "im2col": StridedConv}


def epoch_table(epochs: int, repeats: int) -> None:
    """Median training-epoch seconds per (strategy, form) and round, then the im2col / per-tap ratio."""
    print(f"{'strategy':<10}{'network':<10}" + "".join(f"{f'round {r + 1}':>10}" for r in range(repeats))
          + f"{'median':>10}")
    for strategy in ("bptt", "combined"):
        config = study_preset("quantum", 3, strategy=strategy, epochs=epochs)
        seconds: dict[str, list[float]] = {name: [] for name in FORMS}
        for _ in range(repeats):
            for name, convolution in FORMS.items():
                controller = from_flax(QuantumCNN(convolution=convolution), (32, 2))
                rows = train(config, controller=controller, quiet=True).metrics
                seconds[name].append(statistics.median(row["epoch_seconds"] for row in rows[2:]))
        for name in FORMS:
            print(f"{strategy:<10}{name:<10}" + "".join(f"{s:>10.3f}" for s in seconds[name])
                  + f"{statistics.median(seconds[name]):>10.3f}", flush=True)
        ratio = statistics.median(seconds["im2col"]) / statistics.median(seconds["per-tap"])
        print(f"{strategy:<10}{'ratio':<10}{'':>{10 * repeats}}{ratio:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="time training epochs instead (>= 3)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the epoch measurement")
    args = parser.parse_args()
    if args.epochs is not None:
        if args.epochs < 3 or args.repeats < 1:
            parser.error(f"--epochs must be >= 3 and --repeats >= 1, got {args.epochs} and {args.repeats}")
        epoch_table(args.epochs, args.repeats)
        return
    env = diffenvs.make("QuantumControl", target_state=3)
    states = initial_states(env, jax.random.PRNGKey(0), 256)
    batch = jax.tree.map(lambda x: x[:8], states)
    print(f"{'network':<10}{'unroll':>7}{'grad ms':>10}{'eval ms':>10}")
    for name, convolution in FORMS.items():
        controller = from_flax(QuantumCNN(convolution=convolution), (32, 2))
        params = controller.init(jax.random.PRNGKey(1))
        problem = Problem(env, env.default_params, controller)
        evaluate = jax.jit(lambda p, s: instance_losses(problem, p, s))
        eval_ms = median_ms(evaluate, params, states, repeats=5)
        for unroll in (1, 2, 4, 8):
            gradient = jax.jit(jax.grad(lambda p, s: rollout_loss(problem, p, s, unroll=unroll)))
            print(f"{name:<10}{unroll:>7}{median_ms(gradient, params, batch, repeats=15):>10.1f}{eval_ms:>10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
