"""Shared machinery of the functional environments: the state type, the base class and validation.

Every environment is a pure, single-instance functional environment in Gymnasium's functional-env
style: ``initial``, ``transition``, ``observation``, ``reward`` and ``terminal`` take explicit
parameters, contain no Python side effects, and work under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
The physics of each problem lives in its own module; this one holds only what they share.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ParamsT = TypeVar("ParamsT")


class EnvState(NamedTuple):
    """State of one environment instance.

    ``physics`` is the physical state in the layout of the specification (float); ``time`` is the
    number of steps taken since reset (int32 scalar). Differentiate with respect to ``physics``.
    """

    physics: Array
    time: Array


def float_dtype() -> jnp.dtype:
    """The default float dtype: float32, or float64 when JAX x64 mode is enabled."""
    return jnp.result_type(float)


def static_field(default: Any) -> Any:
    """A dataclass field that is static (shape-determining) under jit, not a differentiable leaf."""
    return dataclasses.field(default=default, metadata={"static": True})


def params_dataclass(cls: type) -> type:
    """Make ``cls`` a frozen dataclass registered as a JAX pytree.

    Fields declared with :func:`static_field` are static metadata; every other field is a leaf, so
    float parameters can be traced and differentiated.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(cls)


def _concrete_number(value: Any) -> float | None:
    """The value as a Python float when it is a concrete number, else None (tracers, arrays)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == ():
        return float(value)
    return None


def check_positive(name: str, value: Any, *, integer: bool = False, minimum: float = 0.0,
                   inclusive: bool = False) -> None:
    """Raise ValueError unless ``value`` is a finite number > minimum (>= with ``inclusive``).

    Traced and array values are not checked (they appear inside jit, grad and tree operations).
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer >= {int(minimum) + (0 if inclusive else 1)}, "
                             f"got {value!r}")
    number = _concrete_number(value)
    if number is None:
        return
    below = number < minimum if inclusive else number <= minimum
    if not math.isfinite(number) or below:
        relation = ">=" if inclusive else ">"
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {relation} {minimum:g}, got {value!r}")


