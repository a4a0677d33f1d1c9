"""Differentiable environments of other JAX libraries behind the functional-environment protocol.

The trainers accept any object with the methods ``initial``, ``transition``, ``reward``,
``observation``, ``terminal``, ``num_steps``, ``action_shape``, ``observation_shape`` and the attributes
``name`` and ``default_params`` (the interface of :class:`diffenvs.core.FunctionalEnv`, with any pytree
as the state). This package wraps:

* gymnax environments that support transition gradients: :func:`make_gymnax_env` (module
  :mod:`diffenvs.external.gymnax`, needs ``pip install "diffenvs[gymnax]"``);
* brax environments: :func:`make_brax_env` (module :mod:`diffenvs.external.brax`).

Both names are imported lazily: ``import diffenvs.external`` imports neither gymnax nor brax.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["make_gymnax_env", "make_brax_env", "GymnaxFunctionalEnv", "BraxFunctionalEnv"]

_LAZY = {"make_gymnax_env": "diffenvs.external.gymnax", "GymnaxFunctionalEnv": "diffenvs.external.gymnax",
         "make_brax_env": "diffenvs.external.brax", "BraxFunctionalEnv": "diffenvs.external.brax"}


def keep_dtypes(new_state: Any, old_state: Any) -> Any:
    """``new_state`` with each leaf cast to the dtype of the same leaf of ``old_state`` (when the two
    have the same tree structure), so that a step keeps the state's dtypes (``lax.scan`` requires it;
    brax, for one, returns a float32 ``done`` after a float64 one in x64 mode)."""
    import jax
    import jax.numpy as jnp

    if jax.tree.structure(new_state) != jax.tree.structure(old_state):
        return new_state
    return jax.tree.map(lambda new, old: jnp.asarray(new, jnp.result_type(old)), new_state, old_state)


def __getattr__(name: str) -> Any:
    """Import the gymnax or brax wrapper on first access of one of its names."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffenvs.external' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
