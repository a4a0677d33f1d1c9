"""gymnax adapter: every diffenvs environment as a gymnax 1.0 ``Environment``, for gymnax-based RL code.

The adapter only translates; the physics is the functional environment's (nothing is copied):

* ``reset(key, params) -> (obs, state)`` and ``step(key, state, action, params) -> (obs, state,
  reward, terminated, truncated, info)`` are gymnax's own (inherited): ``step`` resets an instance
  whose episode ended (the returned ``obs`` and ``state`` are then the fresh ones, ``reward`` and the
  flags belong to the finished step, ``info["final_observation"]`` is the observation before the reset);
* state: the functional environment's :class:`~diffenvs.core.EnvState` (``physics``, ``time``);
* observation: the physical state in its natural shape (e.g. (2, 2) for one pole), JAX's float dtype;
* action: a flat vector of ``num_actions`` entries in [-1, 1] (a scalar when there is one entry); the
  control is ``action_scale * clip(action, -1, 1)`` reshaped to the environment's action shape
  (default scales in :data:`~diffenvs.action_scale.DEFAULT_ACTION_SCALE`, as in the brax adapter);
* reward: minus the step's loss contribution, so the return of an episode is minus the instance's loss;
* ``terminated``: always False (the episodes end only by truncation); ``truncated``: True on the step
  that reaches ``max_steps_in_episode`` (default: the environment's ``num_steps``);
* ``info``: the step's loss terms (``loss`` and the environment's own), ``discount`` (1.0), and the
  keys gymnax adds (``terminated``, ``truncated``, ``final_observation``).

Importing this module imports gymnax (``import diffenvs`` does not).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from diffenvs.optional import import_optional

import_optional("gymnax", "gymnax")

from flax import struct  # noqa: E402  (a gymnax dependency)
from gymnax.environments import environment, spaces  # noqa: E402

from diffenvs.action_scale import adapted_environment, scaled_control  # noqa: E402
from diffenvs.core import EnvState, FunctionalEnv, action_shape_accepted, float_dtype  # noqa: E402


@struct.dataclass
class GymnaxEnvParams(environment.EnvParams):
    """gymnax-style parameters: the diffenvs parameters and the adapter's own.

    ``env_params``: the environment's params dataclass (e.g. :class:`~diffenvs.cartpole.CartPoleParams`;
    its float fields are differentiable leaves). ``action_scale``: the control an action of 1 means.
    ``max_steps_in_episode``: steps after which an episode is truncated (1..``num_steps``).
    """

    env_params: Any = None
    action_scale: float = 1.0


class GymnaxEnv(environment.Environment[EnvState, GymnaxEnvParams]):
    """A diffenvs environment behind gymnax 1.0's ``Environment`` interface.

    ``env`` is an environment name (canonical, short or Gymnasium id, built with ``params``) or a
    :class:`~diffenvs.core.FunctionalEnv` (then ``params`` must be empty). ``action_scale`` (> 0) is the
    control that an action of 1 means; None takes :data:`~diffenvs.action_scale.DEFAULT_ACTION_SCALE`.
    ``max_steps_in_episode`` (1..``num_steps``, default ``num_steps``) truncates episodes earlier.
    """

    def __init__(self, env: str | FunctionalEnv = "CartPole", *, action_scale: float | None = None,
                 max_steps_in_episode: int | None = None, **params: Any):
        super().__init__()
        self.functional_env, self._name, scale = adapted_environment(env, action_scale, params)
        horizon = self.functional_env.num_steps()
        if max_steps_in_episode is None:
            max_steps_in_episode = horizon
        if (isinstance(max_steps_in_episode, bool) or not isinstance(max_steps_in_episode, int)
                or not 1 <= max_steps_in_episode <= horizon):
            raise ValueError(f"max_steps_in_episode must be an integer in 1..num_steps = 1..{horizon}, "
                             f"got {max_steps_in_episode!r}")
        self._default_params = GymnaxEnvParams(max_steps_in_episode=max_steps_in_episode,
                                               env_params=self.functional_env.default_params,
                                               action_scale=scale)

    def __repr__(self) -> str:
        return f"GymnaxEnv({self.functional_env!r}, action_scale={self._default_params.action_scale})"

    @property
    def default_params(self) -> GymnaxEnvParams:
        """The parameters the environment was built with."""
        return self._default_params

    def _checked(self, params: GymnaxEnvParams | None) -> GymnaxEnvParams:
        if params is None:
            return self._default_params
        if not isinstance(params, GymnaxEnvParams):
            raise ValueError(f"params must be a GymnaxEnvParams (e.g. env.default_params or its .replace(...)), "
                             f"got {type(params).__name__}")
        return params

    def control(self, action: jax.Array, params: GymnaxEnvParams | None = None) -> jax.Array:
        """The physical control for an action: ``action_scale * clip(action, -1, 1)``, reshaped.

        Raises ValueError unless ``action`` has shape (num_actions,) (or () when num_actions is 1).
        """
        params = self._checked(params)
        action_shape = tuple(self.functional_env.action_shape(params.env_params))
        flat = (math.prod(action_shape),)
        action = jnp.asarray(action)
        if not action_shape_accepted(action.shape, flat):
            scalar = " (or a scalar)" if flat == (1,) else ""
            raise ValueError(f"action must have shape {flat}{scalar}, got shape {action.shape}")
        if not jnp.issubdtype(action.dtype, jnp.floating):
            action = action.astype(float_dtype())
        return scaled_control(action, params.action_scale, action_shape)

    def reset_env(self, key: jax.Array, params: GymnaxEnvParams) -> tuple[jax.Array, EnvState]:
        """A state from the environment's starting distribution and its observation."""
        params = self._checked(params)
        state = self.functional_env.initial(key, params.env_params)
        return self.functional_env.observation(state, None, params.env_params), state

    def step_env(self, key: jax.Array, state: EnvState, action: jax.Array, params: GymnaxEnvParams
                 ) -> tuple[jax.Array, EnvState, jax.Array, jax.Array, dict[str, jax.Array]]:
        """One step with the control ``action_scale * clip(action, -1, 1)`` (``key`` is unused: the
        physics is deterministic)."""
        params = self._checked(params)
        env, env_params = self.functional_env, params.env_params
        control = self.control(action, params)
        next_state = env.transition(state, control, None, env_params)
        reward = env.reward(state, control, next_state, None, env_params)
        info = {**env.transition_info(state, control, next_state, env_params),
                "discount": jnp.ones((), reward.dtype)}
        return env.observation(next_state, None, env_params), next_state, reward, jnp.zeros((), bool), info

    def get_obs(self, state: EnvState, params: GymnaxEnvParams | None = None, key: Any = None) -> jax.Array:
        """The observation of ``state``: its physical state."""
        return self.functional_env.observation(state, None, self._checked(params).env_params)

    def is_terminated(self, state: EnvState, params: GymnaxEnvParams) -> jax.Array:
        """Always False: episodes end only by truncation after ``max_steps_in_episode`` steps."""
        return jnp.zeros((), bool)

    @property
    def name(self) -> str:
        """The canonical environment name, e.g. ``"CartPole"``."""
        return self._name

    @property
    def num_actions(self) -> int:
        """Number of entries of an action (for the default parameters)."""
        return math.prod(self.functional_env.action_shape())

    def action_space(self, params: GymnaxEnvParams | None = None) -> spaces.Box:
        """Box(-1, 1, (num_actions,)): an action of 1 means the control ``action_scale``."""
        params = self._checked(params)
        size = math.prod(self.functional_env.action_shape(params.env_params))
        return spaces.Box(-1.0, 1.0, (size,), float_dtype())

    def observation_space(self, params: GymnaxEnvParams | None = None) -> spaces.Box:
        """Unbounded Box of the physical state's shape."""
        params = self._checked(params)
        return spaces.Box(-jnp.inf, jnp.inf, tuple(self.functional_env.physics_shape(params.env_params)),
                          float_dtype())

    def state_space(self, params: GymnaxEnvParams | None = None) -> spaces.Dict:
        """Dict of ``physics`` (unbounded Box) and ``time`` (Discrete(max_steps_in_episode + 1))."""
        params = self._checked(params)
        return spaces.Dict({"physics": self.observation_space(params),
                            "time": spaces.Discrete(int(params.max_steps_in_episode) + 1)})


def gymnax_env(name: str | FunctionalEnv, *, action_scale: float | None = None,
               max_steps_in_episode: int | None = None, **params: Any) -> tuple[GymnaxEnv, GymnaxEnvParams]:
    """The environment ``name`` as a gymnax ``Environment`` and its default parameters, like ``gymnax.make``.

    Args:
        name: canonical name, short name or Gymnasium id (e.g. ``"CartPole"``, ``"guidance"``), or a
            :class:`~diffenvs.core.FunctionalEnv`.
        action_scale: the control that an action of 1 means (> 0); None for the environment's default.
        max_steps_in_episode: truncation after this many steps (1..num_steps); None for ``num_steps``.
        **params: fields of the environment's params dataclass (e.g. ``num_poles=2``).

    Returns:
        ``(env, env_params)``: the :class:`GymnaxEnv` and its :class:`GymnaxEnvParams`.

    Raises:
        ValueError: for an unknown name or parameter, or an invalid ``action_scale`` or
            ``max_steps_in_episode``.

    Examples:
        >>> env, env_params = gymnax_env("CartPole", num_poles=2)
    """
    env = GymnaxEnv(name, action_scale=action_scale, max_steps_in_episode=max_steps_in_episode, **params)
    return env, env.default_params
