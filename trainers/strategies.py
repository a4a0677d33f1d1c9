"""Gradient strategies: where the backward pass through a rollout may go (spec section 4).

A strategy maps (problem, controller params, batch of initial states, PRNG key) to a
:class:`StrategyResult`: the batch loss of the forward rollout, the update direction (a pytree like
the params, to be *descended*: clipping and the optimizer act on it) and strategy metrics.

With sg = stop-gradient, c_t = N(x_t or sg(x_t); θ) and x_{t+1} = S(x_t or sg(x_t), c_t):

============== ===== ============= ============= =================================================
name           study network input physics input meaning
============== ===== ============= ============= =================================================
bptt           R (F) x_t           x_t           the true gradient g
modified       M (P) sg(x_t)       x_t           feedback only through the simulator: m
network_only   (N)   x_t           sg(x_t)       feedback only through the network
one_step       S     sg(x_t)       sg(x_t)       one-step gradients
combined       C     -             -             m_k where sign(m_k) = sign(g_k), else 0
truncated(k)   -     sg every k    sg every k    BPTT truncated every k steps
es(...)        -     -             -             antithetic evolution-strategies estimate
============== ===== ============= ============= =================================================

Write a new strategy as a function ``(problem, params, states, key) -> StrategyResult`` wrapped in
:class:`Strategy`; gated variants are one line with :func:`gated`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from diffenvs.core import EnvState
from trainers.rollout import Gate, Problem, make_gate, rollout_loss

Array = jax.Array
stop = jax.lax.stop_gradient


class StrategyResult(NamedTuple):
    """Batch loss (scalar), update direction (pytree like params) and strategy metrics."""

    loss: Array
    update: Any
    metrics: dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A named gradient strategy: ``compute(problem, params, states, key) -> StrategyResult``."""

    name: str
    compute: Callable[[Problem, Any, EnvState, Array], StrategyResult]
    description: str = ""

    def __call__(self, problem: Problem, params: Any, states: EnvState, key: Array) -> StrategyResult:
        return self.compute(problem, params, states, key)


def gated(name: str, gate: Gate, description: str = "") -> Strategy:
    """The strategy that differentiates the rollout loss through ``gate``."""
    def compute(problem: Problem, params: Any, states: EnvState, key: Array) -> StrategyResult:
        loss, gradient = jax.value_and_grad(lambda p: rollout_loss(problem, p, states, gate))(params)
        return StrategyResult(loss, gradient, {})
    return Strategy(name, compute, description)


bptt = gated("bptt", make_gate(), "plain backpropagation through time: the true gradient (R, mode F)")
modified = gated("modified", make_gate(network_input=stop),
                 "stop-gradient on the network input: feedback only through the simulator (M, mode P)")
network_only = gated("network_only", make_gate(physics_input=stop),
                     "stop-gradient on the simulator input: feedback only through the network (mode N)")
one_step = gated("one_step", make_gate(network_input=stop, physics_input=stop),
                 "stop-gradient on both inputs: one-step gradients (S)")


