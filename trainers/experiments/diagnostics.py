"""Diagnostics of why backpropagation through time struggles: gradient norms against the horizon,
the largest Lyapunov exponent of the closed loop, and the spread of per-episode gradients.

All functions take a :class:`trainers.rollout.Problem`, controller parameters and a batch of initial
states (a state pytree with a leading batch axis, e.g. an :class:`EnvState`), are pure JAX (``lax.scan`` inside) and can
be jitted with the problem and any integer arguments held static (e.g. in a closure).

* :func:`horizon_gradients` / :func:`gradient_norm_by_horizon`: the gradient of the batch loss of
  the first H steps with respect to the parameters, for several H, from one forward rollout.
* :func:`lyapunov_exponent`: the finite-time largest Lyapunov exponent of the closed-loop map
  x_{t+1} = S(x_t, N(x_t)) per instance, by propagating a tangent vector with ``jax.jvp``.
* :func:`per_episode_gradient_variance` (from :mod:`trainers.rollout`, where the engine takes its
  ``gradient_variance`` column): the trace of the covariance of the per-episode gradients.

``diffenvs-diagnose`` (:func:`main`) prints and plots them for the study's tasks and levels.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffenvs.core import EnvState
from trainers.plugins import add_import_flag, import_modules
from trainers.rollout import (  # noqa: F401  (per-episode gradients: re-exported, part of the diagnostics)
    Gate, Problem, State, per_episode_gradient_variance, per_episode_gradients, plain_gate, rollout_loss,
    split_float_leaves,
)

Array = jax.Array


# ------------------------------------------------------------------------------ gradient vs horizon

def _check_horizons(horizons: Sequence[int], num_steps: int) -> tuple[int, ...]:
    """The horizons as a tuple of Python ints in 1..num_steps, or ValueError naming them."""
    values = tuple(horizons)
    if not values or any(isinstance(h, bool) or not isinstance(h, (int, np.integer))
                         or not 1 <= h <= num_steps for h in values):
        raise ValueError(f"horizons must be a non-empty sequence of integers in 1..num_steps = "
                         f"1..{num_steps}, got {horizons!r}")
    return tuple(int(h) for h in values)


def horizon_step_losses(problem: Problem, params: Any, initial_states: State,
                        steps: int | None = None) -> tuple[Array, Array]:
    """The two per-step loss terms of a closed-loop rollout of ``steps`` steps (default: the episode).

    Returns ``(step_losses, final_losses)``, each of shape (steps,): the batch-mean loss contribution
    of step t (``problem.simulate``'s), and the batch-mean loss of step t scored as if it were the
    episode's last step (for an :class:`EnvState`, the environment's reward with the next state's time
    set to ``num_steps``; a state without a clock is scored as it is, so both terms are equal).
    The loss of the episode stopped after H steps is ``sum(step_losses[:H-1]) + final_losses[H-1]``.
    """
    steps = problem.num_steps if steps is None else steps
    env, env_params = problem.env, problem.env_params
    last_time = jnp.asarray(problem.num_steps, jnp.int32)

    def final_loss(state: State, control: Array, next_state: State) -> Array:
        if isinstance(next_state, EnvState):
            next_state = EnvState(next_state.physics, last_time)
        return -env.reward(state, control, next_state, None, env_params)

    def body(states: State, _: Array) -> tuple[State, tuple[Array, Array]]:
        controls = problem.control(params, states)
        next_states, loss = problem.simulate(states, controls)
        finals = jax.vmap(final_loss)(states, controls, next_states)
        if problem.masks_termination:
            finals = jnp.where(problem.done(states), jnp.zeros_like(finals), finals)
        return next_states, (loss, jnp.mean(finals))

    _, (step_losses, final_losses) = jax.lax.scan(body, initial_states, jnp.arange(steps))
    return step_losses, final_losses


def horizon_gradients(problem: Problem, params: Any, initial_states: State,
                      horizons: Sequence[int]) -> tuple[Array, Any]:
    """Losses and parameter gradients of the episode stopped after each of ``horizons`` steps.

    The loss of horizon H is the batch-mean loss of the first H steps with step H-1 scored as the
    episode's last: for losses summed over steps (guidance, quantum, cart-pole CONTINUOUS) the partial
    sum of the first H step contributions (with the environment's own normalisation, e.g. 1/Nt of the
    full episode); for the cart-pole's FINAL loss the angle loss of the state after H steps. At H =
    ``problem.num_steps`` it is the episode's loss (``rollout_loss``).

    One forward rollout of max(horizons) steps, then one reverse pass carrying a batch of
    len(horizons) cotangents. Returns ``(losses (K,), gradients)`` where ``gradients`` has the
    structure of ``params`` with a leading axis of size K = len(horizons).
    """
    horizons = _check_horizons(horizons, problem.num_steps)
    steps = max(horizons)
    index = np.arange(steps)
    step_weights = jnp.asarray([(index < h - 1) for h in horizons], jnp.result_type(float))
    final_weights = jnp.asarray([(index == h - 1) for h in horizons], jnp.result_type(float))
    (step_losses, final_losses), backward = jax.vjp(
        lambda p: horizon_step_losses(problem, p, initial_states, steps), params)
    losses = step_weights @ step_losses + final_weights @ final_losses
    (gradients,) = jax.vmap(lambda w_step, w_final: backward((w_step, w_final)))(step_weights, final_weights)
    return losses, gradients


def _norms(stacked_tree: Any) -> Array:
    """L2 norm of each entry along the leading axis of a pytree seen as flat vectors, shape (K,)."""
    leaves = jax.tree.leaves(stacked_tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1) for leaf in leaves))


def gradient_norm_by_horizon(problem: Problem, params: Any, initial_states: State,
                             horizons: Sequence[int]) -> Array:
    """L2 norm of the parameter gradient of the batch loss of the first H steps, for each H in
    ``horizons`` (integers in 1..num_steps); shape (len(horizons),). See :func:`horizon_gradients`
    for the loss of a horizon."""
    _, gradients = horizon_gradients(problem, params, initial_states, horizons)
    return _norms(gradients)


# ----------------------------------------------------------------------------- Lyapunov exponent

def time_step(problem: Problem) -> float | None:
    """The environment's time step ``env_params.dt`` as a float (cart-pole: s; guidance and quantum:
    the environments' own time units), or None when the environment has none."""
    dt = getattr(problem.env_params, "dt", None)
    return None if dt is None else float(dt)


