"""SHAC: short-horizon actor-critic through the differentiable simulator.

Xu, Makoviychuk, Narang, Ramos, Matusik, Garg & Macklin, "Accelerated Policy Learning with Parallel
Differentiable Simulation", ICLR 2022.

The episode of T steps is cut into windows of ``horizon`` = h steps (the last one shorter when h does
not divide T). Within a window the update backpropagates through the simulator and the controller as
``bptt`` does; at a window's start the state's gradient is stopped, and a window's end is bootstrapped
by a learned critic V(observation, time to go) of the *remaining* loss (the sum of the step losses
still to come; at the episode's end the remaining loss is 0, no critic). The actor objective is

    J(θ) = (1/W) Σ_windows [ Σ_{t in window} ℓ_t + mean_batch V(o_{end}, T - end) ],

W the number of windows, ℓ_t the batch-mean step loss of ``problem.simulate``; the update is ∇_θ J (the
gradient flows through the critic's input, the critic's params are constants for it). With h >= T
there is one window and the update is the ``bptt`` gradient.

The critic is then fitted, for ``critic_iterations`` full-batch Adam steps (``optax.adam`` at
``critic_learning_rate``), to TD(λ) targets computed from the same rollout (stop-gradient) with the
critic as it was before fitting, over the whole episode (undiscounted, γ = 1)::

    G_t = ℓ_t^i + (1 - λ) V(o_{t+1}, T - t - 1) + λ G_{t+1},     G_{T-1} = ℓ_{T-1}^i,

per instance i (the per-instance step losses, whose batch mean is ℓ_t), with the mean squared error over
the T × batch pairs (o_t, T - t). The paper fits on the targets of each h-step window and keeps a
slowly updated target critic; here the targets span the episode and are held fixed during the fitting
iterations (their role). The critic is an MLP (ELU, as in the paper) on the flattened observation
and the fraction of the episode still to go, (T - t) / T (t the step index, so the state
needs no clock); its output is multiplied by a fixed
``value_scale``, the mean episode loss of the untrained controller on 16 initial states drawn by
``init``, so that the network predicts numbers of order one on every task (the cart-pole's losses are
of order 1, quantum control's of order 100).

The critic's params, its Adam state and ``value_scale`` are the strategy state (``init``), vmapped
over the runs of a sweep group and checkpointed with the run.

Options (``shac:horizon=16,lam=0.9``), the same defaults on every task:

* ``horizon`` (32, as in the paper): steps per window. Windows per episode at the study's lengths:
  cart-pole 100 steps: 4 (32, 32, 32, 4); guidance 60 steps: 2 (32, 28); quantum control 128 steps: 4.
  With the cart-pole's FINAL loss (the study's) every step loss but the last is 0, so every window but
  the last learns only through the critic.
* ``lam`` (0.95, the paper's): λ of the TD(λ) targets, in [0, 1].
* ``critic_learning_rate`` (1e-3, the paper's for its cart-pole): Adam step size of the critic.
* ``critic_iterations`` (16, the paper's): critic Adam steps per update.
* ``critic_hidden`` ("64x64", the paper's [64, 64]): hidden layer widths, as "WxW" text (the
  command-line spelling cannot hold a list), an integer, or a list of integers.

Metrics: ``critic_loss`` (the critic's mean squared error on this update's targets before fitting, in
the loss's units squared) and ``critic_value`` (the critic's mean prediction of the whole episode's
loss at t = 0, to compare with ``batch_loss``).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from trainers.checks import check_number
from trainers.rollout import Problem, State, batch_size, is_float, rollout_loss
from trainers.strategies.base import Strategy, StrategyResult, register

Array = jax.Array
stop = jax.lax.stop_gradient

SCALE_STATES = 16
"""Initial states whose mean episode loss under the untrained controller sets ``value_scale``."""


def parse_hidden(critic_hidden: Any) -> tuple[int, ...]:
    """Hidden widths from "64x64", 64 or [64, 64]; a ValueError naming the option otherwise."""
    if isinstance(critic_hidden, str):
        parts = critic_hidden.lower().split("x")
        if all(part.strip().isdigit() for part in parts):
            widths = tuple(int(part) for part in parts)
        else:
            widths = ()
    elif isinstance(critic_hidden, int) and not isinstance(critic_hidden, bool):
        widths = (critic_hidden,)
    elif isinstance(critic_hidden, Sequence) and all(
            isinstance(w, int) and not isinstance(w, bool) for w in critic_hidden):
        widths = tuple(critic_hidden)
    else:
        widths = ()
    if not widths or any(width < 1 for width in widths):
        raise ValueError(f"shac: critic_hidden must be widths >= 1 such as '64x64', 64 or [64, 64], "
                         f"got {critic_hidden!r}")
    return widths


def critic_init(key: Array, input_size: int, hidden: tuple[int, ...], dtype: Any) -> list[dict[str, Array]]:
    """MLP params: Glorot-uniform kernels, zero biases, the output layer's kernel zero (V starts at 0)."""
    sizes = (input_size, *hidden, 1)
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for index, (k, fan_in, fan_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        last = index == len(sizes) - 2
        kernel = (jnp.zeros((fan_in, fan_out), dtype) if last
                  else jax.nn.initializers.glorot_uniform()(k, (fan_in, fan_out), dtype))
        layers.append({"kernel": kernel, "bias": jnp.zeros((fan_out,), dtype)})
    return layers


def critic_apply(layers: list[dict[str, Array]], inputs: Array) -> Array:
    """MLP (ELU hidden layers, linear output): inputs (n, features) -> values (n,)."""
    hidden = inputs
    for layer in layers[:-1]:
        hidden = jax.nn.elu(hidden @ layer["kernel"] + layer["bias"])
    return (hidden @ layers[-1]["kernel"] + layers[-1]["bias"])[:, 0]


def critic_inputs(problem: Problem, states: State, steps_taken: Array) -> Array:
    """The critic's input (batch, features + 1): the flattened observation of each state and the
    fraction of the episode still to go, (T - t) / T, t = ``steps_taken`` (the step index, (batch,))."""
    observations = problem.observe(states)
    observations = observations.reshape(observations.shape[0], -1)
    to_go = (problem.num_steps - steps_taken).astype(observations.dtype) / problem.num_steps
    return jnp.concatenate([observations, to_go[:, None]], axis=1)


def instance_step(problem: Problem, states: State, controls: Array) -> tuple[State, Array]:
    """``problem.simulate`` without the batch mean: (next states, per-instance step losses (batch,))."""
    return problem.step(states, controls)


def td_lambda_targets(losses: Array, next_values: Array, lam: float) -> Array:
    """TD(λ) targets of the remaining loss, undiscounted, for an episode that ends after the last step.

    losses (T, batch): per-instance step losses ℓ_t; next_values (T, batch): V(x_{t+1}), the last row
    ignored (the remaining loss after the episode is 0). Returns G (T, batch) with
    G_t = ℓ_t + (1 - λ) V_{t+1} + λ G_{t+1} and G_{T-1} = ℓ_{T-1}.
    """
    next_values = next_values.at[-1].set(0.0)

    def backward(following: Array, inputs):
        loss, value = inputs
        target = loss + (1.0 - lam) * value + lam * following
        return target, target

    _, targets = jax.lax.scan(backward, jnp.zeros_like(losses[0]), (losses, next_values), reverse=True)
    return targets


@register
def shac(horizon: int = 32, lam: float = 0.95, critic_learning_rate: float = 1e-3,
         critic_iterations: int = 16, critic_hidden: Any = "64x64") -> Strategy:
    """Short-horizon actor-critic (Xu et al., ICLR 2022); see the module docstring for the options."""
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"shac: horizon must be an integer >= 1 (steps per window), got {horizon!r}")
    lam = check_number("shac: lam", lam, 0.0, 1.0)
    critic_learning_rate = check_number("shac: critic_learning_rate", critic_learning_rate, 0.0, low_open=True)
    if isinstance(critic_iterations, bool) or not isinstance(critic_iterations, int) or critic_iterations < 1:
        raise ValueError(f"shac: critic_iterations must be an integer >= 1, got {critic_iterations!r}")
    hidden = parse_hidden(critic_hidden)
    critic_optimizer = optax.adam(critic_learning_rate)

    def init(problem: Problem, params: Any, key: Array) -> dict[str, Any]:
        dtype = jax.tree.leaves(params)[0].dtype
        state_key, critic_key = jax.random.split(key)
        states = jax.vmap(problem.env.initial)(jax.random.split(state_key, SCALE_STATES))
        states = jax.tree.map(lambda x: x.astype(dtype) if is_float(x) else x, states)
        scale = jnp.maximum(jnp.abs(rollout_loss(problem, params, states)), jnp.asarray(1e-6, dtype))
        size = critic_inputs(problem, states, jnp.zeros((SCALE_STATES,), jnp.int32)).shape[1]
        critic = critic_init(critic_key, size, hidden, dtype)
        return {"critic": critic, "critic_optimizer": critic_optimizer.init(critic),
                "value_scale": scale.astype(dtype)}

    def compute(problem: Problem, params: Any, states: State, key: Array,
                state: dict[str, Any]) -> tuple[StrategyResult, dict[str, Any]]:
        steps = problem.num_steps
        windows = -(-steps // horizon)
        scale = state["value_scale"]
        critic = stop(state["critic"])
        value = lambda layers, states, taken: scale * critic_apply(layers, critic_inputs(problem, states, taken))
        masks = problem.masks_termination
        count = batch_size(states)

        def objective(params: Any):
            def body(current: State, t: Array):
                current = jax.tree.map(lambda x: jnp.where(t % horizon == 0, stop(x), x), current)
                controls = problem.control(params, current)
                next_states, losses = instance_step(problem, current, controls)
                taken = jnp.full((count,), t + 1, jnp.int32)
                window_end = ((t + 1) % horizon == 0) & (t + 1 < steps)
                next_values = value(critic, next_states, taken)
                if masks:                               # an ended episode has no loss to come
                    next_values = jnp.where(problem.done(next_states), 0.0, next_values)
                bootstrap = jnp.where(window_end, jnp.mean(next_values), 0.0)
                step_loss = jnp.mean(losses)
                return next_states, (step_loss, bootstrap, losses, current)

            _, (step_losses, bootstraps, losses, trajectory) = jax.lax.scan(body, states, jnp.arange(steps))
            episode_loss = jnp.sum(step_losses)
            return (episode_loss + jnp.sum(bootstraps)) / windows, (episode_loss, losses, trajectory)

        (_, (episode_loss, losses, trajectory)), update = jax.value_and_grad(objective, has_aux=True)(params)
        # critic data: the rollout's states (T, batch, ...) and step indices, stop-gradient
        losses, trajectory = stop(losses), stop(trajectory)
        flat_states = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), trajectory)
        flat_taken = jnp.repeat(jnp.arange(steps, dtype=jnp.int32), count)
        inputs = critic_inputs(problem, flat_states, flat_taken)
        values = (scale * critic_apply(critic, inputs)).reshape(losses.shape)       # V(x_t), (T, batch)
        if masks:
            values = jnp.where(problem.done(flat_states).reshape(losses.shape), 0.0, values)
        next_values = jnp.concatenate([values[1:], jnp.zeros_like(values[:1])], axis=0)
        targets = stop(td_lambda_targets(losses, next_values, lam)).reshape(-1)

        def critic_loss(layers):
            return jnp.mean(jnp.square(scale * critic_apply(layers, inputs) - targets))

        def fit(carry, _):
            layers, optimizer_state = carry
            loss, gradient = jax.value_and_grad(critic_loss)(layers)
            updates, optimizer_state = critic_optimizer.update(gradient, optimizer_state, layers)
            return (optax.apply_updates(layers, updates), optimizer_state), loss

        (layers, optimizer_state), fit_losses = jax.lax.scan(
            fit, (state["critic"], state["critic_optimizer"]), None, length=critic_iterations)
        metrics = {"critic_loss": fit_losses[0], "critic_value": jnp.mean(values[0])}
        new_state = {"critic": layers, "critic_optimizer": optimizer_state, "value_scale": scale}
        return StrategyResult(episode_loss, update, metrics), new_state

    name = f"shac({horizon},{lam:g},{critic_learning_rate:g},{critic_iterations},{'x'.join(map(str, hidden))})"
    return Strategy(name, compute, f"short-horizon actor-critic, windows of {horizon} steps",
                    init=init, metric_names=("critic_loss", "critic_value"))
