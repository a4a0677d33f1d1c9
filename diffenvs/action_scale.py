"""Bounded actions for RL adapters: an action in [-1, 1] means ``action_scale`` times that control.

Shared by the brax adapter (:mod:`diffenvs.brax_adapter`) and the gymnax adapter
(:mod:`diffenvs.gymnax_adapter`), with the environment they adapt; imports neither brax nor gymnax.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffenvs.core import FunctionalEnv
from diffenvs.registry import canonical_name, make

DEFAULT_ACTION_SCALE: dict[str, float] = {"CartPole": 40.0, "GuidanceByRepulsion": 10.0, "QuantumControl": 10.0}
"""Control magnitude that an action of 1 means, per environment: large enough for the controls that the
trainers' ``combined`` strategy learns (largest |control| on test states after the default short runs:
cart-pole 39 N, guidance 6.8, quantum 9.5; see docs/rl-comparison.md)."""


def check_action_scale(action_scale: Any) -> float:
    """``action_scale`` as a float, or ValueError unless it is a finite real number > 0."""
    if isinstance(action_scale, (bool, np.bool_)) or not isinstance(action_scale, (int, float, np.integer,
                                                                                     np.floating)):
        raise ValueError(f"action_scale must be a finite number > 0 (or None for the default), "
                         f"got {action_scale!r}")
    value = float(action_scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"action_scale must be a finite number > 0 (or None for the default), "
                         f"got {action_scale!r}")
    return value


def scaled_control(action: jax.Array, action_scale: Any, action_shape: tuple[int, ...]) -> jax.Array:
    """The physical control ``action_scale * clip(action, -1, 1)`` reshaped to ``action_shape``."""
    return action_scale * jnp.clip(action, -1.0, 1.0).reshape(action_shape)


def adapted_environment(env: str | FunctionalEnv, action_scale: Any,
                        params: dict[str, Any]) -> tuple[FunctionalEnv, str, float]:
    """(functional environment, canonical name, action scale) for an RL adapter.

    ``env`` is an environment name (canonical, short or Gymnasium id, built with ``params``) or a
    :class:`~diffenvs.core.FunctionalEnv` (then ``params`` must be empty); ``action_scale`` None takes
    :data:`DEFAULT_ACTION_SCALE`. Raises ValueError for anything else.
    """
    if isinstance(env, FunctionalEnv):
        if params:
            raise ValueError(f"params {sorted(params)} apply only to an environment given by name; "
                             f"pass them to the FunctionalEnv instead")
        functional_env = env
    elif isinstance(env, str):
        functional_env = make(env, **params)
    else:
        raise ValueError(f"env must be an environment name or a FunctionalEnv, got {env!r}")
    name = canonical_name(functional_env.name)
    scale = DEFAULT_ACTION_SCALE[name] if action_scale is None else check_action_scale(action_scale)
    return functional_env, name, scale
