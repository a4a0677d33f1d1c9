"""Training a controller by backpropagating through rollouts: configuration, the compiled epoch, runs.

One epoch is one compiled program: a ``lax.scan`` over the fixed-order batches of the training set
(strategy -> clipping -> optimizer), followed by the full train and test losses. The Python loop over
epochs only writes metrics and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffenvs
from diffenvs.core import EnvState, FunctionalEnv
from diffenvs.registry import canonical_name
from trainers import rundir
from trainers.checks import check_finite_positive
from trainers.networks import Controller, study_controller
from trainers.rollout import Problem, rollout_loss
from trainers.strategies import Strategy, get_strategy

CLIP_MODES = ("none", "value", "norm")


def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-7)


OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": _adam,  # Keras defaults of the study: β 0.9 / 0.999, ε 1e-7
    "sgd": optax.sgd,
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adagrad": lambda learning_rate: optax.adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7),
    "adadelta": lambda learning_rate: optax.adadelta(learning_rate, rho=0.95, eps=1e-7),
    "rmsprop": lambda learning_rate: optax.rmsprop(learning_rate, decay=0.9, eps=1e-7),
}
"""Optimizers by name, with the Keras defaults the study used."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``).

    task: environment name ("cartpole", "guidance", "quantum" or a canonical name).
    env_params: parameters of the environment (e.g. {"num_poles": 2}).
    strategy: gradient strategy name (see :mod:`trainers.strategies`) or a
    :class:`~trainers.strategies.Strategy` object (recorded as "custom:NAME"); truncate_every,
    es_population and es_noise parametrise "truncated" and "es".
    optimizer: name in :data:`OPTIMIZERS`; learning_rate > 0.
    clip: "none", "value" or "norm" (global norm), applied to the update before the optimizer, with
    clip_threshold.
    num_train, num_test: initial states drawn with the seed (two independent draws).
    batch_size: states per update, in a fixed order; the remainder of num_train / batch_size is
    unused. epochs: passes over the training set. seed: the one seed of the run.
    checkpoint_every: epochs between checkpoints (the last epoch is always checkpointed).
    """

    task: str = "cartpole"
    env_params: dict = dataclasses.field(default_factory=dict)
    strategy: str | Strategy = "combined"
    truncate_every: int | None = None
    es_population: int = 32
    es_noise: float = 0.02
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    clip: str = "none"
    clip_threshold: float = 1.0
    num_train: int = 256
    num_test: int = 256
    batch_size: int = 8
    epochs: int = 1000
    seed: int = 0
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        canonical_name(self.task)
        for name in ("num_train", "num_test", "batch_size", "epochs", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size > self.num_train:
            raise ValueError(f"batch_size must be at most num_train = {self.num_train}, "
                             f"got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if not self.clip_threshold > 0:
            raise ValueError(f"clip_threshold must be > 0, got {self.clip_threshold!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        self.make_strategy()

    def make_strategy(self) -> Strategy:
        return get_strategy(self.strategy, truncate_every=self.truncate_every,
                            es_population=self.es_population, es_noise=self.es_noise)

    def make_env(self) -> FunctionalEnv:
        return diffenvs.make(self.task, **self.env_params)

    def make_problem(self, controller: Controller | None = None) -> Problem:
        """The task's environment with its default parameters and ``controller`` (default: the
        study's network for the task)."""
        env = self.make_env()
        controller = controller or study_controller(env.name, env.physics_shape(), env.action_shape())
        return Problem(env, env.default_params, controller)

    def make_optimizer(self) -> optax.GradientTransformation:
        """Clipping of the update (per ``clip``) followed by the optimizer."""
        optimizer = OPTIMIZERS[self.optimizer](self.learning_rate)
        if self.clip == "value":
            return optax.chain(optax.clip(self.clip_threshold), optimizer)
        if self.clip == "norm":
            return optax.chain(optax.clip_by_global_norm(self.clip_threshold), optimizer)
        return optimizer

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        record = dataclasses.asdict(self)
        if isinstance(self.strategy, Strategy):
            record["strategy"] = f"custom:{self.strategy.name}"
        return record


class TrainState(NamedTuple):
    """What a checkpoint holds: controller params, optimizer state, the strategy's PRNG key."""

    params: Any
    optimizer_state: Any
    key: jax.Array


