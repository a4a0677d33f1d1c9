"""Names of the environments and ``make``: the one place that maps a name to its module."""

from __future__ import annotations

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
    """The canonical environment name for a canonical name, a short alias or a Gymnasium id."""
    if name in ENVIRONMENTS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    for canonical, gym_id in GYM_IDS.items():
        if name == gym_id:
            return canonical
    allowed = sorted(ENVIRONMENTS) + sorted(ALIASES) + sorted(GYM_IDS.values())
    raise ValueError(f"name must be one of {allowed}, got {name!r}")


def make(name: str, **params: Any) -> FunctionalEnv:
    """The functional environment ``name`` with parameters ``params`` (see its params dataclass).

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
