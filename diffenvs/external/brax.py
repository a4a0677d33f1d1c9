"""brax environments behind the functional-environment protocol.

``make_brax_env("halfcheetah", pipeline="generalized")`` wraps
``brax.envs.get_environment("halfcheetah", backend="generalized")``:

* state: brax's ``State`` (``pipeline_state``, ``obs``, ``reward``, ``done``, ``metrics``, ``info``);
* transition: brax's ``step`` (deterministic; no autoreset);
* action: a flat vector of ``action_size`` entries in brax's units, passed to ``step`` unchanged (brax's
  actuators clip it to their control range);
* reward: brax's reward of the step (stored in the next state by ``step``);
* terminal: brax's ``done`` (e.g. a hopper that falls), as a bool scalar;
* horizon: ``num_steps`` (default 1000, brax's usual episode length);
* pipeline: brax's physics pipeline, one of :data:`BRAX_PIPELINES`; None keeps the environment's
  default. Gradients through ``mjx`` are not checked here; ``generalized`` is brax's differentiable
  pipeline of reference (the one its APG trainer uses).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from diffenvs.brax_adapter import import_brax_quietly
from diffenvs.core import check_action_shape, check_positive, params_dataclass, static_field
from diffenvs.external import keep_dtypes

import_brax_quietly()

from brax import envs as brax_envs  # noqa: E402

BRAX_PIPELINES = ("generalized", "positional", "spring", "mjx")
"""brax 0.14's physics pipelines (``backend`` of ``brax.envs.get_environment``)."""

Array = jax.Array


@params_dataclass
class BraxParams:
    """Parameters of a wrapped brax environment: the horizon ``num_steps`` (static). The physical
    parameters are brax's constructor arguments, fixed when the environment is made."""

    num_steps: int = static_field(1000)

    def __post_init__(self) -> None:
        check_positive("num_steps", self.num_steps, integer=True)


class BraxFunctionalEnv:
    """A brax environment as a functional environment (see the module)."""

    def __init__(self, name: str, pipeline: str | None = None, num_steps: int = 1000, **params: Any):
        known = sorted(brax_envs._envs)  # brax's registry of environment names
        if not isinstance(name, str) or name not in known:
            raise ValueError(f"name must be a brax environment, one of {known}, got {name!r}")
        if pipeline is not None and pipeline not in BRAX_PIPELINES:
            raise ValueError(f"pipeline must be one of {list(BRAX_PIPELINES)} or None (the environment's "
                             f"default), got {pipeline!r}")
        self.default_params = BraxParams(num_steps=num_steps)
        arguments = dict(params) if pipeline is None else {**params, "backend": pipeline}
        try:
            self.env = brax_envs.get_environment(name, **arguments)
        except TypeError as error:
            raise ValueError(f"bad parameter(s) {sorted(params)} for brax environment {name!r}: {error}") from None
        if not isinstance(self.env.observation_size, int):
            raise ValueError(f"brax environment {name!r} has structured observations "
                             f"({self.env.observation_size}); only flat observation vectors are supported")
        self.brax_name = name
        self.pipeline = self.env.backend
        self.name = f"brax:{name}"

    def __repr__(self) -> str:
        return f"BraxFunctionalEnv({self.brax_name!r}, pipeline={self.pipeline!r}, {self.default_params})"

    def _params(self, params: BraxParams | None) -> BraxParams:
        return self.default_params if params is None else params

    def num_steps(self, params: BraxParams | None = None) -> int:
        """Horizon (steps)."""
        return self._params(params).num_steps

    def action_shape(self, params: BraxParams | None = None) -> tuple[int, ...]:
        """(action_size,)."""
        return (self.env.action_size,)

    def observation_shape(self, params: BraxParams | None = None) -> tuple[int, ...]:
        """(observation_size,)."""
        return (self.env.observation_size,)

    def initial(self, rng: Array, params: BraxParams | None = None) -> Any:
        """brax's ``reset(rng)``."""
        return self.env.reset(rng)

    def transition(self, state: Any, action: Any, rng: Array | None = None, params: BraxParams | None = None) -> Any:
        """brax's ``step(state, action)``, the state's dtypes kept; deterministic (``rng`` is accepted for
        the protocol only)."""
        return keep_dtypes(self.env.step(state, check_action_shape(action, self.action_shape(params))), state)

    def reward(self, state: Any, action: Any, next_state: Any, rng: Array | None = None,
               params: BraxParams | None = None) -> Array:
        """brax's reward of the step from ``state`` to ``next_state`` (scalar)."""
        return jnp.asarray(next_state.reward).reshape(())

    def observation(self, state: Any, rng: Array | None = None, params: BraxParams | None = None) -> Array:
        """brax's observation (shape (observation_size,))."""
        return state.obs

    def terminal(self, state: Any, rng: Array | None = None, params: BraxParams | None = None) -> Array:
        """brax's ``done`` as a bool scalar."""
        return jnp.asarray(state.done).reshape(()) > 0.5


def make_brax_env(name: str, pipeline: str | None = None, **params: Any) -> BraxFunctionalEnv:
    """The brax environment ``name`` as a functional environment.

    Args:
        name: a brax environment name, e.g. ``"inverted_pendulum"`` or ``"halfcheetah"``.
        pipeline: one of :data:`BRAX_PIPELINES`, or None for the environment's default.
        **params: ``num_steps`` (horizon, default 1000) and brax's constructor arguments of the
            environment (e.g. ``ctrl_cost_weight``).

    Returns:
        The :class:`BraxFunctionalEnv`.

    Raises:
        ValueError: for an unknown name, pipeline or constructor argument, or a bad horizon.

    Examples:
        >>> env = make_brax_env("inverted_pendulum", pipeline="generalized", num_steps=100)
    """
    return BraxFunctionalEnv(name, pipeline, **params)