class TrainResult(NamedTuple):
    """Final controller params, per-epoch metrics rows and the run directory (None if not written)."""

    params: Any
    metrics: list[dict[str, float]]
    run_dir: Path | None


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, parameter or optimizer state; the last good checkpoint is kept."""


class ZeroUpdateWarning(UserWarning):
    """A whole epoch's updates were exactly zero: the parameters did not change."""


def warn_if_zero_update(row: dict[str, float], run: str, strategy_name: str) -> bool:
    """Warn when ``row``'s mean squared update norm is exactly 0; returns whether it was (callers warn
    once per run).

    With ``es`` this happens when every antithetic loss difference rounds to 0 (float32 at quantum
    control targets 4 and 5 with the default noise), and training would silently stand still.
    """
    if row["update_norm_squared"] != 0.0:
        return False
    hint = (" Every antithetic loss difference rounded to 0: the losses differ by less than their "
            "floating-point spacing; try a larger es_noise (benchmarks/es_resolution.py prints how "
            "many differences are nonzero)." if strategy_name.startswith("es") else "")
    warnings.warn(f"{run}: the update of strategy {strategy_name} was exactly zero in every batch of epoch "
                  f"{row['epoch']}, so the parameters did not change.{hint}", ZeroUpdateWarning, stacklevel=3)
    return True


LOSS_COLUMNS = ("batch_loss", "train_loss", "test_loss")
"""The metrics that must stay finite for training to go on. ``update_norm_squared`` is a diagnostic of
the raw update before clipping: it may overflow float32 (norm above about 1.8e19) while the clipped
update, and so the training state, stays finite; it is then logged as ``inf``."""


def finite_leaves(tree: Any, per_run: bool = False) -> bool | np.ndarray:
    """Whether every floating-point leaf of ``tree`` is finite (host-side check of a training state).

    With ``per_run``, the leaves carry a leading run axis (a sweep group) and the result is a bool
    array with one answer per run.
    """
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
    leaves = [leaf for leaf in leaves if np.issubdtype(leaf.dtype, np.inexact)]
    if not per_run:
        return all(bool(np.all(np.isfinite(leaf))) for leaf in leaves)
    count = leaves[0].shape[0] if leaves else 0
    result = np.ones(count, bool)
    for leaf in leaves:
        result &= np.isfinite(leaf.reshape(count, -1)).all(axis=1)
    return result


def initial_states(env: FunctionalEnv, key: jax.Array, count: int) -> EnvState:
    """``count`` states from the environment's starting distribution (leading batch axis)."""
    return jax.vmap(env.initial)(jax.random.split(key, count))


