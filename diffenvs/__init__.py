"""diffenvs: differentiable JAX physics control problems.

The three problems of "Stabilizing Backpropagation Through Time to Learn Complex Physics" as pure,
jit-, vmap- and grad-compatible functional environments, with Gymnasium ids registered on import, and
the protocol (:class:`ControlEnv`) that any differentiable JAX environment meets to be trained with
``trainers``: ``register`` a factory under a name, ``check_gradients`` against finite differences.

Examples:
    >>> import diffenvs, jax
    >>> env = diffenvs.make("CartPole", num_poles=2)
    >>> state = env.initial(jax.random.PRNGKey(0))

``brax_env`` and ``BraxEnv`` (the brax adapter, :mod:`diffenvs.brax_adapter`) and ``gymnax_env`` and
``GymnaxEnv`` (the gymnax adapter, :mod:`diffenvs.gymnax_adapter`) are imported lazily on first access:
importing brax or gymnax is slow, and gymnax is optional (``pip install "diffenvs[gymnax]"``).
"""

from typing import Any

from diffenvs.cartpole import CartPole, CartPoleParams
from diffenvs.core import ControlEnv, EnvState, FunctionalEnv
from diffenvs.gradcheck import GradientCheck, GradientCheckError, check_gradients
from diffenvs.guidance import GuidanceByRepulsion, GuidanceParams
from diffenvs.quantum import QuantumControl, QuantumParams
from diffenvs.registry import ENVIRONMENTS, GYM_IDS, make, register, unregister
from diffenvs.gym_adapter import GymEnv, GymVectorEnv, register_environments

register_environments()

__version__ = "0.2.0"     # the one place of the version: pyproject.toml reads it from here

__all__ = [
    "CartPole", "CartPoleParams", "ControlEnv", "EnvState", "FunctionalEnv", "GradientCheck",
    "GradientCheckError", "check_gradients", "register", "unregister", "GuidanceByRepulsion", "GuidanceParams",
    "QuantumControl", "QuantumParams", "ENVIRONMENTS", "GYM_IDS", "make", "GymEnv", "GymVectorEnv",
    "register_environments", "brax_env", "BraxEnv", "gymnax_env", "GymnaxEnv",
]

_LAZY = {"brax_env": "diffenvs.brax_adapter", "BraxEnv": "diffenvs.brax_adapter",
         "gymnax_env": "diffenvs.gymnax_adapter", "GymnaxEnv": "diffenvs.gymnax_adapter"}


def __getattr__(name: str) -> Any:
    """Import the brax or gymnax adapter on first access of one of its names."""
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'diffenvs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
