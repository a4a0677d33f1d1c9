"""Time one `bptt` gradient (batch 8, 128 steps) and one evaluation (256 states) on quantum control
for two forms of the study's CNN and several ``lax.scan`` unroll factors.

``strided``: the library's :class:`trainers.networks.StridedConv` (a sum of one matrix product per
kernel tap). ``im2col``: the taps' strided slices concatenated, then one matrix product. Both compute
the same function; the table says whether either form or unrolling the rollout's scan is faster.

    python benchmarks/quantum_network_variants.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

import diffenvs
from trainers.networks import QuantumCNN, StridedConv, from_flax
from trainers.rollout import Problem, instance_losses, rollout_loss
from trainers.training import initial_states


class Im2colConv(StridedConv):
    """:class:`StridedConv` as one matrix product of the concatenated tap slices."""

    def combine(self, slices: list[jax.Array], weights: jax.Array) -> jax.Array:
        return jnp.concatenate(slices, axis=-1) @ weights.reshape(-1, weights.shape[-1])


def median_ms(function, *args, repeats: int) -> float:
    jax.block_until_ready(function(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[repeats // 2]


def main() -> None:
    env = diffenvs.make("QuantumControl", target_state=3)
    states = initial_states(env, jax.random.PRNGKey(0), 256)
    batch = jax.tree.map(lambda x: x[:8], states)
    print(f"{'network':<10}{'unroll':>7}{'grad ms':>10}{'eval ms':>10}")
    for name, convolution in {"strided": StridedConv, "im2col": Im2colConv}.items():
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
