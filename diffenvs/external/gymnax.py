"""gymnax environments with transition gradients behind the functional-environment protocol.

``make_gymnax_env("Pendulum-v1")`` wraps ``gymnax.make("Pendulum-v1")`` with
``env.with_transition_gradients()`` switched on, so ``jax.grad`` flows through its steps:

* state: a :class:`GymnaxState` holding gymnax's own state, the reward and ``terminated`` flag of
  the last ``step_env``, and a PRNG key;
* transition: gymnax's ``step_env`` without its autoreset. It is deterministic: the key that
  ``step_env`` takes is split off the key carried in the state (set by ``initial`` from its ``rng``),
  unless ``transition`` is given an ``rng``. Of the environments with transition gradients only
  PointRobot-misc uses it (to place the robot anew after it reaches the goal);
* action: in the environment's own units and shape (``action_shape()``), passed to ``step_env``
  unchanged, so gymnax clips it to the action space's bounds where its environment does (Pendulum-v1,
  MountainCarContinuous-v0, PointRobot-misc), and not where it does not (Reacher-misc, Swimmer-misc);
* observation: gymnax's observation of the state (its ``observe``), computed on demand, so a rollout
  that does not use it does not pay for it;
* reward: gymnax's reward of the step (stored in the next state by ``transition``);
* terminal: gymnax's ``terminated`` of the last step, or the horizon reached;
* horizon: ``num_steps`` = the gymnax parameter ``max_steps_in_episode`` (override it with
  ``num_steps=`` or ``max_steps_in_episode=``);
* params: gymnax's params dataclass of the environment (override fields with keyword arguments).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from diffenvs.core import check_action_shape, check_positive, float_dtype
from diffenvs.optional import import_optional

gymnax = import_optional("gymnax", "gymnax")

TRANSITION_GRADIENT_ENV_IDS = ("Pendulum-v1", "MountainCarContinuous-v0", "Reacher-misc", "Swimmer-misc",
                               "PointRobot-misc")
"""The gymnax 1.0 environments that support ``with_transition_gradients()``."""

Array = jax.Array


class GymnaxState(NamedTuple):
    """State of a wrapped gymnax environment.

    ``env_state``: gymnax's state (its ``time`` counts the steps). ``reward``: the reward of the step
    that led here (0 after ``initial``). ``terminated``: gymnax's termination flag of that step (bool
    scalar). ``key``: PRNG key from which the next ``step_env``'s key is split.
    """

    env_state: Any
    reward: Array
    terminated: Array
    key: Array


class GymnaxFunctionalEnv:
    """A gymnax environment with transition gradients as a functional environment (see the module)."""

    def __init__(self, env_id: str, **params: Any):
        if not isinstance(env_id, str) or env_id not in gymnax.registered_envs:
            raise ValueError(f"env_id must be a registered gymnax environment id (with transition gradients: "
                             f"{list(TRANSITION_GRADIENT_ENV_IDS)}), got {env_id!r}")
        env, env_params = gymnax.make(env_id)
        if not env.supports_transition_gradients:
            raise ValueError(f"gymnax environment {env_id!r} cannot give transition gradients "
                             f"(with_transition_gradients() is not supported); the ones that can: "
                             f"{list(TRANSITION_GRADIENT_ENV_IDS)}")
        self.env = env.with_transition_gradients()
        self.env_id = env_id
        self.name = f"gymnax:{env_id}"
        self.default_params = _with_overrides(env_id, env_params, params)

    def __repr__(self) -> str:
        return f"GymnaxFunctionalEnv({self.env_id!r}, {self.default_params})"

    def _params(self, params: Any) -> Any:
        return self.default_params if params is None else params

    def num_steps(self, params: Any = None) -> int:
        """Horizon (steps): gymnax's ``max_steps_in_episode``."""
        return int(self._params(params).max_steps_in_episode)

    def action_shape(self, params: Any = None) -> tuple[int, ...]:
        """Shape of one action: that of gymnax's action space."""
        return tuple(self.env.action_space(self._params(params)).shape)

    def observation_shape(self, params: Any = None) -> tuple[int, ...]:
        """Shape of one observation: that of gymnax's observation space."""
        return tuple(self.env.observation_space(self._params(params)).shape)

    def initial(self, rng: Array, params: Any = None) -> GymnaxState:
        """gymnax's ``reset_env`` with a key split off ``rng``; the rest of ``rng`` is carried."""
        params = self._params(params)
        reset_key, carried_key = jax.random.split(rng)
        _, env_state = self.env.reset_env(reset_key, params)
        env_state = jax.tree.map(jnp.asarray, env_state)
        return GymnaxState(env_state, jnp.zeros((), float_dtype()), jnp.zeros((), bool), carried_key)

    def transition(self, state: GymnaxState, action: Any, rng: Array | None = None,
                   params: Any = None) -> GymnaxState:
        """gymnax's ``step_env`` (no autoreset), with a key split off the state's key (or ``rng``)."""
        params = self._params(params)
        action = check_action_shape(action, self.action_shape(params))
        if rng is None:
            carried_key, step_key = jax.random.split(state.key)
        else:
            carried_key, step_key = state.key, rng
        _, env_state, reward, terminated, _ = self.env.step_env(step_key, state.env_state, action, params)
        return GymnaxState(env_state, jnp.asarray(reward, float_dtype()).reshape(()),
                           jnp.asarray(terminated, bool).reshape(()), carried_key)

    def reward(self, state: GymnaxState, action: Any, next_state: GymnaxState, rng: Array | None = None,
               params: Any = None) -> Array:
        """gymnax's reward of the step from ``state`` to ``next_state`` (scalar)."""
        return next_state.reward

    def observation(self, state: GymnaxState, rng: Array | None = None, params: Any = None) -> Array:
        """gymnax's observation of the state (``observe`` with the state's key; the built-in
        environments' observations depend on the state only)."""
        return self.env.observe(state.key, state.env_state, None, self._params(params))

    def terminal(self, state: GymnaxState, rng: Array | None = None, params: Any = None) -> Array:
        """Whether gymnax terminated the episode or the horizon ``num_steps`` is reached (bool scalar)."""
        return jnp.logical_or(state.terminated, state.env_state.time >= self.num_steps(params))


