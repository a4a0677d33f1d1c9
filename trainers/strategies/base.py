"""The strategy protocol: what a gradient strategy is, and the registry that makes one by name.

A strategy turns (problem, controller params, batch of initial states, PRNG key) into a
:class:`StrategyResult`: the batch loss of the forward rollout, the update direction (a pytree like
the params, to be *descended*: clipping and the optimizer act on it) and scalar metrics.

Like an optax transformation, a strategy may own state (a critic and its optimizer, running
statistics): ``init(problem, params, key) -> state`` makes it, and the stateful ``compute`` takes it
and returns the new one. The state is a pytree of arrays; it is vmapped over the runs of a sweep group,
checkpointed with the run and restored on resume. A stateless strategy is one function::

    def compute(problem, params, states, key) -> StrategyResult: ...
    mine = Strategy("mine", compute, "what it does")

and a stateful one two::

    def init(problem, params, key) -> state: ...
    def compute(problem, params, states, key, state) -> tuple[StrategyResult, state]: ...
    mine = Strategy("mine", compute, "what it does", init=init, metric_names=("critic_loss",))

``metric_names`` lists the scalar metrics that ``compute`` returns in ``StrategyResult.metrics`` (every
call, the same names): each becomes a column of ``metrics.csv`` holding its mean over the epoch's
batches. ``cosine`` is a column of every run (NaN unless the strategy reports it).

A named strategy with parameters is a *factory* registered with :func:`register`: ``get_strategy``
and the spellings of the command line (``NAME``, ``NAME:VALUE``, ``NAME:key=value,key=value``, see
:func:`parse_strategy`) then reach it in ``train``, ``diffenvs-train``, ``diffenvs-sweep`` and
``diffenvs-compare``. The command line reaches a strategy registered in a module with ``--import
MODULE``, and an installed package's strategies through the entry-point group ``diffenvs.strategies``
(:data:`ENTRY_POINT_GROUP`, loaded on the first look-up of an unknown name).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from trainers.rollout import Problem, State

Array = jax.Array


class StrategyResult(NamedTuple):
    """Batch loss (scalar), update direction (pytree like params) and scalar strategy metrics."""

    loss: Array
    update: Any
    metrics: dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A named gradient strategy.

    Stateless (``init`` None): ``compute(problem, params, states, key) -> StrategyResult``.
    Stateful: ``init(problem, params, key) -> state`` and
    ``compute(problem, params, states, key, state) -> (StrategyResult, state)``.
    Writing one is explained in the guide "Writing a strategy".

    Attributes:
        name: the name it is registered and recorded under (e.g. ``"bptt"``).
        compute: the update of one batch: a pure function of the :class:`~trainers.rollout.Problem`,
            the controller's params, the batch of states (an ``EnvState`` with a leading batch axis), a
            PRNG key and, when stateful, the strategy's state; returns a :class:`StrategyResult` (and
            the new state).
        description: one line on what the strategy computes, for readers.
        init: None for a stateless strategy, else ``init(problem, params, key) -> state``, the state
            (a pytree) before the first update.
        metric_names: the metrics ``compute`` reports in ``StrategyResult.metrics``, written as
            ``metrics.csv`` columns.
    """

    name: str
    compute: Callable[..., Any]
    description: str = ""
    init: Callable[[Problem, Any, Array], Any] | None = None
    metric_names: tuple[str, ...] = ()

    @property
    def stateful(self) -> bool:
        return self.init is not None

    def initial_state(self, problem: Problem, params: Any, key: Array) -> Any:
        """The strategy's state before the first update (``()`` for a stateless strategy)."""
        return () if self.init is None else self.init(problem, params, key)

    def apply(self, problem: Problem, params: Any, states: State, key: Array,
              state: Any = ()) -> tuple[StrategyResult, Any]:
        """(result, new strategy state) for either kind of strategy."""
        if self.init is None:
            return self.compute(problem, params, states, key), state
        return self.compute(problem, params, states, key, state)

    def __call__(self, problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
        """The result of a stateless strategy (a stateful one needs :meth:`apply`)."""
        if self.init is not None:
            raise TypeError(f"strategy {self.name!r} owns state: call apply(problem, params, states, key, "
                            f"state) with state = initial_state(problem, params, key)")
        return self.compute(problem, params, states, key)


def sign_agreement(modified_update: Any, true_gradient: Any) -> Any:
    """Per scalar: the modified component where its sign equals the true gradient's, else 0.

    sign(0) = 0, so a component where either is exactly zero gives 0.
    """
    return jax.tree.map(lambda m, g: jnp.where(jnp.sign(m) == jnp.sign(g), m, jnp.zeros_like(m)),
                        modified_update, true_gradient)


def cosine_similarity(a: Any, b: Any) -> Array:
    """Cosine of the angle between two pytrees seen as flat vectors (0 when either is zero)."""
    dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    norm = jnp.sqrt(sum(jnp.vdot(x, x) for x in jax.tree.leaves(a))
                    * sum(jnp.vdot(y, y) for y in jax.tree.leaves(b)))
    return jnp.where(norm > 0, dot / jnp.where(norm > 0, norm, 1.0), 0.0)


# ------------------------------------------------------------------------------------------ registry

STRATEGIES: dict[str, Strategy] = {}
"""Parameterless strategies by name (the study's ``bptt``, ``modified``, ...)."""
FACTORIES: dict[str, Callable[..., Strategy]] = {}
"""Strategies with parameters by name: ``FACTORIES[name](**options) -> Strategy``."""


def register(item: Strategy | Callable[..., Strategy], name: str | None = None):
    """Make a strategy (or a factory of strategies, called with keyword options) selectable by name.

    Returns ``item``, so it works as a decorator on a factory function.
    """
    if isinstance(item, Strategy):
        STRATEGIES[name or item.name] = item
    else:
        FACTORIES[name or item.__name__] = item
    return item


ENTRY_POINT_GROUP = "diffenvs.strategies"
"""The entry-point group through which installed packages register strategies (name -> a Strategy or a
factory of strategies), loaded on the first look-up of a name that is not registered."""

_entry_points_loaded = False


def load_entry_points() -> None:
    """Register the strategies of the ``diffenvs.strategies`` entry points (once; a name already
    registered is kept). An entry point that cannot be loaded raises ValueError naming it."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in STRATEGIES or entry_point.name in FACTORIES:
            continue
        try:
            item = entry_point.load()
        except Exception as error:  # noqa: BLE001 - reported in one line
            raise ValueError(f"entry point {entry_point.name!r} ({entry_point.value}) of group "
                             f"{ENTRY_POINT_GROUP!r} cannot be loaded: {type(error).__name__}: {error}") from None
        if not (isinstance(item, Strategy) or callable(item)):
            raise ValueError(f"entry point {entry_point.name!r} of group {ENTRY_POINT_GROUP!r} must be a Strategy "
                             f"or a factory of strategies, got {item!r}")
        register(item, entry_point.name)


def strategy_names() -> list[str]:
    """Every name :func:`get_strategy` accepts (entry points included)."""
    load_entry_points()
    return sorted(STRATEGIES) + sorted(FACTORIES)


def factory_options(name: str) -> dict[str, Any]:
    """The options of factory ``name`` with their defaults (``inspect.Parameter.empty`` if required)."""
    return {parameter.name: parameter.default
            for parameter in inspect.signature(FACTORIES[name]).parameters.values()}


def get_strategy(strategy: str | Strategy, options: dict[str, Any] | None = None) -> Strategy:
    """A :class:`Strategy` from a registered name (with ``options`` for a factory) or a Strategy."""
    options = dict(options or {})
    if isinstance(strategy, str) and strategy not in STRATEGIES and strategy not in FACTORIES:
        load_entry_points()
    if isinstance(strategy, Strategy):
        if options:
            raise ValueError(f"strategy_options apply to named strategies, got {options!r} with a Strategy object")
        return strategy
    if strategy in STRATEGIES:
        if options:
            raise ValueError(f"strategy {strategy!r} takes no options, got {sorted(options)}")
        return STRATEGIES[strategy]
    if strategy in FACTORIES:
        allowed = factory_options(strategy)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"strategy_options: {strategy} has no option {unknown[0]!r}; allowed: {sorted(allowed)}")
        missing = [name for name, default in allowed.items()
                   if default is inspect.Parameter.empty and name not in options]
        if missing:
            raise ValueError(f"strategy {strategy!r} needs the option {missing[0]!r} "
                             f"(e.g. {strategy}:{missing[0]}=VALUE)")
        return FACTORIES[strategy](**options)
    raise ValueError(f"strategy must be one of {strategy_names()}, got {strategy!r}")


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_strategy(text: str) -> tuple[str, dict[str, Any]]:
    """(name, options) of a command-line spelling: ``NAME``, ``NAME:VALUE`` (the factory's first
    option, e.g. ``truncated:10``, ``es:64``) or ``NAME:key=value,key=value`` (JSON values).

    Checks the name and the option names; the values are checked when the strategy is made.
    """
    if not isinstance(text, str):
        raise ValueError(f"strategy must be a name such as 'bptt' or 'truncated:10', got {text!r}")
    name, colon, argument = text.partition(":")
    if name not in STRATEGIES and name not in FACTORIES:
        load_entry_points()
    if name in STRATEGIES and not colon:
        return name, {}
    if name not in FACTORIES:
        raise ValueError(f"strategy must be one of {strategy_names()} (with options as NAME:VALUE or "
                         f"NAME:key=value,...), got {text!r}")
    allowed = factory_options(name)
    if not colon:
        return name, {}
    options: dict[str, Any] = {}
    for index, item in enumerate(argument.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            if index > 0 or not allowed:
                raise ValueError(f"strategy: {text!r}: write options as key=value; {name} takes {sorted(allowed)}")
            key, value = next(iter(allowed)), item
        key = key.strip().replace("-", "_")
        if key not in allowed:
            raise ValueError(f"strategy: {name} has no option {key!r}; allowed: {sorted(allowed)}")
        options[key] = _option_value(value.strip())
    return name, options