def check_range(low_name: str, low: Any, high_name: str, high: Any) -> None:
    """Raise ValueError unless ``high >= low`` (concrete numbers only, like :func:`check_positive`)."""
    low_number, high_number = _concrete_number(low), _concrete_number(high)
    if low_number is not None and high_number is not None and high_number < low_number:
        raise ValueError(f"{high_name} must be >= {low_name} = {low!r}, got {high!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def action_shape_accepted(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Whether an action of ``shape`` is accepted for the action shape ``expected``: exactly
    ``expected``, or () when the action has one entry."""
    return tuple(shape) == tuple(expected) or (tuple(shape) == () and math.prod(expected) == 1)


def check_action_shape(action: Any, expected: tuple[int, ...]) -> Array:
    """Return ``action`` as a float array of shape ``expected``, or raise ValueError.

    Only the shape ``expected`` is accepted, and a scalar (shape ()) where the action has exactly one
    entry; any other shape raises, even one with the right number of entries (e.g. (1, 1) for (1,)).
    The check is static (shapes are known at trace time), so it raises at the call even under jit.
    """
    action = jnp.asarray(action)
    if not action_shape_accepted(action.shape, expected):
        scalar = " (or a scalar)" if math.prod(expected) == 1 else ""
        raise ValueError(f"action must have shape {expected}{scalar}, got shape {action.shape}")
    if not jnp.issubdtype(action.dtype, jnp.floating):
        action = action.astype(float_dtype())
    return action.reshape(expected)


@runtime_checkable
class ControlEnv(Protocol):
    """What the trainers need of a differentiable environment: pure JAX functions of an explicit state.

    The state is any pytree (arrays in nested tuples, lists, dicts, dataclasses registered as pytrees);
    the trainers batch it with ``jax.vmap`` and differentiate through its floating-point leaves. Every
    method takes ``params`` (None: ``default_params``) and must work under ``jax.jit``, ``jax.vmap`` and
    ``jax.grad``. The built-in environments (:class:`FunctionalEnv` subclasses, state
    :class:`EnvState`) meet it; so does any object with these members, whatever its base class.

    * ``name``: the environment's name (str); ``default_params``: its parameters (any pytree, or None).
    * ``initial(rng, params=None) -> state``: a state of the starting distribution (``rng`` a PRNG key).
    * ``transition(state, action, rng=None, params=None) -> state``: one step.
    * ``reward(state, action, next_state, rng=None, params=None) -> scalar``: the step's reward; the
      trainers' per-step loss is minus it and an episode's loss is minus its return over the horizon.
    * ``observation(state, rng=None, params=None) -> Array`` of shape ``observation_shape(params)``:
      the controller's input (it may differ from the state).
    * ``terminal(state, rng=None, params=None) -> bool scalar``: whether the episode has ended; steps
      taken from a terminal state add no loss and no gradient (the state is frozen).
    * ``num_steps(params=None) -> int``: the horizon, steps per episode.
    * ``action_shape(params=None) -> tuple[int, ...]`` and ``observation_shape(params=None)``.

    Optional: ``terminates_early`` (bool, default True): False promises that ``terminal`` is never true
    before ``num_steps`` steps, and the trainers then skip the termination mask.
    """

    name: str
    default_params: Any

    def initial(self, rng: Array, params: Any = None) -> Any: ...

    def transition(self, state: Any, action: Any, rng: Array | None = None, params: Any = None) -> Any: ...

    def reward(self, state: Any, action: Any, next_state: Any, rng: Array | None = None,
               params: Any = None) -> Array: ...

    def observation(self, state: Any, rng: Array | None = None, params: Any = None) -> Array: ...

    def terminal(self, state: Any, rng: Array | None = None, params: Any = None) -> Array: ...

    def num_steps(self, params: Any = None) -> int: ...

    def action_shape(self, params: Any = None) -> tuple[int, ...]: ...

    def observation_shape(self, params: Any = None) -> tuple[int, ...]: ...


PROTOCOL_METHODS = ("initial", "transition", "reward", "observation", "terminal", "num_steps", "action_shape",
                    "observation_shape")
"""The methods of :class:`ControlEnv`."""


def check_control_env(env: Any, what: str = "environment") -> Any:
    """Return ``env`` if it meets :class:`ControlEnv`, else raise ValueError naming the first missing member."""
    for member in ("name", "default_params", *PROTOCOL_METHODS):
        if not hasattr(env, member) or (member in PROTOCOL_METHODS and not callable(getattr(env, member))):
            kind = "method" if member in PROTOCOL_METHODS else "attribute"
            raise ValueError(f"{what} must meet the diffenvs.ControlEnv protocol, but {type(env).__name__} has no "
                             f"{kind} {member!r}")
    return env


class FunctionalEnv(Generic[ParamsT]):
    """Base class of the built-in environments: a pure, single-instance environment with explicit parameters.

    It meets :class:`ControlEnv` with the state :class:`EnvState`.

    Subclasses set ``name`` and ``params_type`` and implement :meth:`initial_physics`,
    :meth:`step_physics`, :meth:`step_loss` and the spaces. Every method takes ``params``; when it is
    None the environment's ``default_params`` are used. All methods are pure JAX functions.
    """

    name: ClassVar[str]
    params_type: ClassVar[type]
    terminates_early: ClassVar[bool] = False
    """Episodes end only at the horizon (``terminal`` is ``time >= num_steps``)."""

    def __init__(self, params: ParamsT | None = None, **overrides: Any):
        if params is None:
            params = self.params_type(**overrides)
        elif overrides:
            params = dataclasses.replace(params, **overrides)
        if not isinstance(params, self.params_type):
            raise ValueError(f"params must be a {self.params_type.__name__}, got {type(params).__name__}")
        self.default_params: ParamsT = params

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.default_params})"

    def _params(self, params: ParamsT | None) -> ParamsT:
        return self.default_params if params is None else params

    # --- the physics, implemented by each environment module -----------------------------------
    def initial_physics(self, key: Array, params: ParamsT) -> Array:
        raise NotImplementedError

    def step_physics(self, physics: Array, action: Array, params: ParamsT) -> Array:
        raise NotImplementedError

    def step_loss(self, action: Array, next_physics: Array, next_time: Array, params: ParamsT) -> Array:
        """This step's contribution to the instance's loss; the episode sum is the instance's loss."""
        raise NotImplementedError

    def num_steps(self, params: ParamsT | None = None) -> int:
        """Episode length (steps); episodes end by truncation after it."""
        return self._params(params).num_steps

    def action_shape(self, params: ParamsT | None = None) -> tuple[int, ...]:
        raise NotImplementedError

    def physics_shape(self, params: ParamsT | None = None) -> tuple[int, ...]:
        raise NotImplementedError

    def observation_shape(self, params: ParamsT | None = None) -> tuple[int, ...]:
        """The shape of :meth:`observation`: the physical state's."""
        return self.physics_shape(params)

    # --- Gymnasium functional-env interface ------------------------------------------------------
    def initial(self, rng: Array, params: ParamsT | None = None) -> EnvState:
        """A state drawn from the starting distribution; ``rng`` is a JAX PRNG key."""
        params = self._params(params)
        return EnvState(self.initial_physics(rng, params), jnp.zeros((), jnp.int32))

    def transition(self, state: EnvState, action: Any, rng: Array | None = None,
                   params: ParamsT | None = None) -> EnvState:
        """One simulator step. Deterministic: ``rng`` is accepted for API compatibility only."""
        params = self._params(params)
        action = check_action_shape(action, self.action_shape(params))
        return EnvState(self.step_physics(state.physics, action, params), state.time + 1)

    def observation(self, state: EnvState, rng: Array | None = None,
                    params: ParamsT | None = None) -> Array:
        """The full physical state (the layout is in each environment's module docstring)."""
        return state.physics

    def reward(self, state: EnvState, action: Any, next_state: EnvState, rng: Array | None = None,
               params: ParamsT | None = None) -> Array:
        """Minus this step's loss contribution: the episode return is minus the instance's loss."""
        params = self._params(params)
        action = check_action_shape(action, self.action_shape(params))
        return -self.step_loss(action, next_state.physics, next_state.time, params)

    def terminal(self, state: EnvState, rng: Array | None = None, params: ParamsT | None = None) -> Array:
        """Whether the episode has reached its horizon (the only way an episode ends)."""
        return state.time >= self.num_steps(params)

    def state_info(self, state: EnvState, params: ParamsT | None = None) -> dict[str, Array]:
        return {}

    def transition_info(self, state: EnvState, action: Any, next_state: EnvState,
                        params: ParamsT | None = None) -> dict[str, Array]:
        """Loss terms of this transition (see each environment)."""
        params = self._params(params)
        action = check_action_shape(action, self.action_shape(params))
        return self.loss_terms(action, next_state.physics, next_state.time, params)

    def loss_terms(self, action: Array, next_physics: Array, next_time: Array,
                   params: ParamsT) -> dict[str, Array]:
        return {"loss": self.step_loss(action, next_physics, next_time, params)}

    # --- conveniences built on the interface -----------------------------------------------------
    def rollout(self, initial_state: EnvState, actions: Array,
                params: ParamsT | None = None) -> tuple[EnvState, Array]:
        """Open-loop rollout with ``lax.scan``.

        ``actions`` has shape (num_steps, *action_shape). Returns (final state, per-step losses of
        shape (num_steps,)); the loss of the instance is the sum of the per-step losses.
        """
        params = self._params(params)
        self._check_actions(actions, params, full_episode=False)

        def body(state, action):
            next_state = self.transition(state, action, None, params)
            return next_state, -self.reward(state, action, next_state, None, params)

        return jax.lax.scan(body, initial_state, actions)

    def _check_actions(self, actions: Array, params: ParamsT, full_episode: bool) -> None:
        """Raise ValueError unless ``actions`` is (steps, *action_shape), steps = num_steps for a full
        episode or 1..num_steps otherwise (a single-entry action may be given as (steps,))."""
        steps, action_shape = self.num_steps(params), self.action_shape(params)
        shape = tuple(jnp.shape(actions))
        per_step_ok = len(shape) >= 1 and (shape[1:] == action_shape
                                           or (shape[1:] == () and math.prod(action_shape) == 1))
        length_ok = len(shape) >= 1 and (shape[0] == steps if full_episode else 1 <= shape[0] <= steps)
        if not (per_step_ok and length_ok):
            length = f"num_steps = {steps}" if full_episode else f"1..num_steps = 1..{steps}"
            raise ValueError(f"actions must have shape (steps, *action_shape) with steps = {length} and "
                             f"action_shape = {action_shape}, got shape {shape}")

    def episode_loss(self, initial_state: EnvState, actions: Array, params: ParamsT | None = None) -> Array:
        """The loss of one instance under an open-loop control sequence (scalar).

        ``actions`` has shape (num_steps, *action_shape).
        """
        self._check_actions(actions, self._params(params), full_episode=True)
        return self.rollout(initial_state, actions, params)[1].sum()

    def render_image(self, state: EnvState, render_state: Any = None,
                     params: ParamsT | None = None) -> tuple[Any, np.ndarray]:
        """An (H, W, 3) uint8 frame of ``state``."""
        raise NotImplementedError

    def render_init(self, params: ParamsT | None = None, **kwargs: Any) -> None:
        return None

    def render_close(self, render_state: Any, params: ParamsT | None = None) -> None:
        return None

