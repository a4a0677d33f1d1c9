"""Names of the environments and ``make``: the one place that maps a name to an environment.

Three kinds of names:

* the built-in environments: a canonical name (``"CartPole"``), a short alias (``"cartpole"``) or a
  Gymnasium id (``"diffenvs/CartPole-v0"``);
* external environments through adapters: ``"gymnax:ENV_ID"`` (``diffenvs.external.gymnax``) and
  ``"brax:NAME"`` (``diffenvs.external.brax``), imported on first use;
* a user's own environments: :func:`register` (``diffenvs.register("my-env", factory)``), or the
  entry-point group ``diffenvs.environments`` of an installed package (name = entry point name, object
  = the factory), loaded on the first look-up of a name that is not otherwise known.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

from diffenvs.cartpole import CartPole
from diffenvs.core import ControlEnv, FunctionalEnv, check_control_env
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


EXTERNAL_PREFIXES = {"gymnax:": ("diffenvs.external.gymnax", "make_gymnax_env"),
                     "brax:": ("diffenvs.external.brax", "make_brax_env")}
"""Reserved name prefixes and the adapter (module, function) that makes their environments."""

ENTRY_POINT_GROUP = "diffenvs.environments"
"""The entry-point group through which installed packages register environment factories."""


class Registration:
    """A registered environment: its factory (``factory(**params) -> env``) and, optionally, a default
    controller for the trainers (``controller(env) -> trainers.Controller``; None: the study's MLP on the
    flattened observation)."""

    def __init__(self, factory: Callable[..., ControlEnv], controller: Callable[[Any], Any] | None = None):
        self.factory = factory
        self.controller = controller


REGISTERED: dict[str, Registration] = {}
"""Environments registered with :func:`register`, by name."""

_entry_points_loaded = False


def _builtin_name(name: str) -> str | None:
    if name in ENVIRONMENTS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    for canonical, gym_id in GYM_IDS.items():
        if name == gym_id:
            return canonical
    return None


def register(name: str, factory: Callable[..., ControlEnv], *,
             controller: Callable[[Any], Any] | None = None) -> Callable[..., ControlEnv]:
    """Make ``factory(**params)`` (an object meeting :class:`~diffenvs.core.ControlEnv`) the environment
    ``name``, for :func:`make` and every trainer and command that names a task.

    Args:
        name: any non-empty string that is not a built-in name, not already registered and does not start
            with a reserved prefix (``gymnax:``, ``brax:``).
        factory: a callable taking the environment's parameters as keywords (e.g. a class).
        controller: optional ``controller(env) -> trainers.Controller``, the default network of the task
            (default: the study's MLP on the flattened observation).

    Returns:
        ``factory``, so that ``register`` can decorate a class or function given with a name.

    Raises:
        ValueError: for a bad name, a clash or a factory that is not callable (one line).
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"name must be a non-empty string without surrounding spaces, got {name!r}")
    prefix = next((prefix for prefix in EXTERNAL_PREFIXES if name.startswith(prefix)), None)
    if prefix is not None:
        raise ValueError(f"name {name!r} starts with the reserved prefix {prefix!r} (external environments); "
                         f"choose another name")
    if _builtin_name(name) is not None:
        raise ValueError(f"name {name!r} is a built-in environment's name; choose another name")
    if name in REGISTERED:
        raise ValueError(f"name {name!r} is already registered (to {REGISTERED[name].factory!r}); "
                         f"choose another name")
    if not callable(factory):
        raise ValueError(f"factory must be callable (factory(**params) -> environment), got {factory!r}")
    if controller is not None and not callable(controller):
        raise ValueError(f"controller must be callable (controller(env) -> Controller) or None, got {controller!r}")
    REGISTERED[name] = Registration(factory, controller)
    return factory


def unregister(name: str) -> None:
    """Remove the registered environment ``name`` (KeyError if it is not registered)."""
    del REGISTERED[name]


def _load_entry_points() -> None:
    """Register the factories of the ``diffenvs.environments`` entry points (once, on first need)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name not in REGISTERED and _builtin_name(entry_point.name) is None:
            REGISTERED[entry_point.name] = Registration(_LazyFactory(entry_point))


class _LazyFactory:
    """An entry point's factory, imported when an environment is first made."""

    def __init__(self, entry_point: Any):
        self.entry_point = entry_point

    def __call__(self, **params: Any) -> ControlEnv:
        try:
            factory = self.entry_point.load()
        except Exception as error:  # noqa: BLE001 - reported in one line
            raise ValueError(f"entry point {self.entry_point.name!r} ({self.entry_point.value}) of group "
                             f"{ENTRY_POINT_GROUP!r} cannot be loaded: {type(error).__name__}: {error}") from None
        return factory(**params)

    def __repr__(self) -> str:
        return f"entry point {self.entry_point.value}"


