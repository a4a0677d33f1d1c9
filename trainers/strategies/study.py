"""The study's gradient strategies: where the backward pass through a rollout may go.

With sg = stop-gradient, c_t = N(x_t or sg(x_t); θ) and x_{t+1} = S(x_t or sg(x_t), c_t), x_t the
state pytree (sg stops every leaf):

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

Gated variants are one line with :func:`gated`; :func:`gated_fields` computes several gated
gradients from one forward rollout with the gates as data (what lets a sweep train a mix of these
strategies in one vmapped program).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from trainers.rollout import Gate, Problem, State, make_gate, rollout_loss, split_float_leaves
from trainers.strategies.base import (
    Strategy, StrategyResult, cosine_similarity, register, sign_agreement,
)

Array = jax.Array
stop = jax.lax.stop_gradient


def gated(name: str, gate: Gate, description: str = "") -> Strategy:
    """The strategy that differentiates the rollout loss through ``gate``."""
    def compute(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
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

    def gate(t: Array, states: State) -> tuple[State, State]:
        cut = jax.tree.map(lambda x: jnp.where((t > 0) & (t % every == 0), stop(x), x), states)
        return cut, cut

    return gated(f"truncated({every})", gate, f"BPTT truncated every {every} steps")


register(truncated)


def bptt_and_modified(problem: Problem, params: Any, states: State) -> tuple[Array, Any, Any]:
    """(loss, bptt gradient g, modified gradient m) from ONE forward rollout: :func:`gated_fields`
    with the gates of ``bptt`` (1, 1) and ``modified`` (0, 1)."""
    loss, gradients = gated_fields(problem, params, states, jnp.array([[1.0, 1.0], [0.0, 1.0]]))
    return loss, jax.tree.map(lambda g: g[0], gradients), jax.tree.map(lambda g: g[1], gradients)


def _combined(problem: Problem, params: Any, states: State, key: Array) -> StrategyResult:
    loss, true_gradient, modified_gradient = bptt_and_modified(problem, params, states)
    return StrategyResult(loss, sign_agreement(modified_gradient, true_gradient),
                          {"cosine": cosine_similarity(modified_gradient, true_gradient)})


combined = Strategy("combined", _combined,
                    "the modified update where its sign agrees with the true gradient, else 0 (C)",
                    metric_names=("cosine",))

for _strategy in (bptt, modified, network_only, one_step, combined):
    register(_strategy)


def gated_fields(problem: Problem, params: Any, states: State, gates: Array,
                 truncate_every: Array | int = 0) -> tuple[Array, Any]:
    """(loss, F parameter gradients) from ONE forward rollout, with the gates given as data.

    ``gates`` has shape (F, 2): per field f, the factors (network gate n_f, physics gate p_f) by which
    the backward pass scales the state's two paths, as if each step's state x_t entered the network
    as ``sg(x) + n_f·(x - sg(x))`` and the simulator as ``sg(x) + p_f·(x - sg(x))`` (the forward
    values are x either way). With gates in {0, 1}: (1, 1) is ``bptt``, (0, 1) ``modified``, (1, 0)
    ``network_only`` and (0, 0) ``one_step``. Because the gates are arrays, not ``stop_gradient``
    calls, the function can be vmapped over runs that use different strategies.

    ``truncate_every`` = k > 0 also closes both paths at the steps t = k, 2k, ... (``truncated(k)``);
    0 means never. One reverse scan carries the F adjoints side by side
    (λ_t = p_f·(A_tᵀ λ_{t+1} + ∂ℓ_t/∂x_t) + n_f·K_tᵀ μ_t) and records the control cotangents μ_t; the
    parameter gradients update_f = Σ_t P_tᵀ μ_t then come from one vector-Jacobian product of the
    network over the whole trajectory. :func:`bptt_and_modified` is the pair (bptt, modified).
    Gradients have a leading axis of size F.
    """
    gates = jnp.asarray(gates)
    if gates.ndim != 2 or gates.shape[1] != 2:
        raise ValueError(f"gates must have shape (fields, 2), got {gates.shape}")
    fields = gates.shape[0]

    def forward(state: State, _: Any):
        floats, rebuild = split_float_leaves(state)
        controls = problem.control(params, state)

        def simulator(x, c):
            next_state, loss = problem.simulate(rebuild(x), c)
            next_floats, _ = split_float_leaves(next_state)
            return (next_floats, loss), next_state

        (_, loss), simulator_vjp, next_state = jax.vjp(simulator, floats, controls, has_aux=True)
        return next_state, (loss, simulator_vjp, state)

    _, (losses, simulator_vjps, trajectory) = jax.lax.scan(forward, states, None, length=problem.num_steps)
    every = jnp.asarray(truncate_every)
    steps = jnp.arange(problem.num_steps)

    def backward(adjoints: list[Array], inputs):          # adjoints: float leaves, leading axis = the fields
        simulator_vjp, state, t = inputs
        state_cotangent, control_cotangent = jax.vmap(simulator_vjp)((adjoints, jnp.ones((fields,), losses.dtype)))
        floats, rebuild = split_float_leaves(state)
        _, network_input_vjp = jax.vjp(lambda x: problem.control(params, rebuild(x)), floats)
        (network_state_cotangent,) = jax.vmap(network_input_vjp)(control_cotangent)
        cut = (every > 0) & (t > 0) & (t % jnp.maximum(every, 1) == 0)
        open_gates = jnp.where(cut, jnp.zeros_like(gates), gates)

        def combine(simulator_part: Array, network_part: Array) -> Array:
            leaf_gates = open_gates.astype(simulator_part.dtype)
            shape = (fields,) + (1,) * (simulator_part.ndim - 1)
            return leaf_gates[:, 1].reshape(shape) * simulator_part + leaf_gates[:, 0].reshape(shape) * network_part

        adjoints = [combine(s, n) for s, n in zip(state_cotangent, network_state_cotangent)]
        return adjoints, control_cotangent

    zero_adjoints = [jnp.zeros((fields, *leaf.shape), leaf.dtype) for leaf in split_float_leaves(states)[0]]
    _, control_cotangents = jax.lax.scan(backward, zero_adjoints, (simulator_vjps, trajectory, steps),
                                         reverse=True)              # (steps, fields, batch, *action)
    # Σ_t P_tᵀ μ_t for every field at once: one vector-Jacobian product of the network over the whole
    # trajectory (large, efficient matrix products) instead of one small product per step.
    _, parameter_vjp = jax.vjp(lambda p: jax.vmap(lambda state: problem.control(p, state))(trajectory), params)
    (gradients,) = jax.vmap(parameter_vjp, in_axes=1)(control_cotangents)
    return jnp.sum(losses), gradients


STUDY_GATES: dict[str, tuple[float, float]] = {
    "bptt": (1.0, 1.0), "modified": (0.0, 1.0), "network_only": (1.0, 0.0), "one_step": (0.0, 0.0)}
"""(network gate, physics gate) of the single-field strategies; ``combined`` uses bptt and modified."""
