"""First- and zeroth-order gradients from one batch, mixed by inverse variance (the α-order estimator).

Suh, Simchowitz, Zhang & Tedrake, "Do Differentiable Simulators Give Better Policy Gradients?",
ICML 2022.

From the batch's B episodes (instances), two estimates of the batch loss's gradient:

* first order: each episode's own ``bptt`` gradient g¹_i (a vmap over the episodes); their mean is the
  batch ``bptt`` gradient;
* zeroth order: each episode's own antithetic evolution-strategies estimate with ``population``
  perturbations of the params, independent for every episode,
  g⁰_i = Σ_j (L_i(θ + σε_ij) − L_i(θ − σε_ij)) ε_ij / (σ · population), ε_ij ~ N(0, I), σ = ``noise``.

Per parameter k, the variance of each mean is estimated across the episodes (sample variance / B), and

    ``ivw``:          α_k = var⁰_k / (var¹_k + var⁰_k),   update = α ⊙ mean(g¹) + (1 − α) ⊙ mean(g⁰),

the inverse-variance weights (α_k = 1 where both variances are 0). Suh et al. add a check of the
first-order estimate's bias (their "robustness" constraint with a confidence level); it is not
implemented here, and the variances are per parameter (the paper's analysis uses the total variance).
``alpha_order(alpha)`` is the same mixture with a fixed α for every parameter: α = 1 is the first-order
(``bptt``) estimate, α = 0 the zeroth-order one.

Options of both: ``population`` (16; even, perturbations per episode, so 2 · 16 · B extra episode
rollouts per update, B = batch size) and ``noise`` (σ, 0.02, as ``es``); ``alpha_order`` also takes
``alpha`` (0.5, in [0, 1]).

As with ``es``, a loss difference below the floating-point spacing of the loss rounds to 0 (float32 at
quantum targets 4 and 5 with σ = 0.02): the zeroth-order estimates are then all exactly 0, their
variance 0, and ``ivw`` puts the whole weight on them (α = 0, a zero update). Watch ``ivw_alpha`` and
``zo_nonzero``.

Metrics: ``ivw_alpha`` (the mean of α over the parameters; the fixed α for ``alpha_order``) and
``zo_nonzero`` (the fraction of the antithetic differences that are nonzero).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from trainers.rollout import (
    Problem, State, batch_of_one, batch_size, per_episode_losses_and_gradients, rollout_loss,
)
from trainers.strategies.base import Strategy, StrategyResult, register
from trainers.strategies.es import check_perturbations, sample_directions

Array = jax.Array


def perturbation_directions(params: Any, key: Array, episodes: int, pairs: int) -> Any:
    """ε: a pytree like ``params`` with leading axes (episodes, pairs), standard normal."""
    return sample_directions(params, key, (episodes, pairs))


def zeroth_order_per_episode(problem: Problem, params: Any, states: State, key: Array, population: int,
                             noise: float) -> tuple[Any, Array]:
    """(per-episode antithetic estimates, params-like with a leading axis B; loss differences (B, pairs)).

    Episode i uses directions ``perturbation_directions(params, key, B, population // 2)[i]``.
    """
    episodes, pairs = batch_size(states), population // 2
    directions = perturbation_directions(params, key, episodes, pairs)

    def episode(state: State, direction: Any) -> tuple[Any, Array]:
        def shifted(sign: float) -> Array:
            moved = jax.tree.map(lambda p, d: p + sign * noise * d, params, direction)
            return jax.vmap(lambda q: rollout_loss(problem, q, batch_of_one(state)))(moved)
        difference = shifted(1.0) - shifted(-1.0)                                   # (pairs,)
        estimate = jax.tree.map(lambda d: jnp.tensordot(difference, d, axes=1) / (noise * population), direction)
        return estimate, difference

    return jax.vmap(episode)(states, directions)


def _estimates(problem: Problem, params: Any, states: State, key: Array, population: int, noise: float):
    losses, first = per_episode_losses_and_gradients(problem, params, states)
    zeroth, differences = zeroth_order_per_episode(problem, params, states, key, population, noise)
    nonzero = jnp.mean((differences != 0).astype(differences.dtype))
    return jnp.mean(losses), first, zeroth, nonzero


def inverse_variance_weights(first: Any, zeroth: Any) -> Any:
    """α per parameter (params-like) from per-episode estimates (leading axis B):
    var⁰ / (var¹ + var⁰) of the means (sample variances / B); 1 where both are 0."""
    def alpha(g1: Array, g0: Array) -> Array:
        episodes = g1.shape[0]
        var1 = jnp.var(g1, axis=0, ddof=1) / episodes
        var0 = jnp.var(g0, axis=0, ddof=1) / episodes
        total = var1 + var0
        return jnp.where(total > 0, var0 / jnp.where(total > 0, total, 1.0), 1.0)
    return jax.tree.map(alpha, first, zeroth)


def _mixture(alpha: Any, first: Any, zeroth: Any) -> Any:
    return jax.tree.map(lambda a, g1, g0: a * jnp.mean(g1, axis=0) + (1 - a) * jnp.mean(g0, axis=0),
                        alpha, first, zeroth)


def _mean_over_parameters(tree: Any) -> Array:
    leaves = jax.tree.leaves(tree)
    return sum(jnp.sum(leaf) for leaf in leaves) / sum(leaf.size for leaf in leaves)


@register
def ivw(population: int = 16, noise: float = 0.02) -> Strategy:
    """Inverse-variance weighting of per-episode bptt and zeroth-order estimates (Suh et al., ICML 2022)."""
    check_perturbations("ivw", population, noise)

    def compute(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
        if batch_size(states) < 2:
            raise ValueError(f"ivw: the batch must hold at least 2 episodes to estimate variances, "
                             f"got batch_size {batch_size(states)}")
        loss, first, zeroth, nonzero = _estimates(problem, params, states, key, population, noise)
        alpha = inverse_variance_weights(first, zeroth)
        return StrategyResult(loss, _mixture(alpha, first, zeroth),
                              {"ivw_alpha": _mean_over_parameters(alpha), "zo_nonzero": nonzero})

    return Strategy(f"ivw({population},{noise:g})", compute,
                    "first- and zeroth-order estimates mixed by inverse variance per parameter",
                    metric_names=("ivw_alpha", "zo_nonzero"))


@register
def alpha_order(alpha: float = 0.5, population: int = 16, noise: float = 0.02) -> Strategy:
    """The fixed mixture α · first order + (1 − α) · zeroth order (Suh et al., ICML 2022)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha_order: alpha must be a number in [0, 1] (weight of the first-order "
                         f"estimate), got {alpha!r}")
    check_perturbations("alpha_order", population, noise)
    weight = float(alpha)

    def compute(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
        loss, first, zeroth, nonzero = _estimates(problem, params, states, key, population, noise)
        fixed = jax.tree.map(lambda p: jnp.full(p.shape, weight, p.dtype), params)
        return StrategyResult(loss, _mixture(fixed, first, zeroth),
                              {"ivw_alpha": jnp.asarray(weight, loss.dtype), "zo_nonzero": nonzero})

    return Strategy(f"alpha_order({weight:g},{population},{noise:g})", compute,
                    f"fixed mixture {weight:g} · first order + {1 - weight:g} · zeroth order",
                    metric_names=("ivw_alpha", "zo_nonzero"))