def registration(name: str) -> Registration | None:
    """The registration of a user's environment ``name`` (entry points included), or None."""
    if _builtin_name(name) is not None:
        return None
    if name not in REGISTERED:
        _load_entry_points()
    return REGISTERED.get(name)


def known_names() -> list[str]:
    """The short names of the built-in environments and every registered name."""
    _load_entry_points()
    return list(ALIASES) + sorted(REGISTERED)


def is_builtin(name: str) -> bool:
    """Whether ``name`` names one of the built-in environments."""
    return _builtin_name(name) is not None


def canonical_name(name: str) -> str:
    """The canonical environment name: for a built-in environment its class's name (from a canonical
    name, a short alias or a Gymnasium id); a registered name or a ``gymnax:``/``brax:`` name as it is.

    Raises ValueError naming the known tasks (and the closest one) for any other name."""
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, got {name!r}")
    builtin = _builtin_name(name)
    if builtin is not None:
        return builtin
    if any(name.startswith(prefix) and len(name) > len(prefix) for prefix in EXTERNAL_PREFIXES):
        return name
    if registration(name) is not None:
        return name
    names = known_names()
    close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    registered = f" {sorted(REGISTERED)}" if REGISTERED else " (none yet)"
    raise ValueError(f"name must be one of {list(ALIASES)} (or a canonical name or Gymnasium id of these, e.g. "
                     f"'CartPole' or 'diffenvs/CartPole-v0'), 'gymnax:ENV_ID', 'brax:NAME' or a name given to "
                     f"diffenvs.register{registered}, got {name!r}{hint}")


def _external(name: str, params: dict[str, Any]) -> ControlEnv:
    prefix = next(prefix for prefix in EXTERNAL_PREFIXES if name.startswith(prefix))
    module_name, function_name = EXTERNAL_PREFIXES[prefix]
    try:
        make_external = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"name {name!r}: the {prefix[:-1]} adapter ({module_name}.{function_name}) cannot be "
                         f"imported: {error}") from None
    return make_external(name[len(prefix):], **params)


def make(name: str, **params: Any) -> ControlEnv:
    """The functional environment ``name`` with parameters ``params``.

    A built-in environment takes the fields of its params dataclass; ``gymnax:ENV_ID`` and ``brax:NAME``
    go to their adapters, a registered name to its factory.

    Args:
        name: a built-in environment's canonical name (``"CartPole"``, ``"GuidanceByRepulsion"``,
            ``"QuantumControl"``), short alias (``"cartpole"``, ``"guidance"``, ``"quantum"``) or
            Gymnasium id (``"diffenvs/CartPole-v0"``); ``"gymnax:ENV_ID"``, ``"brax:NAME"``; or a name
            registered with :func:`register`.
        **params: for a built-in environment, fields of its parameter dataclass
            (:class:`~diffenvs.cartpole.CartPoleParams`, :class:`~diffenvs.guidance.GuidanceParams`,
            :class:`~diffenvs.quantum.QuantumParams`), e.g. ``num_poles=2``, the others keeping the
            study's values; otherwise the keyword arguments of the adapter or the registered factory.

    Returns:
        The environment: pure functions of the state, the action and (optionally) the differentiable
            parameters, usable under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

    Raises:
        ValueError: an unknown name (the message names the known ones and the closest match), a
            parameter the environment does not take (the message lists the allowed ones), a
            parameter's value out of range, or an adapter that cannot be imported.

    Examples:
        >>> env = make("CartPole", num_poles=2)
    """
    canonical = canonical_name(name)
    if canonical not in ENVIRONMENTS:
        if canonical in REGISTERED:
            factory = REGISTERED[canonical].factory
            try:
                env = factory(**params)
            except TypeError as error:
                raise ValueError(f"parameters {params} for {canonical!r}: {error}") from None
            return check_control_env(env, f"the environment made by the factory of {canonical!r}")
        return check_control_env(_external(canonical, params), f"the environment {canonical!r}")
    environment_class = ENVIRONMENTS[canonical]
    fields = {field for field in environment_class.params_type.__dataclass_fields__}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {environment_class.name}; "
                         f"allowed: {sorted(fields)}")
    return environment_class(**params)
