"""Evolution strategies: a zeroth-order (black-box) gradient estimate of the rollout loss."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from trainers.checks import check_finite_positive
from trainers.rollout import Problem, State, rollout_loss
from trainers.strategies.base import Strategy, StrategyResult, register

Array = jax.Array


def sample_directions(params: Any, key: Array, shape: tuple[int, ...]) -> Any:
    """ε ~ N(0, I): a pytree like ``params`` with leading axes ``shape`` (one key per leaf)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([jax.random.normal(k, (*shape, *leaf.shape), leaf.dtype)
                              for k, leaf in zip(keys, leaves)])


def check_perturbations(strategy: str, population: Any, noise: Any) -> None:
    """ValueError naming ``strategy`` unless ``population`` is an even int >= 2 and ``noise`` finite > 0."""
    if isinstance(population, bool) or not isinstance(population, int) or population < 2 or population % 2:
        raise ValueError(f"{strategy}: population must be an even integer >= 2 (perturbations per estimate), "
                         f"got {population!r}")
    check_finite_positive(f"{strategy}: noise", noise)


@register
def es(population: int = 32, noise: float = 0.02) -> Strategy:
    """Antithetic evolution-strategies gradient estimate (a black-box baseline).

    ``population`` perturbations θ ± σ·ε_i (``population / 2`` pairs, ε ~ N(0, I)), σ = ``noise``:
    g ≈ Σ_i (L(θ + σε_i) - L(θ - σε_i)) ε_i / (σ · population).

    A difference smaller than the floating-point spacing of the loss rounds to exactly 0: in float32
    at quantum targets 4 and 5 with σ = 0.02 every difference does, and the update is 0
    (``benchmarks/es_resolution.py`` prints, per task and σ, how many differences are nonzero).
    Metric ``es_nonzero``: the fraction of the pairs whose loss difference is nonzero (epoch mean).
    """
    check_perturbations("es", population, noise)
    pairs = population // 2

    def compute(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
        directions = sample_directions(params, key, (pairs,))
        loss_at = lambda p: rollout_loss(problem, p, states)
        shifted = lambda sign: jax.vmap(loss_at)(
            jax.tree.map(lambda p, d: p + sign * noise * d, params, directions))
        difference = shifted(1.0) - shifted(-1.0)                     # (pairs,)
        gradient = jax.tree.map(
            lambda d: jnp.tensordot(difference, d, axes=1) / (noise * population), directions)
        nonzero = jnp.mean((difference != 0).astype(difference.dtype))
        return StrategyResult(loss_at(params), gradient, {"es_nonzero": nonzero})

    return Strategy(f"es({population},{noise:g})", compute, "antithetic evolution strategies",
                    metric_names=("es_nonzero",))
