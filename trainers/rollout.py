"""Closed-loop rollouts of a controller in a differentiable environment: the hooks strategies build on.

The environment is anything that meets :class:`diffenvs.core.ControlEnv` (the built-in environments,
adapters, or a user's own); its state is any pytree. One step of a batched rollout is split in two pure
functions so that strategies can treat the two paths separately:

* ``problem.control(params, states)``: the network N, controls for a batch of states (from their
  observations);
* ``problem.simulate(states, controls)``: the simulator S, the next states and this step's batch-mean
  loss contribution (minus the reward).

States here are *batched* state pytrees: every leaf has a leading batch axis. :func:`rollout_loss`
runs the whole rollout with a *gate* that decides, at each step, which paths the backward pass may use
(``jax.lax.stop_gradient`` on the state entering the network, the state entering the simulator, both
or neither; applied to the whole state pytree, every leaf). The forward values never depend on the gate.

Early termination: a step taken from a state for which ``env.terminal`` is true adds no loss and leaves
the state as it is (every leaf frozen with ``jnp.where``, the mask's gradient blocked), so neither the
loss nor its gradient goes past the end of an episode. An environment whose ``terminates_early``
attribute is False (the built-in ones) skips the mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from diffenvs.core import ControlEnv
from trainers.networks import Controller

Array = jax.Array
State = Any
"""A state pytree (one instance), or a batch of them (every leaf with a leading batch axis)."""
Gate = Callable[[Array, State], tuple[State, State]]
"""gate(step index t, batched states) -> (network input states, simulator input states)."""


def _identity(states: State) -> State:
    return states


def make_gate(network_input: Callable[[State], State] = _identity,
              physics_input: Callable[[State], State] = _identity) -> Gate:
    """A gate that applies ``network_input`` and ``physics_input`` (e.g. ``jax.lax.stop_gradient``, which
    acts on every leaf) to the batched state pytree at every step."""
    return lambda t, states: (network_input(states), physics_input(states))


plain_gate = make_gate()
"""The gate of plain BPTT: every path open."""


def batch_size(states: State) -> int:
    """The leading (batch) size of a batched state pytree."""
    return jax.tree.leaves(states)[0].shape[0]


def is_float(leaf: Any) -> bool:
    """Whether a leaf is a floating-point (differentiable) array."""
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def split_float_leaves(state: State) -> tuple[list[Array], Callable[[list[Array]], State]]:
    """(the floating-point leaves of ``state``, ``rebuild(float_leaves) -> state``): the part of a state
    that gradients flow through, and how to put a state together again with the other leaves as they are."""
    leaves, treedef = jax.tree.flatten(state)
    floats = [leaf for leaf in leaves if is_float(leaf)]

    def rebuild(new_floats: list[Array]) -> State:
        replacement = iter(new_floats)
        return treedef.unflatten([next(replacement) if is_float(leaf) else leaf for leaf in leaves])

    return floats, rebuild


def terminates_early(env: Any) -> bool:
    """Whether the rollout must mask steps after termination (False when the environment promises that
    its episodes end only at the horizon, ``env.terminates_early = False``)."""
    return bool(getattr(env, "terminates_early", True))


def freeze_where(done: Array, old: State, new: State) -> State:
    """Per instance: ``old`` where ``done`` (batch,) is true, else ``new`` (every leaf)."""
    def pick(o: Array, n: Array) -> Array:
        return jnp.where(done.reshape(done.shape + (1,) * (n.ndim - done.ndim)), o, n)
    return jax.tree.map(pick, old, new)


@dataclasses.dataclass(frozen=True)
class Problem:
    """An environment, its parameters and a controller: everything a rollout needs.

    ``env`` meets :class:`diffenvs.core.ControlEnv`. ``states`` passed to the functions below are batched
    state pytrees (a leading batch axis on every leaf); losses are means over the batch of each
    instance's loss (its negative return over the horizon; the batch loss of docs/physics.md).
    """

    env: ControlEnv
    env_params: Any
    controller: Controller

    @property
    def num_steps(self) -> int:
        return self.env.num_steps(self.env_params)

    @property
    def masks_termination(self) -> bool:
        """Whether steps after an episode's end are masked (see the module docstring)."""
        return terminates_early(self.env)

    def observe(self, states: State) -> Array:
        """The observations (batch, *observation_shape) of a batch of states."""
        return jax.vmap(lambda state: self.env.observation(state, None, self.env_params))(states)

    def control(self, params: Any, states: State) -> Array:
        """The network: controls (batch, *action_shape) for a batch of states."""
        return self.controller.apply(params, self.observe(states))

    def done(self, states: State) -> Array:
        """Whether each state of the batch is terminal, (batch,) bool, gradient blocked."""
        terminal = jax.vmap(lambda state: self.env.terminal(state, None, self.env_params))(states)
        return jax.lax.stop_gradient(jnp.asarray(terminal, bool).reshape(-1))

    def step(self, states: State, controls: Array) -> tuple[State, Array]:
        """The simulator without the batch mean: (next states, per-instance step losses (batch,)).

        An instance whose state is terminal keeps its state and adds 0 (when the environment may end early)."""
        def single(state, control):
            next_state = self.env.transition(state, control, None, self.env_params)
            return next_state, -self.env.reward(state, control, next_state, None, self.env_params)

        next_states, losses = jax.vmap(single)(states, controls)
        if self.masks_termination:
            done = self.done(states)
            next_states = freeze_where(done, states, next_states)
            losses = jnp.where(done, jnp.zeros_like(losses), losses)
        return next_states, losses

    def simulate(self, states: State, controls: Array) -> tuple[State, Array]:
        """The simulator: (next states, batch-mean loss contribution of this step)."""
        next_states, losses = self.step(states, controls)
        return next_states, jnp.mean(losses)