def truncated(every: int) -> Strategy:
    """BPTT with the state's gradient stopped at every ``every``-th step (t = k, 2k, ...)."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"truncated: every must be an integer >= 1, got {every!r}")

    def gate(t: Array, physics: Array) -> tuple[Array, Array]:
        cut = jnp.where((t > 0) & (t % every == 0), stop(physics), physics)
        return cut, cut

    return gated(f"truncated({every})", gate, f"BPTT truncated every {every} steps")


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


def bptt_and_modified(problem: Problem, params: Any, states: EnvState) -> tuple[Array, Any, Any]:
    """(loss, bptt gradient g, modified gradient m) from ONE forward rollout.

    The forward pass stores each step's state and the simulator's residuals (``jax.vjp``); one
    reverse scan then carries the two adjoints side by side, applying each step's vector-Jacobian
    products to both at once (a batch of two cotangents):

        F: λ_t = A_tᵀ λ_{t+1} + K_tᵀ μ_t      P: λ_t = A_tᵀ λ_{t+1}      μ_t = B_tᵀ λ_{t+1} + ∂ℓ_t/∂c_t
        update = Σ_t P_tᵀ μ_t

    The network's residuals are recomputed in the reverse scan from the stored state: storing them
    would stack a copy of the weights per step, which costs more than the network's forward pass.
    """
    def forward(state: EnvState, _: Any):
        controls = problem.control(params, state.physics, state.time)
        (next_physics, loss), simulator_vjp = jax.vjp(
            lambda x, c: problem.simulate(x, state.time, c), state.physics, controls)
        return EnvState(next_physics, state.time + 1), (loss, simulator_vjp, state)

    _, (losses, simulator_vjps, trajectory) = jax.lax.scan(forward, states, None, length=problem.num_steps)

    def backward(carry, inputs):
        adjoints, gradients = carry                       # leading axis: [bptt, modified]
        simulator_vjp, state = inputs
        _, network_vjp = jax.vjp(lambda x, p: problem.control(p, x, state.time), state.physics, params)
        state_cotangent, control_cotangent = jax.vmap(simulator_vjp)((adjoints, jnp.ones((2,), losses.dtype)))
        network_state_cotangent, param_cotangent = jax.vmap(network_vjp)(control_cotangent)
        keep_network_path = jnp.array([1.0, 0.0], adjoints.dtype).reshape((2,) + (1,) * (adjoints.ndim - 1))
        adjoints = state_cotangent + keep_network_path * network_state_cotangent
        gradients = jax.tree.map(jnp.add, gradients, param_cotangent)
        return (adjoints, gradients), None

    zero_adjoints = jnp.zeros((2, *states.physics.shape), states.physics.dtype)
    zero_gradients = jax.tree.map(lambda p: jnp.zeros((2, *p.shape), p.dtype), params)
    (_, gradients), _ = jax.lax.scan(backward, (zero_adjoints, zero_gradients),
                                     (simulator_vjps, trajectory), reverse=True)
    true_gradient = jax.tree.map(lambda g: g[0], gradients)
    modified_gradient = jax.tree.map(lambda g: g[1], gradients)
    return jnp.sum(losses), true_gradient, modified_gradient


def _combined(problem: Problem, params: Any, states: EnvState, key: Array) -> StrategyResult:
    loss, true_gradient, modified_gradient = bptt_and_modified(problem, params, states)
    return StrategyResult(loss, sign_agreement(modified_gradient, true_gradient),
                          {"cosine": cosine_similarity(modified_gradient, true_gradient)})


combined = Strategy("combined", _combined,
                    "the modified update where its sign agrees with the true gradient, else 0 (C)")


def es(population: int = 32, noise: float = 0.02) -> Strategy:
    """Antithetic evolution-strategies gradient estimate (a black-box baseline).

    ``population`` perturbations θ ± σ·ε_i (``population / 2`` pairs, ε ~ N(0, I)), σ = ``noise``:
    g ≈ Σ_i (L(θ + σε_i) - L(θ - σε_i)) ε_i / (σ · population).
    """
    if isinstance(population, bool) or not isinstance(population, int) or population < 2 or population % 2:
        raise ValueError(f"es: population must be an even integer >= 2, got {population!r}")
    if not noise > 0:
        raise ValueError(f"es: noise must be > 0, got {noise!r}")
    pairs = population // 2

    def compute(problem: Problem, params: Any, states: EnvState, key: Array) -> StrategyResult:
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        directions = treedef.unflatten([jax.random.normal(k, (pairs, *leaf.shape), leaf.dtype)
                                        for k, leaf in zip(keys, leaves)])
        loss_at = lambda p: rollout_loss(problem, p, states)
        shifted = lambda sign: jax.vmap(loss_at)(
            jax.tree.map(lambda p, d: p + sign * noise * d, params, directions))
        difference = shifted(1.0) - shifted(-1.0)                     # (pairs,)
        gradient = jax.tree.map(
            lambda d: jnp.tensordot(difference, d, axes=1) / (noise * population), directions)
        return StrategyResult(loss_at(params), gradient, {})

    return Strategy(f"es({population},{noise:g})", compute, "antithetic evolution strategies")


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (bptt, modified, network_only, one_step, combined)}
"""The study's strategies by name; ``truncated(k)`` and ``es(...)`` are made by their factories."""


def get_strategy(strategy: str | Strategy, *, truncate_every: int | None = None,
                 es_population: int = 32, es_noise: float = 0.02) -> Strategy:
    """A :class:`Strategy` from a name (``bptt``, ..., ``truncated``, ``es``) or a Strategy."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy in STRATEGIES:
        return STRATEGIES[strategy]
    if strategy == "truncated":
        if truncate_every is None:
            raise ValueError("strategy 'truncated' needs truncate_every (an integer >= 1)")
        return truncated(truncate_every)
    if strategy == "es":
        return es(es_population, es_noise)
    allowed = sorted(STRATEGIES) + ["truncated", "es"]
    raise ValueError(f"strategy must be one of {allowed}, got {strategy!r}")