def lyapunov_exponent(problem: Problem, params: Any, initial_states: State, steps: int | None = None,
                      *, key: Array | None = None, through_network: bool = True) -> Array:
    """Finite-time largest Lyapunov exponent of the closed loop from each initial state, shape (batch,).

    The map is x_{t+1} = S(x_t, N(x_t; θ)) on the state's floating-point leaves, seen together as one
    vector x (other leaves, such as a step counter, are carried along); its Jacobian J_t = A_t + B_t K_t takes both paths (A_t = ∂S/∂x, B_t = ∂S/∂c, K_t = ∂N/∂x).
    A random unit tangent vector per instance (v_0 = ``jax.random.normal(key, (batch, size))``, size
    the number of floating-point state entries, split into the leaves in order and normalised per instance, ``key`` default PRNGKey(0)) is pushed forward with ``jax.jvp`` and
    renormalised after every step; the result is the mean over ``steps`` steps (default: the episode)
    of the log of its growth, i.e. (1/T) log ‖J_{T-1} ⋯ J_0 v_0‖, in natural-log units **per step**
    (divide by :func:`time_step` for per unit of time). It tends to the largest exponent as T grows,
    for almost every v_0. Positive: nearby trajectories separate exponentially (chaotic closed loop,
    exploding BPTT gradients); negative: they converge (vanishing gradients). ``through_network=False``
    drops the network path (J_t = A_t, the Jacobian that the ``modified`` strategy's adjoint propagates).
    For an environment whose episodes may end early, the mean runs over the steps taken before the
    instance's episode ended (NaN if it ended at once).
    """
    steps = problem.num_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    key = jax.random.PRNGKey(0) if key is None else key

    def push(state: State, tangent: list[Array]) -> tuple[State, list[Array]]:
        """The next state and the tangent pushed through the closed loop's Jacobian at ``state``."""
        floats, rebuild = split_float_leaves(state)
        single = lambda s: jax.tree.map(lambda x: x[None], s)

        def closed_loop(x: list[Array]) -> tuple[list[Array], State]:
            current = rebuild(x)
            network_state = current if through_network else jax.lax.stop_gradient(current)
            controls = problem.control(params, single(network_state))
            next_states, _ = problem.simulate(single(current), controls)
            next_state = jax.tree.map(lambda leaf: leaf[0], next_states)
            return split_float_leaves(next_state)[0], next_state

        _, next_tangent, next_state = jax.jvp(closed_loop, (floats,), (tangent,), has_aux=True)
        return next_state, next_tangent

    def unit(vectors: list[Array]) -> tuple[list[Array], Array]:
        squares = [jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1) for v in vectors]
        norms = jnp.sqrt(sum(squares[1:], squares[0]))
        return [v / norms.reshape((-1,) + (1,) * (v.ndim - 1)) for v in vectors], norms

    masks = problem.masks_termination

    def body(carry: tuple[State, list[Array]], _: Array) -> tuple[tuple[State, list[Array]], tuple[Array, Array]]:
        states, tangent = carry
        count = tangent[0].shape[0]
        alive = ~problem.done(states) if masks else jnp.ones((count,), bool)
        next_states, next_tangent = jax.vmap(push)(states, tangent)
        if masks:                                   # an ended episode keeps its tangent, adds nothing
            next_tangent = [jnp.where(alive.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
                            for n, o in zip(next_tangent, tangent)]
        next_tangent, growth = unit(next_tangent)
        return (next_states, next_tangent), (jnp.log(growth), alive)

    floats, _ = split_float_leaves(initial_states)
    count = floats[0].shape[0]
    sizes = [leaf[0].size for leaf in floats]
    drawn = jax.random.normal(key, (count, sum(sizes)), floats[0].dtype)
    offsets = np.cumsum([0] + sizes)
    tangent, _ = unit([drawn[:, a:b].reshape(leaf.shape) for a, b, leaf in zip(offsets[:-1], offsets[1:], floats)])
    _, (log_growth, alive) = jax.lax.scan(body, (initial_states, tangent), jnp.arange(steps))
    if not masks:
        return jnp.mean(log_growth, axis=0)
    counted = jnp.sum(alive, axis=0)
    return jnp.sum(jnp.where(alive, log_growth, 0.0), axis=0) / jnp.where(counted > 0, counted, jnp.nan)


# ----------------------------------------------------------------------------------- command line

DEFAULT_TASKS = ("cartpole", "guidance", "quantum")
MAX_STATES = 256
"""The study's training-set size: ``--states`` takes the first states of a study run's training set."""


def diagnosis_horizons(num_steps: int, count: int) -> tuple[int, ...]:
    """About ``count`` horizons evenly spaced in 1..num_steps, always with 1, N/4, N/2 and N (rounded
    down, at least 1), sorted and distinct."""
    spaced = np.linspace(1, num_steps, max(count, 1)).round().astype(int).tolist()
    quarters = [max(1, num_steps // 4), max(1, num_steps // 2), 1, num_steps]
    return tuple(sorted(set(spaced + quarters)))


def _diagnose_problem(problem: Problem, params: Any, batch: State, key: Array, horizons: int) -> dict[str, Any]:
    """The diagnostics of ``params`` on ``batch``: horizons, losses, gradient norms, exponents, spread."""
    chosen = diagnosis_horizons(problem.num_steps, horizons)
    losses, gradients = jax.jit(lambda p, s: horizon_gradients(problem, p, s, chosen))(params, batch)
    lyapunov = jax.jit(lambda p, s: lyapunov_exponent(problem, p, s, key=key))(params, batch)
    variance = jax.jit(lambda p, s: per_episode_gradient_variance(problem, p, s))(params, batch)
    return {"num_steps": problem.num_steps, "dt": time_step(problem), "horizons": np.asarray(chosen),
            "losses": np.asarray(losses), "gradient_norms": np.asarray(_norms(gradients)),
            "lyapunov": np.asarray(lyapunov), "episode_spread": math.sqrt(float(variance))}


def _training_batch(problem: Problem, seed: int, num_train: int, states: int) -> tuple[Array, Array, State]:
    """(init key, tangent key, the first ``states`` training states) of the run with ``seed``."""
    from trainers.training import initial_states

    key = jax.random.PRNGKey(seed)
    train_key, _, init_key, _ = jax.random.split(key, 4)   # the split of trainers.training.train
    batch = jax.tree.map(lambda x: x[:states], initial_states(problem.env, train_key, num_train))
    return init_key, jax.random.fold_in(key, 1), batch


def diagnose(task: str, level: Any = None, *, seed: int = 0, states: int = 32, horizons: int = 20,
             num_steps: int | None = None, env_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """All diagnostics of one task and complexity level at a study run's initial parameters.

    The parameters are those of the run ``study_preset(task, level, seed=seed)`` before training and
    the states the first ``states`` of its training set. Any other task (``gymnax:...``, ``brax:...``, a
    registered name) takes no level: its run is ``task_preset(task, seed=seed, env_params=env_params)``.
    Returns a dict: ``horizons``, ``losses`` and ``gradient_norms`` (arrays over the horizons),
    ``lyapunov`` (per state, per step), ``dt``, ``episode_spread`` (square root of
    :func:`per_episode_gradient_variance` at the full horizon) and the identifying fields ``task``,
    ``level``, ``parameter``, ``num_steps``, ``label``.
    """
    from diffenvs.registry import canonical_name, is_builtin
    from trainers.presets import COMPLEXITY_LEVELS, study_preset, task_preset

    extra = {**(env_params or {}), **({"num_steps": num_steps} if num_steps is not None else {})}
    if is_builtin(task):
        if level is None:
            raise ValueError(f"level: {canonical_name(task)} needs a complexity level "
                             f"({COMPLEXITY_LEVELS[canonical_name(task)][0]})")
        config = study_preset(task, level, seed=seed, **({"env_params": extra} if extra else {}))
        parameter = COMPLEXITY_LEVELS[config.task][0]
        label = f"{parameter}={level}"
    else:
        if level is not None:
            raise ValueError(f"level: {task!r} has no complexity levels; give env_params instead, got {level!r}")
        config = task_preset(task, seed=seed, env_params=extra)
        parameter, label = None, _params_label(config.env_params)
    problem = config.make_problem()
    init_key, tangent_key, batch = _training_batch(problem, seed, config.num_train, states)
    result = _diagnose_problem(problem, problem.controller.init(init_key), batch, tangent_key, horizons)
    return {"task": config.task, "level": level, "parameter": parameter, "label": label, **result}


def _params_label(env_params: dict[str, Any]) -> str:
    """A label of a task outside the study: its environment parameters, or "default"."""
    return " ".join(f"{name}={value}" for name, value in sorted(env_params.items())) or "default"


def diagnose_run(run_dir: str | Path, *, states: int = 32, horizons: int = 20) -> dict[str, Any]:
    """The diagnostics of :func:`diagnose` at the parameters of a run directory's checkpoint.

    The run's ``config.json`` gives the task, environment and seed (the states are the first
    ``states`` of its training set); runs with a custom controller, optimizer object or strategy are
    refused (their parameters cannot be rebuilt from the configuration). The result also holds
    ``epoch`` (the checkpoint's) and ``strategy``.
    """
    from trainers import rundir
    from trainers.presets import COMPLEXITY_LEVELS
    from trainers.training import TrainConfig

    run_dir = Path(run_dir)
    record = rundir.read_config(run_dir)
    if record is None:
        raise ValueError(f"run directory {run_dir} holds no config.json")
    if record.get("controller") == "custom" or record.get("optimizer_object") == "custom" \
            or str(record.get("strategy", "")).startswith("custom:"):
        raise ValueError(f"run directory {run_dir} was trained with a custom controller, optimizer or strategy; "
                         f"only runs of the named ones can be diagnosed")
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{name: value for name, value in record.items() if name in names})
    problem = config.make_problem()
    init_key, tangent_key, batch = _training_batch(problem, config.seed, config.num_train, states)
    initial = problem.controller.init(init_key)
    loaded = rundir.load_checkpoint(run_dir, {"params": initial}, leading=True)     # the params of its TrainState
    if loaded is None:
        raise ValueError(f"run directory {run_dir} holds no checkpoint.npz")
    epoch, state = loaded
    task = problem.env.name if problem.env.name in COMPLEXITY_LEVELS else config.task
    if task in COMPLEXITY_LEVELS:
        parameter = COMPLEXITY_LEVELS[task][0]
        level = getattr(problem.env_params, parameter)
        label = f"{parameter}={level}"
    else:
        parameter, level, label = None, None, _params_label(config.env_params)
    result = _diagnose_problem(problem, state["params"], batch, tangent_key, horizons)
    return {"task": task, "level": level, "parameter": parameter, "epoch": epoch,
            "strategy": config.strategy, "label": f"{label} {config.strategy} epoch {epoch}", **result}


def _format(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _norm_at(result: dict[str, Any], horizon: int) -> float:
    return float(result["gradient_norms"][list(result["horizons"]).index(horizon)])


def summary_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per result of :func:`diagnose` (the printed table's columns)."""
    rows = []
    for result in results:
        n = result["num_steps"]
        half, full = _norm_at(result, max(1, n // 2)), _norm_at(result, n)
        lyapunov, dt = result["lyapunov"], result["dt"]
        mean = float(np.mean(lyapunov))
        rows.append({
            "task": result["task"], "level": result["label"], "steps": n,
            "‖g‖ H=1": _norm_at(result, 1), "‖g‖ H=N/4": _norm_at(result, max(1, n // 4)),
            "‖g‖ H=N/2": half, "‖g‖ H=N": full,
            "growth N/2→N": full / half if half > 0 else math.inf,
            "λ/step": mean, "max λ/step": float(np.max(lyapunov)),
            "λ/time": mean / dt if dt else math.nan,
            "states λ>0": f"{int(np.sum(lyapunov > 0))}/{lyapunov.size}",
            "episode spread": result["episode_spread"]})
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a markdown table (numbers to 3 significant digits)."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_format(v) if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """One row per task, level and horizon: loss and gradient norm, with the level's Lyapunov summary."""
    columns = ["task", "parameter", "level", "label", "num_steps", "dt", "horizon", "loss", "gradient_norm",
               "lyapunov_mean_per_step", "lyapunov_std_per_step", "lyapunov_max_per_step",
               "lyapunov_mean_per_time", "episode_spread", "states"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in results:
            lyapunov, dt = r["lyapunov"], r["dt"]
            summary = [float(np.mean(lyapunov)), float(np.std(lyapunov)), float(np.max(lyapunov)),
                       float(np.mean(lyapunov)) / dt if dt else math.nan, r["episode_spread"], lyapunov.size]
            for horizon, loss, norm in zip(r["horizons"], r["losses"], r["gradient_norms"]):
                writer.writerow([r["task"], r["parameter"], r["level"], r["label"], r["num_steps"], dt, int(horizon),
                                 float(loss), float(norm), *summary])
    return path


def plot_gradient_norms(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Gradient norm against the horizon (log scale), one panel per task and one line per level."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results))
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for r in (r for r in results if r["task"] == task):
            norms = np.where(r["gradient_norms"] > 0, r["gradient_norms"], np.nan)
            axis.plot(r["horizons"], norms, marker=".", label=r["label"])
        axis.set_yscale("log")
        axis.set_title(task)
        axis.set_xlabel("horizon H (steps)")
        axis.set_ylabel("‖∇θ L_H‖" + ("" if any("epoch" in r for r in results) else " at initialisation"))
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _parse_levels(items: Sequence[str] | None, tasks: Sequence[str]) -> dict[str, list[Any]]:
    """``--levels`` as task -> levels: a list for a single task, or TASK=L1,L2 entries; default the study's."""
    from diffenvs.registry import canonical_name
    from trainers.presets import COMPLEXITY_LEVELS

    def value(text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"--levels: {text!r} is not a number") from None

    levels = {task: list(COMPLEXITY_LEVELS[canonical_name(task)][1]) for task in tasks}
    if not items:
        return levels
    if any("=" in item for item in items):
        given: dict[str, list[Any]] = {}
        for item in items:
            task, equals, values = item.partition("=")
            if not equals or task not in tasks:
                raise ValueError(f"--levels: {item!r} must be TASK=L1,L2,... with TASK one of --tasks {list(tasks)}")
            given[task] = [_study_value(task, value(v)) for v in values.split(",") if v != ""]
        return {**levels, **given}
    if len(tasks) != 1:
        raise ValueError(f"--levels: with several tasks {list(tasks)} give TASK=L1,L2,... per task, got {list(items)}")
    return {tasks[0]: [_study_value(tasks[0], value(item)) for item in items]}


def _study_value(task: str, level: Any) -> Any:
    """The study's spelling of ``level`` (1 -> 1.0 for rc), or ``level`` itself when it is not one of them."""
    from diffenvs.registry import canonical_name
    from trainers.presets import COMPLEXITY_LEVELS

    if isinstance(level, bool):
        return level
    return next((study for study in COMPLEXITY_LEVELS[canonical_name(task)][1] if study == level), level)


def _parser() -> argparse.ArgumentParser:
    from trainers.cli import CommandParser

    parser = CommandParser(
        prog="diffenvs-diagnose",
        description="At a study run's initial parameters (or at the checkpoints of --runs), for each task and "
                    "complexity level: the norm of the gradient of the loss of the first H steps against the "
                    "horizon H, the largest Lyapunov exponent of the closed loop and the spread of the "
                    "per-episode gradients. Prints a table and writes OUT/diagnostics.png, OUT/diagnostics.csv "
                    "and OUT/diagnostics.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=None,
                        help=f"tasks (default: {' '.join(DEFAULT_TASKS)}); also gymnax:ENV_ID, brax:NAME or a "
                             "registered name (no levels; the task's preset, parameters from --env-param)")
    parser.add_argument("--env-param", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment parameter of the tasks outside the study (JSON value, repeatable)")
    add_import_flag(parser)
    parser.add_argument("--levels", nargs="+", default=None,
                        help="complexity levels (poles, rc, target); for several tasks TASK=L1,L2,...; "
                             "default: the study's levels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the study run whose initial state is used")
    parser.add_argument("--runs", nargs="+", type=Path, default=None, metavar="RUN_DIR",
                        help="instead of --tasks/--levels/--seed: the parameters of these run directories' "
                             "checkpoints (task, level and seed from their config.json)")
    parser.add_argument("--states", type=int, default=32,
                        help=f"initial states (the first of the run's training set, 2..{MAX_STATES})")
    parser.add_argument("--horizons", type=int, default=20, help="about this many horizons per task on the plot")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="episode length override (default: each environment's; the cart-pole's dt "
                             "and guidance's dt are horizon / num_steps)")
    parser.add_argument("--out", type=Path, default=Path("diagnostics"), help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-diagnose``."""
    import_modules(argv, "diffenvs-diagnose")
    parser = _parser()
    args = parser.parse_args(argv)
    if not 2 <= args.states <= MAX_STATES:
        parser.error(f"--states must be an integer in 2..{MAX_STATES}, got {args.states}")
    if args.horizons < 1:
        parser.error(f"--horizons must be an integer >= 1, got {args.horizons}")
    if args.num_steps is not None and args.num_steps < 1:
        parser.error(f"--num-steps must be an integer >= 1, got {args.num_steps}")
    results = []
    if args.runs is not None:
        given = [flag for flag, value in (("--tasks", args.tasks), ("--levels", args.levels),
                                          ("--num-steps", args.num_steps)) if value is not None]
        if given or args.seed != 0:
            parser.error(f"--runs takes task, level, seed and episode length from the runs; drop "
                         f"{', '.join(given + (['--seed'] if args.seed != 0 else []))}")
        for run_dir in args.runs:
            print(f"diffenvs-diagnose: {run_dir} ...", flush=True)
            try:
                results.append(diagnose_run(run_dir, states=args.states, horizons=args.horizons))
            except ValueError as error:
                parser.error(str(error))
    else:
        tasks = list(dict.fromkeys(args.tasks or DEFAULT_TASKS))
        try:
            from diffenvs.registry import canonical_name, is_builtin
            from trainers.cli import parse_env_params
            from trainers.presets import study_preset, task_preset  # here: trainers.training may import this module
            for task in tasks:
                try:
                    canonical_name(task)
                except ValueError as error:
                    raise ValueError(f"--tasks: {error}") from None
            study_tasks = [task for task in tasks if is_builtin(task)]
            levels = _parse_levels(args.levels, study_tasks) if study_tasks else {}
            if args.levels and len(study_tasks) < len(tasks) and not any("=" in item for item in args.levels):
                raise ValueError(f"--levels: give TASK=L1,L2,... when --tasks holds tasks without levels {tasks}")
            env_params = parse_env_params(args.env_param)
            if env_params and len(study_tasks) == len(tasks):
                raise ValueError("--env-param applies to tasks outside the study (the study's tasks take --levels "
                                 "and --num-steps)")
            for task in tasks:
                if is_builtin(task):
                    for level in levels[task]:
                        study_preset(task, level).make_env()
                else:
                    task_preset(task, env_params=env_params).make_env()
        except ValueError as error:
            parser.error(str(error))
        for task in tasks:
            if not is_builtin(task):
                print(f"diffenvs-diagnose: {task} ...", flush=True)
                extra = {**env_params, **({"num_steps": args.num_steps} if args.num_steps is not None else {})}
                results.append(diagnose(task, seed=args.seed, states=args.states, horizons=args.horizons,
                                        env_params=extra))
                continue
            for level in levels[task]:
                print(f"diffenvs-diagnose: {task} {level} ...", flush=True)
                results.append(diagnose(task, level, seed=args.seed, states=args.states, horizons=args.horizons,
                                        num_steps=args.num_steps))
    table = markdown_table(summary_rows(results))
    print(table, end="")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diagnostics.md").write_text(table)
    print(f"csv: {write_csv(results, args.out / 'diagnostics.csv')}")
    print(f"plot: {plot_gradient_norms(results, args.out / 'diagnostics.png')}")
    return 0
