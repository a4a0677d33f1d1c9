"""Closed-loop rollouts of a controller in a diffenvs environment: the hooks strategies build on.

One step of a batched rollout is split in two pure functions so that strategies can treat the two
paths separately:

* ``problem.control(params, physics)``: the network N, controls for a batch of physical states;
* ``problem.simulate(physics, time, controls)``: the simulator S, the next physical states and this
  step's batch-mean loss contribution.

:func:`rollout_loss` runs the whole rollout with a *gate* that decides, at each step, which paths the
backward pass may use (``jax.lax.stop_gradient`` on the network input, the physics input, both or
neither). The forward values never depend on the gate.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from diffenvs.core import EnvState, FunctionalEnv
from trainers.networks import Controller

Array = jax.Array
Gate = Callable[[Array, Array], tuple[Array, Array]]
"""gate(step index t, physics batch) -> (network input physics, simulator input physics)."""


def _identity(physics: Array) -> Array:
    return physics


def make_gate(network_input: Callable[[Array], Array] = _identity,
              physics_input: Callable[[Array], Array] = _identity) -> Gate:
    """A gate that applies ``network_input`` and ``physics_input`` (e.g. stop_gradient) at every step."""
    return lambda t, physics: (network_input(physics), physics_input(physics))


plain_gate = make_gate()
"""The gate of plain BPTT: every path open."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """An environment, its parameters and a controller: everything a rollout needs.

    ``initial_states`` passed to the functions below are batched :class:`EnvState`s with a leading
    batch axis; losses are means over the batch of each instance's loss (the batch loss of docs/physics.md).
    """

    env: FunctionalEnv
    env_params: Any
    controller: Controller

    @property
    def num_steps(self) -> int:
        return self.env.num_steps(self.env_params)

    def control(self, params: Any, physics: Array, time: Array) -> Array:
        """The network: controls (batch, *action_shape) for physics (batch, *physics_shape)."""
        observe = jax.vmap(lambda p, t: self.env.observation(EnvState(p, t), None, self.env_params))
        return self.controller.apply(params, observe(physics, time))

    def simulate(self, physics: Array, time: Array, controls: Array) -> tuple[Array, Array]:
        """The simulator: (next physics batch, batch-mean loss contribution of this step)."""
        def single(p, t, c):
            state = EnvState(p, t)
            next_state = self.env.transition(state, c, None, self.env_params)
            return next_state.physics, -self.env.reward(state, c, next_state, None, self.env_params)

        next_physics, losses = jax.vmap(single)(physics, time, controls)
        return next_physics, jnp.mean(losses)


def rollout_loss(problem: Problem, params: Any, initial_states: EnvState,
                 gate: Gate = plain_gate, unroll: int = 1) -> Array:
    """Batch-mean loss of a closed-loop rollout from ``initial_states`` (scalar).

    Differentiating it with respect to ``params`` gives the strategy that ``gate`` defines. ``unroll``
    is ``lax.scan``'s unroll factor (steps per loop iteration; the result does not depend on it).
    """
    def body(state: EnvState, t: Array) -> tuple[EnvState, Array]:
        network_physics, simulator_physics = gate(t, state.physics)
        controls = problem.control(params, network_physics, state.time)
        next_physics, loss = problem.simulate(simulator_physics, state.time, controls)
        return EnvState(next_physics, state.time + 1), loss

    _, losses = jax.lax.scan(body, initial_states, jnp.arange(problem.num_steps), unroll=unroll)
    return jnp.sum(losses)


def batch_of_one(state: EnvState) -> EnvState:
    """One state (no batch axis) as a batch of one."""
    return jax.tree.map(lambda x: x[None], state)


def instance_losses(problem: Problem, params: Any, initial_states: EnvState) -> Array:
    """Each instance's loss, shape (batch,): the rollout of every state on its own."""
    return jax.vmap(lambda state: rollout_loss(problem, params, batch_of_one(state)))(initial_states)


# ------------------------------------------------------------------ per-episode gradient variance

def per_episode_losses_and_gradients(problem: Problem, params: Any, initial_states: EnvState,
                                     gate: Gate = plain_gate) -> tuple[Array, Any]:
    """Each episode's loss (batch,) and parameter gradient of its own loss (the structure of
    ``params`` with a leading batch axis). The mean of the gradients is the gradient of the batch
    loss. ``gate`` selects the strategy (default: plain BPTT, see :mod:`trainers.rollout`)."""
    def single(state: EnvState) -> tuple[Array, Any]:
        return jax.value_and_grad(lambda p: rollout_loss(problem, p, batch_of_one(state), gate))(params)

    return jax.vmap(single)(initial_states)


def per_episode_gradients(problem: Problem, params: Any, initial_states: EnvState,
                          gate: Gate = plain_gate) -> Any:
    """Each episode's parameter gradient of its own loss: the gradients of
    :func:`per_episode_losses_and_gradients`."""
    return per_episode_losses_and_gradients(problem, params, initial_states, gate)[1]


def per_episode_gradient_variance(problem: Problem, params: Any, initial_states: EnvState,
                                  gate: Gate = plain_gate) -> Array:
    """Variance across the batch's episodes of the per-episode gradients g_i, summed over parameters:
    the trace of their covariance, Σ_i ‖g_i − ḡ‖² / (n − 1) with the unbiased divisor n − 1 (n =
    batch size, at least 2). Scalar, in squared loss units per squared parameter unit."""
    count = initial_states.physics.shape[0]
    if count < 2:
        raise ValueError(f"initial_states must hold at least 2 episodes for a variance, got {count}")
    gradients = per_episode_gradients(problem, params, initial_states, gate)
    squares = [jnp.sum(jnp.square(leaf - jnp.mean(leaf, axis=0))) for leaf in jax.tree.leaves(gradients)]
    return sum(squares) / (count - 1)
