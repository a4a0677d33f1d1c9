"""Names of the environments and ``make``: the one place that maps a name to its module."""

from __future__ import annotations

import difflib
from typing import Any

from diffenvs.cartpole import CartPole
from diffenvs.core import FunctionalEnv
from diffenvs.guidance import GuidanceByRepulsion
from diffenvs.quantum import QuantumControl

ENVIRONMENTS: dict[str, type[FunctionalEnv]] = {
    "CartPole": CartPole,
    "GuidanceByRepulsion": GuidanceByRepulsion,
    "QuantumControl": QuantumControl,
}
"""Canonical environment names and their classes."""

ALIASES = {"cartpole": "CartPole", "guidance": "GuidanceByRepulsion", "quantum": "QuantumControl"}
"""Short task names (used by the command-line tools) for the canonical names."""

GYM_IDS = {name: f"diffenvs/{name}-v0" for name in ENVIRONMENTS}
"""Gymnasium ids, registered on ``import diffenvs``."""


def canonical_name(name: str) -> str:
    """The canonical environment name for a canonical name, a short alias or a Gymnasium id.

    Raises ValueError naming the three tasks (and the closest one) for any other name."""
    if name in ENVIRONMENTS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    for canonical, gym_id in GYM_IDS.items():
        if name == gym_id:
            return canonical
    close = difflib.get_close_matches(str(name).lower(), list(ALIASES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"name must be one of {list(ALIASES)} (or a canonical name or Gymnasium id of these, "
                     f"e.g. 'CartPole' or 'diffenvs/CartPole-v0'), got {name!r}{hint}")


def make(name: str, **params: Any) -> FunctionalEnv:
    """The functional environment ``name`` with parameters ``params``.

    Args:
        name: a canonical name (``"CartPole"``, ``"GuidanceByRepulsion"``, ``"QuantumControl"``), a
            short alias (``"cartpole"``, ``"guidance"``, ``"quantum"``) or a Gymnasium id
            (``"diffenvs/CartPole-v0"``).
        **params: fields of the environment's parameter dataclass (:class:`~diffenvs.cartpole.CartPoleParams`,
            :class:`~diffenvs.guidance.GuidanceParams`, :class:`~diffenvs.quantum.QuantumParams`), e.g.
            ``num_poles=2``; the others keep the study's values.

    Returns:
        The environment, a :class:`~diffenvs.core.FunctionalEnv`: pure functions of the state, the
            action and (optionally) the differentiable parameters, usable under ``jax.jit``, ``jax.vmap``
            and ``jax.grad``.

    Raises:
        ValueError: ``name`` is none of the three tasks (the message names them and the closest
            match), a parameter is not a field of the task's parameters (the message lists the allowed
            ones), or a parameter's value is out of range.

    Examples:
        >>> env = make("CartPole", num_poles=2)
    """
    environment_class = ENVIRONMENTS[canonical_name(name)]
    fields = {field for field in environment_class.params_type.__dataclass_fields__}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {environment_class.name}; "
                         f"allowed: {sorted(fields)}")
    return environment_class(**params)