def tree_squared_norm(tree: Any) -> jax.Array:
    """Squared L2 norm of a pytree seen as one flat vector (scalar)."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


def scan_epoch(problem: Problem, update: Callable, state: Any, train_states: EnvState,
               test_states: EnvState, batch_size: int) -> tuple[Any, dict[str, jax.Array]]:
    """One epoch: ``update(state, batch) -> (state, (loss, update norm², cosine))`` scanned over the
    ``len // batch_size`` fixed-order batches of ``train_states``, then the full train and test losses.

    Returns the new state and the epoch's scalar metrics (mean batch loss, train and test losses, mean
    squared update norm, mean cosine).
    """
    num_batches = train_states.physics.shape[0] // batch_size
    batches = jax.tree.map(
        lambda x: x[:num_batches * batch_size].reshape(num_batches, batch_size, *x.shape[1:]), train_states)
    state, (losses, norms, cosines) = jax.lax.scan(update, state, batches)
    metrics = {"batch_loss": jnp.mean(losses),
               "train_loss": rollout_loss(problem, state.params, train_states),
               "test_loss": rollout_loss(problem, state.params, test_states),
               "update_norm_squared": jnp.mean(norms),
               "cosine": jnp.mean(cosines)}
    return state, metrics


def make_epoch(problem: Problem, strategy: Strategy, optimizer: optax.GradientTransformation,
               batch_size: int) -> Callable:
    """The jitted epoch: ``epoch(train_state, train_states, test_states) -> (train_state, metrics)``.

    The training states are split into ``len // batch_size`` batches in a fixed order; metrics are
    scalars (mean batch loss, full train and test losses, mean squared update norm, mean cosine).
    """
    def update(state: TrainState, batch: EnvState):
        key, step_key = jax.random.split(state.key)
        result = strategy(problem, state.params, batch, step_key)
        updates, optimizer_state = optimizer.update(result.update, state.optimizer_state, state.params)
        params = optax.apply_updates(state.params, updates)
        cosine = result.metrics.get("cosine", jnp.full((), jnp.nan, result.loss.dtype))
        return TrainState(params, optimizer_state, key), (result.loss, tree_squared_norm(result.update), cosine)

    def epoch(state: TrainState, train_states: EnvState, test_states: EnvState):
        return scan_epoch(problem, update, state, train_states, test_states, batch_size)

    return jax.jit(epoch)


class _Compiled(NamedTuple):
    """What a configuration compiles to; reused by runs that differ only in seed and length."""

    problem: Problem
    strategy: Strategy
    optimizer: optax.GradientTransformation
    epoch: Callable
    evaluate: Callable
    executables: dict


_COMPILED: dict[str, _Compiled] = {}
_SHARED_FIELDS_EXCLUDED = ("seed", "epochs", "checkpoint_every")


def _compile(config: TrainConfig, controller: Controller | None,
             optimizer: optax.GradientTransformation | None) -> _Compiled:
    """Build (or reuse, for study controllers, named optimizers and named strategies) the programs."""
    shareable = controller is None and optimizer is None and isinstance(config.strategy, str)
    cache_key = json.dumps({key: value for key, value in config.to_dict().items()
                            if key not in _SHARED_FIELDS_EXCLUDED}, sort_keys=True)
    if shareable and cache_key in _COMPILED:
        return _COMPILED[cache_key]
    problem = config.make_problem(controller)
    strategy = config.make_strategy()
    optimizer = optimizer or config.make_optimizer()
    compiled = _Compiled(problem, strategy, optimizer,
                         make_epoch(problem, strategy, optimizer, config.batch_size),
                         jax.jit(lambda params, states: rollout_loss(problem, params, states)), {})
    if shareable:
        if len(_COMPILED) >= 16:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[cache_key] = compiled
    return compiled


class _Progress:
    """A tqdm bar with the current losses, or nothing when quiet."""

    def __init__(self, total: int, initial: int, quiet: bool, description: str):
        self.bar = None
        if not quiet:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=description, unit="epoch", file=sys.stdout,
                            dynamic_ncols=True, mininterval=0.5)

    def update(self, row: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(batch=f"{row['batch_loss']:.3g}", train=f"{row['train_loss']:.3g}",
                                 test=f"{row['test_loss']:.3g}", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(config: TrainConfig | None = None, *, out: str | Path | None = None,
          controller: Controller | None = None, optimizer: optax.GradientTransformation | None = None,
          quiet: bool = False, overwrite: bool = False, minutes: float | None = None,
          callback: Callable[[dict[str, float]], None] | None = None, **overrides: Any) -> TrainResult:
    """Train a controller; returns its params and per-epoch metrics.

    ``config`` (or keyword overrides of :class:`TrainConfig`) defines the run. With ``out`` the run
    directory gets ``config.json``, ``metrics.csv`` (one row per epoch, epoch 0 = before training)
    and ``checkpoint.npz``; calling ``train`` again on an existing run directory with the same
    configuration resumes it from its last checkpoint and ends with exactly the parameters and metrics
    of an uninterrupted run. ``callback(row)`` is called after each epoch is recorded (and
    checkpointed when due); raising from it stops the run. ``controller`` replaces the study's network; ``optimizer`` (any optax
    transformation) replaces the named optimizer and the clipping.

    ``minutes`` is a wall-time budget: training stops (with a checkpoint) after the first epoch at which
    the run's training time, the sum of its ``epoch_seconds`` across resumes (compilation excluded),
    reaches it, or at ``config.epochs``, whichever comes first. The epoch reached depends on the
    machine; the parameters at a given epoch do not (train with ``epochs`` set to it to reproduce them).
    """
    if minutes is not None:
        check_finite_positive("minutes", minutes)
    config = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    custom = {"controller": "custom" if controller is not None else "study",
              "optimizer_object": "custom" if optimizer is not None else None}
    problem, strategy, optimizer, epoch_fn, evaluate, executables = _compile(config, controller, optimizer)
    env, controller = problem.env, problem.controller

    run_dir = Path(out) if out is not None else None
    record = {**config.to_dict(), **{k: v for k, v in custom.items() if v is not None},
              "diffenvs_version": diffenvs.__version__}
    if run_dir is not None:
        existing = rundir.read_config(run_dir)
        if existing is not None and not overwrite:
            if existing != record:
                changed = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
                raise ValueError(f"out: {run_dir} holds a run with a different configuration (differs in "
                                 f"{changed}); choose another directory or pass overwrite=True")
        elif existing is not None and overwrite:
            for name in (rundir.CHECKPOINT_FILE, rundir.METRICS_FILE):
                (run_dir / name).unlink(missing_ok=True)
        rundir.write_config(run_dir, record)

    key = jax.random.PRNGKey(config.seed)
    train_key, test_key, init_key, strategy_key = jax.random.split(key, 4)
    train_states = initial_states(env, train_key, config.num_train)
    test_states = initial_states(env, test_key, config.num_test)
    params = controller.init(init_key)
    state = TrainState(params, optimizer.init(params), strategy_key)

    loaded = rundir.load_checkpoint(run_dir, state) if run_dir is not None else None
    if loaded is not None:
        start_epoch, state = loaded
        rows = [row for row in rundir.read_metrics(run_dir) if row["epoch"] <= start_epoch]
        if len(rows) != start_epoch + 1:
            raise ValueError(f"out: {run_dir}/metrics.csv has {len(rows)} complete rows up to the "
                             f"checkpoint at epoch {start_epoch}, expected {start_epoch + 1}")
    else:
        start_epoch = 0
        rows = [{"epoch": 0, "batch_loss": math.nan, "train_loss": float(evaluate(params, train_states)),
                 "test_loss": float(evaluate(params, test_states)), "update_norm_squared": math.nan,
                 "cosine": math.nan, "epoch_seconds": 0.0}]
    if run_dir is not None:
        rundir.write_metrics(run_dir, rows)
    budget_seconds = math.inf if minutes is None else 60.0 * minutes
    spent_seconds = sum(row["epoch_seconds"] for row in rows)
    if start_epoch >= config.epochs or spent_seconds >= budget_seconds:
        return TrainResult(state.params, rows, run_dir)

    signature = str(jax.tree.map(lambda x: (x.shape, x.dtype), (state, train_states, test_states)))
    if signature not in executables:
        executables[signature] = epoch_fn.lower(state, train_states, test_states).compile()
    compiled = executables[signature]
    progress = _Progress(config.epochs, start_epoch, quiet, f"{env.name} {strategy.name}")
    warned = False
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            new_state, metrics = compiled(state, train_states, test_states)
            metrics = {name: float(value) for name, value in metrics.items()}
            seconds = time.perf_counter() - started
            row = {"epoch": epoch, **metrics, "epoch_seconds": seconds}
            if not (rundir.all_finite(row, LOSS_COLUMNS) and finite_leaves(new_state)):
                kept = f"; the last good checkpoint in {run_dir} is kept" if run_dir is not None else ""
                raise NonFiniteError(f"epoch {epoch}: non-finite loss, parameters or optimizer state (batch loss "
                                     f"{row['batch_loss']}, update norm² {row['update_norm_squared']}, test "
                                     f"loss {row['test_loss']}); training stopped{kept}. Try clip='norm' or a "
                                     f"smaller learning_rate.")
            state = new_state
            rows.append(row)
            if not warned:
                warned = warn_if_zero_update(row, str(run_dir or f"{env.name} run"), strategy.name)
            progress.update(row)
            spent_seconds += seconds
            out_of_time = spent_seconds >= budget_seconds
            if run_dir is not None:
                rundir.append_metrics(run_dir, row)
                if epoch % config.checkpoint_every == 0 or epoch == config.epochs or out_of_time:
                    rundir.save_checkpoint(run_dir, epoch, state)
            if callback is not None:
                callback(row)
            if out_of_time:
                break
    finally:
        progress.close()
    return TrainResult(state.params, rows, run_dir)