def step_losses(problem: Problem, params: Any, initial_states: State, gate: Gate = plain_gate,
                unroll: int = 1) -> Array:
    """The batch-mean loss contribution of every step of a closed-loop rollout, shape (num_steps,)."""
    def body(states: State, t: Array) -> tuple[State, Array]:
        network_states, simulator_states = gate(t, states)
        controls = problem.control(params, network_states)
        return problem.simulate(simulator_states, controls)

    _, losses = jax.lax.scan(body, initial_states, jnp.arange(problem.num_steps), unroll=unroll)
    return losses


def rollout_loss(problem: Problem, params: Any, initial_states: State,
                 gate: Gate = plain_gate, unroll: int = 1) -> Array:
    """Batch-mean loss of a closed-loop rollout from ``initial_states`` (scalar).

    Differentiating it with respect to ``params`` gives the strategy that ``gate`` defines. ``unroll``
    is ``lax.scan``'s unroll factor (steps per loop iteration; the result does not depend on it).
    """
    return jnp.sum(step_losses(problem, params, initial_states, gate, unroll))


def batch_of_one(state: State) -> State:
    """One state (no batch axis) as a batch of one."""
    return jax.tree.map(lambda x: x[None], state)


def instance_losses(problem: Problem, params: Any, initial_states: State) -> Array:
    """Each instance's loss, shape (batch,): the rollout of every state on its own."""
    return jax.vmap(lambda state: rollout_loss(problem, params, batch_of_one(state)))(initial_states)


# ------------------------------------------------------------------ per-episode gradient variance

def per_episode_losses_and_gradients(problem: Problem, params: Any, initial_states: State,
                                     gate: Gate = plain_gate) -> tuple[Array, Any]:
    """Each episode's loss (batch,) and parameter gradient of its own loss (the structure of
    ``params`` with a leading batch axis). The mean of the gradients is the gradient of the batch
    loss. ``gate`` selects the strategy (default: plain BPTT, see :mod:`trainers.rollout`)."""
    def single(state: State) -> tuple[Array, Any]:
        return jax.value_and_grad(lambda p: rollout_loss(problem, p, batch_of_one(state), gate))(params)

    return jax.vmap(single)(initial_states)


def per_episode_gradients(problem: Problem, params: Any, initial_states: State,
                          gate: Gate = plain_gate) -> Any:
    """Each episode's parameter gradient of its own loss: the gradients of
    :func:`per_episode_losses_and_gradients`."""
    return per_episode_losses_and_gradients(problem, params, initial_states, gate)[1]


def per_episode_gradient_variance(problem: Problem, params: Any, initial_states: State,
                                  gate: Gate = plain_gate) -> Array:
    """Variance across the batch's episodes of the per-episode gradients g_i, summed over parameters:
    the trace of their covariance, Σ_i ‖g_i − ḡ‖² / (n − 1) with the unbiased divisor n − 1 (n =
    batch size, at least 2). Scalar, in squared loss units per squared parameter unit."""
    count = batch_size(initial_states)
    if count < 2:
        raise ValueError(f"initial_states must hold at least 2 episodes for a variance, got {count}")
    gradients = per_episode_gradients(problem, params, initial_states, gate)
    squares = [jnp.sum(jnp.square(leaf - jnp.mean(leaf, axis=0))) for leaf in jax.tree.leaves(gradients)]
    return sum(squares) / (count - 1)


# -------------------------------------------------------------------------- locating a non-finite step

def _loss_of_first_steps(problem: Problem, params: Any, states: State, horizon: Array) -> Array:
    """The batch loss of the first ``horizon`` steps (a traced integer) of a full-length rollout whose later
    steps are cut from the backward pass: their state and parameters enter through ``stop_gradient`` and
    their losses count 0, so a non-finite derivative there does not reach the gradient."""
    def body(current: State, t: Array) -> tuple[State, Array]:
        cut = t >= horizon
        current = jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), current)
        step_params = jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), params)
        next_states, loss = problem.simulate(current, problem.control(step_params, current))
        return next_states, jnp.where(cut, jnp.zeros_like(loss), loss)

    _, losses = jax.lax.scan(body, states, jnp.arange(problem.num_steps))
    return jnp.sum(losses)


def first_nonfinite_step(problem: Problem, params: Any, states: State) -> int | None:
    """The first step t whose batch-mean loss is not finite, or at which the parameter gradient of the loss
    of the steps 0..t stops being finite; None when every step's loss and the whole gradient are finite.

    The gradient's step is found by bisection over the horizon (about log2(num_steps) backward passes of
    one compiled program): meant for reporting a failure, not for every update."""
    losses = jax.jit(lambda p: step_losses(problem, p, states))(params)
    bad = [int(t) for t in jnp.flatnonzero(~jnp.isfinite(losses))]
    first_loss = bad[0] if bad else None

    @jax.jit
    def finite_gradient(horizon: Array) -> Array:
        gradient = jax.grad(lambda p: _loss_of_first_steps(problem, p, states, horizon))(params)
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(gradient)]))

    steps = problem.num_steps
    first_gradient = None
    if not bool(finite_gradient(jnp.asarray(steps))):
        low, high = 0, steps                  # finite with `low` steps, non-finite with `high`
        while high - low > 1:
            middle = (low + high) // 2
            if bool(finite_gradient(jnp.asarray(middle))):
                low = middle
            else:
                high = middle
        first_gradient = high - 1
    found = [step for step in (first_loss, first_gradient) if step is not None]
    return min(found) if found else None
