"""Time one `bptt` gradient (batch 8, 128 steps) and one evaluation (256 states) on quantum control
for two forms of the study's CNN and several ``lax.scan`` unroll factors.

``strided``: the library's :class:`trainers.networks.StridedConv` (a sum of one matrix product per
kernel tap). ``im2col``: the taps' strided slices concatenated, then one matrix product. Both compute
the same function; the table says whether either form or unrolling the rollout's scan is faster.

    python benchmarks/quantum_network_variants.py
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

import diffenvs
from diffenvs.core import EnvState
from trainers.networks import QuantumCNN, StridedConv, from_flax
from trainers.rollout import Problem, instance_losses
from trainers.training import initial_states


class Im2colConv(StridedConv):
    """:class:`StridedConv` as one matrix product of the concatenated tap slices."""

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        taps, rest = self.kernel_size[0], self.kernel_size[1:]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, inputs.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        length = (inputs.shape[1] - taps) // self.stride + 1
        flat = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)
        patches = jnp.concatenate([flat[:, tap:tap + self.stride * (length - 1) + 1:self.stride]
                                   for tap in range(taps)], axis=-1)
        output = patches @ kernel.reshape(-1, self.features)
        return (output + bias).reshape(inputs.shape[0], length, *(1 for _ in rest), self.features)


def rollout_loss(problem: Problem, params, states: EnvState, unroll: int) -> jax.Array:
    """trainers.rollout.rollout_loss with the plain gate and an unroll factor."""
    def body(state, _):
        controls = problem.control(params, state.physics, state.time)
        next_physics, loss = problem.simulate(state.physics, state.time, controls)
        return EnvState(next_physics, state.time + 1), loss

    _, losses = jax.lax.scan(body, states, None, length=problem.num_steps, unroll=unroll)
    return jnp.sum(losses)


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
    patched = {"strided": StridedConv, "im2col": Im2colConv}
    print(f"{'network':<10}{'unroll':>7}{'grad ms':>10}{'eval ms':>10}")
    for name, conv in patched.items():
        module = QuantumCNN() if conv is StridedConv else _with_conv(conv)
        controller = from_flax(module, (32, 2))
        params = controller.init(jax.random.PRNGKey(1))
        problem = Problem(env, env.default_params, controller)
        evaluate = jax.jit(lambda p, s: instance_losses(problem, p, s))
        eval_ms = median_ms(evaluate, params, states, repeats=5)
        for unroll in (1, 2, 4, 8):
            gradient = jax.jit(jax.grad(lambda p, s: rollout_loss(problem, p, s, unroll)))
            print(f"{name:<10}{unroll:>7}{median_ms(gradient, params, batch, repeats=15):>10.1f}{eval_ms:>10.1f}",
                  flush=True)


def _with_conv(conv: type) -> nn.Module:
    """The study's CNN (as :class:`QuantumCNN`) with another convolution class."""
    class VariantCNN(nn.Module):
        @nn.compact
        def __call__(self, observations: jax.Array) -> jax.Array:
            batch = observations.shape[0]
            hidden = jnp.tanh(conv(60, (3, 2), name="Conv_0")(observations[..., None]))
            hidden = jnp.tanh(conv(60, (3,), name="Conv_1")(hidden.reshape(batch, hidden.shape[1], 60)))
            return nn.Dense(1, kernel_init=nn.initializers.glorot_uniform())(hidden.reshape(batch, -1))
    return VariantCNN()


if __name__ == "__main__":
    main()
