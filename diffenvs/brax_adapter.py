"""brax adapter: every diffenvs environment as a brax ``Env``, so brax's PPO, SAC and APG run on it.

The adapter only translates:

* observation: the flattened physical state, shape (prod(physics_shape),), float;
* action: a flat vector of ``action_size`` entries in [-1, 1]; the control is
  ``action_scale * clip(action, -1, 1)`` reshaped to the environment's action shape (default scales in
  :data:`DEFAULT_ACTION_SCALE`);
* reward: minus the step's loss contribution (the functional core's reward), so the return of an
  episode of ``num_steps`` steps is minus the instance's loss;
* ``done``: a float, 1.0 once the episode has taken ``num_steps`` steps, else 0.0;
* ``metrics``: the step's loss terms (``loss`` and the environment's own), zeros after reset, the
  same keys after reset and step; ``info``: empty (brax's training wrappers add their own keys);
* ``pipeline_state``: the functional environment's :class:`~diffenvs.core.EnvState`.

The physics is the functional environment's; nothing is copied. Importing this module imports brax
(``import diffenvs`` does not); brax's notices that its optional Warp backends are missing ("Failed to
import warp", "Failed to import mujoco_warp") are dropped, any other output of the import is kept.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from typing import Any

import jax
import jax.numpy as jnp

_HARMLESS_IMPORT_NOTICES = ("Failed to import warp:", "Failed to import mujoco_warp:")


def import_brax_quietly() -> None:
    """``import brax`` without its notices about the missing optional Warp backends.

    brax prints them to stdout on its first import. Everything else the import writes to stdout is
    written on afterwards, and if the import fails, all of it is written before the error propagates.
    """
    if "brax" in sys.modules:
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            import brax  # noqa: F401
    except BaseException:
        sys.stdout.write(captured.getvalue())
        raise
    kept = [line for line in captured.getvalue().splitlines(keepends=True)
            if not line.startswith(_HARMLESS_IMPORT_NOTICES)]
    sys.stdout.write("".join(kept))


import_brax_quietly()

from brax.envs.base import Env, State  # noqa: E402

from diffenvs.action_scale import (  # noqa: E402,F401  (DEFAULT_ACTION_SCALE, check_action_scale: re-exported)
    DEFAULT_ACTION_SCALE, adapted_environment, check_action_scale, scaled_control,
)
from diffenvs.core import EnvState, FunctionalEnv  # noqa: E402


class BraxEnv(Env):
    """A diffenvs environment behind brax's ``Env`` interface.

    ``env`` is an environment name (canonical, short or Gymnasium id, built with ``params``) or a
    :class:`~diffenvs.core.FunctionalEnv` (then ``params`` must be empty). ``action_scale`` (> 0) is
    the control that an action of 1 means; None takes :data:`DEFAULT_ACTION_SCALE`.
    """

    def __init__(self, env: str | FunctionalEnv = "CartPole", *, action_scale: float | None = None,
                 **params: Any):
        self.functional_env, self.name, self.action_scale = adapted_environment(env, action_scale, params)
        self._action_shape = tuple(self.functional_env.action_shape())
        self._observation_size = math.prod(self.functional_env.physics_shape())

    def __repr__(self) -> str:
        return f"BraxEnv({self.functional_env!r}, action_scale={self.action_scale})"

    @property
    def num_steps(self) -> int:
        """Episode length: ``done`` becomes 1.0 on this step."""
        return self.functional_env.num_steps()

    def _observe(self, state: EnvState) -> jax.Array:
        return self.functional_env.observation(state).reshape(-1)

    def control(self, action: jax.Array) -> jax.Array:
        """The physical control for a flat action: ``action_scale * clip(action, -1, 1)``, reshaped."""
        if tuple(jnp.shape(action)) != (self.action_size,):
            raise ValueError(f"action must have shape ({self.action_size},), got shape {jnp.shape(action)}")
        return scaled_control(action, self.action_scale, self._action_shape)

    def reset_to(self, env_state: EnvState) -> State:
        """The brax state at the given functional state (e.g. a fixed initial state)."""
        dtype = jnp.result_type(float)
        zero = jnp.zeros((), dtype)
        control = jnp.zeros(self._action_shape, dtype)
        metrics = jax.tree.map(jnp.zeros_like,
                               self.functional_env.transition_info(env_state, control, env_state))
        done = (env_state.time >= self.num_steps).astype(dtype)
        return State(pipeline_state=env_state, obs=self._observe(env_state), reward=zero, done=done,
                     metrics=metrics)

    def reset(self, rng: jax.Array) -> State:
        """A state drawn from the environment's starting distribution."""
        return self.reset_to(self.functional_env.initial(rng))

    def step(self, state: State, action: jax.Array) -> State:
        """One step with the control ``action_scale * clip(action, -1, 1)``."""
        control = self.control(action)
        physics_state = state.pipeline_state
        next_state = self.functional_env.transition(physics_state, control)
        reward = self.functional_env.reward(physics_state, control, next_state)
        done = (next_state.time >= self.num_steps).astype(reward.dtype)
        info = self.functional_env.transition_info(physics_state, control, next_state)
        metrics = {**state.metrics, **info}
        return state.replace(pipeline_state=next_state, obs=self._observe(next_state), reward=reward,
                             done=done, metrics=metrics)

    @property
    def observation_size(self) -> int:
        return self._observation_size

    @property
    def action_size(self) -> int:
        return math.prod(self._action_shape)

    @property
    def backend(self) -> str:
        return "diffenvs"


def brax_env(name: str, *, action_scale: float | None = None, **params: Any) -> BraxEnv:
    """The environment ``name`` (canonical, short or Gymnasium id) as a brax ``Env``.

    Examples:
        >>> env = brax_env("CartPole", num_poles=2, action_scale=10.0)
    """
    return BraxEnv(name, action_scale=action_scale, **params)
