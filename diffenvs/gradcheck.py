"""Checking an environment's gradients: the rollout's derivative against central finite differences.

For any environment meeting :class:`~diffenvs.core.ControlEnv`, :func:`check_gradients` rolls out a
random open-loop action sequence of a few steps from a starting state in float64 and compares the
directional derivatives of the episode loss (minus the return, with steps after termination masked as
the trainers mask them) along random directions of the actions and of the starting state's
floating-point leaves, from the reverse-mode gradient (``jax.grad``, what the trainers use), with
central finite differences.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from diffenvs.core import check_control_env


class GradientCheck(NamedTuple):
    """Result of :func:`check_gradients`: per direction the derivative by ``jax.grad`` and by central finite
    differences, and the largest error relative to max(|derivative|, ``scale``) of the loss."""

    automatic: tuple[float, ...]
    finite_differences: tuple[float, ...]
    max_relative_error: float
    passed: bool


class GradientCheckError(ValueError):
    """The environment's rollout derivative disagrees with finite differences."""


def _as_float64(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64)
                        if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def _episode_loss(env: Any, params: Any, state: Any, actions: jax.Array) -> jax.Array:
    """Minus the return of ``actions`` (steps, *action_shape) from ``state``; steps from a terminal state add 0
    and leave it unchanged."""
    def body(current, action):
        done = jax.lax.stop_gradient(jnp.asarray(env.terminal(current, None, params), bool))
        following = env.transition(current, action, None, params)
        loss = -env.reward(current, action, following, None, params)
        following = jax.tree.map(lambda old, new: jnp.where(done, old, new), current, following)
        return following, jnp.where(done, 0.0, loss)

    _, losses = jax.lax.scan(body, state, actions)
    return jnp.sum(losses)


def check_gradients(env: Any, *, steps: int = 5, seed: int = 0, directions: int = 4, epsilon: float = 1e-6,
                    tolerance: float = 1e-4, action_scale: float = 0.5, params: Any = None,
                    raise_on_failure: bool = True) -> GradientCheck:
    """Compare the rollout's derivatives with central finite differences in float64.

    Args:
        env: an environment meeting :class:`~diffenvs.core.ControlEnv`.
        steps: rollout length (actions), at most the environment's ``num_steps``.
        seed: seed of the starting state, the actions (normal, standard deviation ``action_scale``) and the
            unit directions.
        directions: random directions checked (each a unit vector over the actions and the starting
            state's floating-point leaves together).
        epsilon: the finite-difference step along a direction.
        tolerance: the largest accepted |automatic - finite difference| / max(|automatic|, 1e-3 · (1 + |loss|)).
        params: environment parameters (None: ``env.default_params``).
        raise_on_failure: raise :class:`GradientCheckError` when the check fails (else only report it).

    Returns:
        A :class:`GradientCheck`.

    Raises:
        ValueError: for a bad argument, GradientCheckError when the derivatives disagree.
    """
    check_control_env(env)
    for name, value in (("steps", steps), ("directions", directions)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    for name, value in (("epsilon", epsilon), ("tolerance", tolerance), ("action_scale", action_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    with jax.enable_x64(True):
        params = _as_float64(env.default_params if params is None else params)
        horizon = int(env.num_steps(params))
        if steps > horizon:
            raise ValueError(f"steps must be at most the environment's num_steps = {horizon}, got {steps}")
        state_key, action_key, direction_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        state = _as_float64(env.initial(state_key, params))
        shape = tuple(env.action_shape(params))
        actions = action_scale * jax.random.normal(action_key, (steps, *shape), jnp.float64)
        floats = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
        point, unravel = ravel_pytree((actions, floats))

        def loss(vector: jax.Array) -> jax.Array:
            moved_actions, moved_floats = unravel(vector)
            replacement = iter(moved_floats)
            leaves, treedef = jax.tree.flatten(state)
            moved_state = treedef.unflatten([next(replacement) if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
                                             else leaf for leaf in leaves])
            return _episode_loss(env, params, moved_state, moved_actions)

        value, gradient = jax.jit(jax.value_and_grad(loss))(point)
        loss = jax.jit(loss)
        floor = 1e-3 * (1.0 + abs(float(value)))
        automatic, differences, worst = [], [], 0.0
        for key in jax.random.split(direction_key, directions):
            direction = jax.random.normal(key, point.shape, jnp.float64)
            direction = direction / jnp.linalg.norm(direction)
            derivative = float(jnp.dot(gradient, direction))
            difference = float((loss(point + epsilon * direction) - loss(point - epsilon * direction)) / (2 * epsilon))
            automatic.append(derivative)
            differences.append(difference)
            error = abs(derivative - difference) / max(abs(derivative), floor)
            worst = max(worst, error if math.isfinite(error) else math.inf)
    passed = worst <= tolerance
    name = getattr(env, "name", type(env).__name__)
    if not passed and raise_on_failure:
        raise GradientCheckError(f"{name}: the rollout's derivative disagrees with central finite differences "
                                 f"over {steps} steps (largest relative error {worst:.3g} > tolerance {tolerance:g}; "
                                 f"gradient {automatic}, finite differences {differences})")
    return GradientCheck(tuple(automatic), tuple(differences), worst, passed)
