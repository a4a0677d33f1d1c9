"""Gradient strategies: small named objects that turn a batch rollout into an update direction.

:mod:`~trainers.strategies.base` defines the protocol (:class:`Strategy`, stateless or owning state in
the way of optax) and the registry; each other module holds one family:

* :mod:`~trainers.strategies.study`: the study's ``bptt``, ``modified``, ``network_only``,
  ``one_step``, ``combined`` and ``truncated(k)``;
* :mod:`~trainers.strategies.es`: antithetic evolution strategies.

Adding a strategy is adding a module that calls :func:`register` and importing it here.
"""

from trainers.strategies.base import (
    FACTORIES, STRATEGIES, Strategy, StrategyResult, cosine_similarity, factory_options, get_strategy,
    parse_strategy, register, sign_agreement, strategy_names,
)
from trainers.strategies.study import (
    STUDY_GATES, bptt, bptt_and_modified, combined, gated, gated_fields, modified, network_only, one_step,
    truncated,
)
from trainers.strategies.es import es

__all__ = [
    "FACTORIES", "STRATEGIES", "Strategy", "StrategyResult", "cosine_similarity", "factory_options",
    "get_strategy", "parse_strategy", "register", "sign_agreement", "strategy_names",
    "STUDY_GATES", "bptt", "bptt_and_modified", "combined", "gated", "gated_fields", "modified",
    "network_only", "one_step", "truncated", "es",
]
