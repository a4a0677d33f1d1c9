"""Gradient strategies: small named objects that turn a batch rollout into an update direction.

:mod:`~trainers.strategies.base` defines the protocol (:class:`Strategy`, stateless or owning state in
the way of optax) and the registry; each other module holds one family:

* :mod:`~trainers.strategies.study`: the study's ``bptt``, ``modified``, ``network_only``,
  ``one_step``, ``combined`` and ``truncated(k)``;
* :mod:`~trainers.strategies.es`: antithetic evolution strategies;
* :mod:`~trainers.strategies.shac`: ``shac``, short-horizon actor-critic (Xu et al., ICLR 2022);
* :mod:`~trainers.strategies.ivw`: ``ivw`` and ``alpha_order``, first- and zeroth-order estimates mixed
  by inverse variance or a fixed weight (Suh et al., ICML 2022);
* :mod:`~trainers.strategies.hig`: ``hig``, half-inverse gradients (Schnell, Holl & Thuerey, ICLR 2022).

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
from trainers.strategies.hig import hig
from trainers.strategies.ivw import alpha_order, ivw
from trainers.strategies.shac import shac

__all__ = [
    "FACTORIES", "STRATEGIES", "Strategy", "StrategyResult", "cosine_similarity", "factory_options",
    "get_strategy", "parse_strategy", "register", "sign_agreement", "strategy_names",
    "STUDY_GATES", "bptt", "bptt_and_modified", "combined", "gated", "gated_fields", "modified",
    "network_only", "one_step", "truncated", "es", "shac", "ivw", "alpha_order", "hig",
]
