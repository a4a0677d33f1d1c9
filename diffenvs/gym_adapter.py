"""Gymnasium adapters: ``gym.make`` and ``gym.make_vec`` for every functional environment.

The adapters only translate: spaces, seeding, numpy conversion, action checks and scaling, and
Gymnasium's autoreset. The physics is the functional environment's.

Action bounds: with ``action_scale=None`` (default) the action space is unbounded, as in the study,
and the action is the physical control. With ``action_scale=s`` the action space is [-1, 1]^shape
and the control is ``s * clip(action, -1, 1)``, the usual bounded interface for RL agents.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from diffenvs.core import EnvState, FunctionalEnv, action_shape_accepted, check_positive
from diffenvs.registry import GYM_IDS, make

RENDER_MODES = ["rgb_array"]


def _action_space(env: FunctionalEnv, action_scale: float | None) -> gym.spaces.Box:
    shape = env.action_shape()
    if action_scale is None:
        return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
    return gym.spaces.Box(-1.0, 1.0, shape, np.float32)


def _observation_space(env: FunctionalEnv) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, env.physics_shape(), np.float32)


def _check_action_scale(action_scale: float | None) -> None:
    if action_scale is not None:
        check_positive("action_scale", action_scale)


def _check_action(action: Any, shape: tuple[int, ...], scalar_ok: bool = True) -> np.ndarray:
    """The action as a numpy array of ``shape`` in JAX's float dtype (float32, or float64 with x64);
    ValueError for a wrong shape, a non-numeric value or non-finite entries. Only ``shape`` itself is
    accepted, and (with ``scalar_ok``) a scalar when ``shape`` has one entry."""
    array = np.asarray(action)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == np.bool_):
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"action must be an array of numbers, got {action!r}") from None
    if not (action_shape_accepted(array.shape, shape) if scalar_ok else array.shape == tuple(shape)):
        scalar = " (or a scalar)" if scalar_ok and int(np.prod(shape)) == 1 else ""
        raise ValueError(f"action must have shape {tuple(shape)}{scalar}, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"action must be finite, got {array.reshape(-1)[~finite.reshape(-1)][:4]} "
                         f"among its entries")
    return array.astype(jnp.result_type(float), copy=False).reshape(shape)


def _to_control(action: jax.Array, action_scale: float | None) -> jax.Array:
    if action_scale is None:
        return action
    return action_scale * jnp.clip(action, -1.0, 1.0)


_PROGRAMS: dict[Any, Any] = {}


def _shared_programs(kind: str, env: FunctionalEnv, action_scale: float | None, build: Any, *extra: Any) -> Any:
    """Jitted programs shared by adapters of equal environments, so each compiles once per process."""
    try:
        key = (kind, type(env), env.default_params, action_scale, *extra)
        hash(key)
    except TypeError:  # parameters given as arrays: not shareable
        return build()
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def _check_state_option(env: FunctionalEnv, state: Any, shape: tuple[int, ...]) -> jax.Array:
    array = np.asarray(state, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"options['state'] must have shape {shape}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("options['state'] must be finite")
    return jnp.asarray(array, dtype=jnp.result_type(float))


def _transition_step(functional_env: FunctionalEnv, action_scale: float | None):
    """step(state, action) -> (next state, reward, info) for one instance, action scaled."""
    def step(state: EnvState, action: jax.Array) -> tuple[EnvState, jax.Array, dict]:
        control = _to_control(action, action_scale)
        next_state = functional_env.transition(state, control)
        reward = functional_env.reward(state, control, next_state)
        return next_state, reward, functional_env.transition_info(state, control, next_state)
    return step


def _single_programs(functional_env: FunctionalEnv, action_scale: float | None):
    return jax.jit(_transition_step(functional_env, action_scale)), jax.jit(functional_env.initial)


class GymEnv(gym.Env):
    """One instance of a diffenvs environment behind the Gymnasium ``Env`` API.

    ``gym.make("diffenvs/CartPole-v0", num_poles=2)`` passes every parameter of the environment's
    params dataclass through. ``reset(options={"state": array})`` starts from an exact physical state
    in the spec's layout. Observations are the physical state as float32; ``info`` carries the loss
    terms of the step (``loss``, and the environment's own terms).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 30}

    def __init__(self, env: str | FunctionalEnv = "CartPole", *, render_mode: str | None = None,
                 action_scale: float | None = None, **params: Any):
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        _check_action_scale(action_scale)
        self.functional_env = make(env, **params) if isinstance(env, str) else env
        self.render_mode = render_mode
        self.action_scale = action_scale
        self.observation_space = _observation_space(self.functional_env)
        self.action_space = _action_space(self.functional_env, action_scale)
        self.state: EnvState | None = None
        self._step, self._initial = _shared_programs("single", self.functional_env, action_scale,
                                                     lambda: _single_programs(self.functional_env, action_scale))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if "state" in options:
            physics = _check_state_option(self.functional_env, options["state"],
                                          self.functional_env.physics_shape())
            self.state = EnvState(physics, jnp.zeros((), jnp.int32))
        else:
            key = jax.random.PRNGKey(int(self.np_random.integers(0, 2**31 - 1)))
            self.state = self._initial(key)
        return self._observation(), {}

    def step(self, action: Any):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        self.state, reward, info = self._step(self.state, _check_action(action, self.action_space.shape))
        truncated = int(self.state.time) >= self.functional_env.num_steps()  # gym.make adds TimeLimit
        info = {key: float(value) for key, value in info.items()}
        return self._observation(), float(reward), False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self.state is None:
            raise RuntimeError("call reset() before render()")
        return self.functional_env.render_image(self.state)[1]

    def _observation(self) -> np.ndarray:
        return np.asarray(self.state.physics, dtype=np.float32)


def _vector_programs(functional_env: FunctionalEnv, action_scale: float | None, num_envs: int, horizon: int):
    """Jitted (step, step_with_reset, reset) for ``num_envs`` instances truncated after ``horizon``."""
    single_step = _transition_step(functional_env, action_scale)

    def step(state, action):
        next_state, reward, info = jax.vmap(single_step)(state, action)
        truncated = next_state.time >= horizon
        return next_state, next_state.physics.astype(jnp.float32), reward.astype(jnp.float32), truncated, info

    def reset(key):
        reset_key, key = jax.random.split(key)
        state = jax.vmap(functional_env.initial)(jax.random.split(reset_key, num_envs))
        return state, state.physics.astype(jnp.float32), key

    def step_with_reset(state, action, key, done):
        """``step``, except that the instances flagged ``done`` restart from a fresh state."""
        next_state, _, reward, truncated, info = step(state, action)
        fresh, _, key = reset(key)
        next_state = jax.tree.map(
            lambda new, old: jnp.where(done.reshape((-1,) + (1,) * (old.ndim - 1)), new, old), fresh, next_state)
        return (next_state, next_state.physics.astype(jnp.float32), jnp.where(done, 0.0, reward),
                jnp.logical_and(truncated, ~done), info, key)

    return jax.jit(step), jax.jit(step_with_reset), jax.jit(reset)


class GymVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` instances stepped by one jitted, vmapped call, with Gymnasium's next-step autoreset.

    An instance whose previous step ended its episode is reset by the next ``step`` call (its action
    is ignored, its reward is 0 and both end flags are False), as in Gymnasium's own vector envs.
    ``info`` holds each loss term as an array of shape (num_envs,) with a boolean mask ``_name``.
    ``max_episode_steps`` (optional) truncates episodes earlier than ``num_steps``, as ``gym.make``'s
    TimeLimit does for the single environment.
    """

    metadata = {"render_modes": RENDER_MODES, "autoreset_mode": AutoresetMode.NEXT_STEP, "render_fps": 30}

    def __init__(self, env: str | FunctionalEnv = "CartPole", num_envs: int = 1, *,
                 render_mode: str | None = None, action_scale: float | None = None, **params: Any):
        check_positive("num_envs", num_envs, integer=True)
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        _check_action_scale(action_scale)
        max_episode_steps = params.pop("max_episode_steps", None)
        self.functional_env = make(env, **params) if isinstance(env, str) else env
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.action_scale = action_scale
        self.single_observation_space = _observation_space(self.functional_env)
        self.single_action_space = _action_space(self.functional_env, action_scale)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._key = jax.random.PRNGKey(0)
        self.state: EnvState | None = None
        self._done = np.zeros(num_envs, bool)
        self.horizon = self.functional_env.num_steps()
        if max_episode_steps is not None:
            check_positive("max_episode_steps", max_episode_steps, integer=True)
            self.horizon = min(self.horizon, max_episode_steps)
        self._step, self._step_with_reset, self._reset = _shared_programs(
            "vector", self.functional_env, action_scale,
            lambda: _vector_programs(self.functional_env, action_scale, num_envs, self.horizon),
            num_envs, self.horizon)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        self._key = jax.random.PRNGKey(int(self.np_random.integers(0, 2**31 - 1)))
        self.state, observation, self._key = self._reset(self._key)
        if "state" in options:
            shape = (self.num_envs, *self.functional_env.physics_shape())
            physics = _check_state_option(self.functional_env, options["state"], shape)
            self.state = EnvState(physics, jnp.zeros(self.num_envs, jnp.int32))
            observation = physics.astype(jnp.float32)
        self._done = np.zeros(self.num_envs, bool)
        return np.asarray(observation), {}

    def step(self, actions: Any):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        actions = _check_action(actions, self.action_space.shape, scalar_ok=False)  # numpy goes straight into the jitted step
        was_done = self._done
        if np.any(was_done):
            (self.state, observation, reward, truncated, info,
             self._key) = self._step_with_reset(self.state, actions, self._key, jnp.asarray(was_done))
        else:
            self.state, observation, reward, truncated, info = self._step(self.state, actions)
        self._done = np.asarray(truncated)
        terminated = np.zeros(self.num_envs, bool)
        valid = ~was_done
        infos: dict[str, np.ndarray] = {}
        for name, value in info.items():
            infos[name] = np.asarray(value)
            infos[f"_{name}"] = valid
        return np.asarray(observation), np.asarray(reward), terminated, self._done.copy(), infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self.state is None:
            raise RuntimeError("call reset() before render()")
        return tuple(self.functional_env.render_image(jax.tree.map(lambda leaf: leaf[index], self.state))[1]
                     for index in range(self.num_envs))


def register_environments() -> None:
    """Register the Gymnasium ids (idempotent): ``diffenvs/CartPole-v0`` and the others."""
    for name, gym_id in GYM_IDS.items():
        if gym_id in gym.registry:
            continue
        gym.register(id=gym_id, entry_point="diffenvs.gym_adapter:GymEnv",
                     vector_entry_point="diffenvs.gym_adapter:GymVectorEnv", kwargs={"env": name})