def _with_overrides(env_id: str, env_params: Any, params: dict[str, Any]) -> Any:
    """gymnax's default params with the fields in ``params`` replaced (``num_steps`` sets
    ``max_steps_in_episode``); ValueError for unknown fields or a bad horizon."""
    params = dict(params)
    num_steps = params.pop("num_steps", None)
    fields = sorted(field.name for field in dataclasses.fields(env_params))
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for gymnax environment {env_id!r}; allowed: "
                         f"{fields} and num_steps")
    if num_steps is not None:
        check_positive("num_steps", num_steps, integer=True)
        if params.get("max_steps_in_episode", num_steps) != num_steps:
            raise ValueError(f"num_steps = {num_steps!r} and max_steps_in_episode = "
                             f"{params['max_steps_in_episode']!r} disagree; give one of them")
        params["max_steps_in_episode"] = num_steps
    env_params = env_params.replace(**params)
    check_positive("max_steps_in_episode", env_params.max_steps_in_episode, integer=True)
    return env_params


def make_gymnax_env(env_id: str, **params: Any) -> GymnaxFunctionalEnv:
    """The gymnax environment ``env_id`` with transition gradients, as a functional environment.

    Args:
        env_id: a gymnax environment id that supports transition gradients (see
            :data:`TRANSITION_GRADIENT_ENV_IDS`), e.g. ``"Pendulum-v1"``.
        **params: fields of the environment's gymnax params dataclass (e.g. ``max_torque=1.0``), and
            ``num_steps`` (the horizon; the same as ``max_steps_in_episode``).

    Returns:
        The :class:`GymnaxFunctionalEnv`.

    Raises:
        ValueError: for an unknown id, an environment without transition gradients, an unknown
            parameter or a horizon that is not a positive integer.

    Examples:
        >>> env = make_gymnax_env("Pendulum-v1", num_steps=50)
    """
    return GymnaxFunctionalEnv(env_id, **params)
