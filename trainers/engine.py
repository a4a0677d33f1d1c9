"""The one training engine: the compiled epoch and the epoch loop, for a group of runs.

A *group* is a set of runs that share shapes (task, environment parameters, data sizes, optimizer,
learning rate, strategy family) and train as ONE jitted program vmapped over the runs. A single run
(:func:`trainers.training.train`) is a group of one; a sweep (:mod:`trainers.experiments.sweep`) trains larger
groups. Both go through :func:`make_group_epoch` and :func:`train_members`, so a strategy that works in
one works in the other.

One epoch is a ``lax.scan`` over the fixed-order batches of the training set (strategy -> clipping ->
optimizer), followed by the full train and test losses. The study's gated strategies are data in a
group (:func:`trainers.strategies.gated_fields`):

* ``bptt``, ``modified``, ``network_only``, ``one_step`` and ``truncated(k)`` are one backward sweep
  over the forward rollout whose two state paths are scaled by per-run *gates*; ``combined`` is two
  sweeps, gates (1, 1) and (0, 1), combined by the sign rule (a group holding a ``combined`` run gives
  every run two fields, the second unused by the others);
* the clipping mode is an index selecting among the unclipped, value-clipped and norm-clipped update;
* seeds are vmapped parameters, optimizer and strategy states, PRNG keys and initial states.

Any other strategy (``es``, registered or custom :class:`~trainers.strategies.Strategy` objects, with
or without state) forms groups of its own, vmapped over clipping modes and seeds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffenvs.core import ControlEnv
from diffenvs.registry import registration
from trainers import rundir
from trainers.config import CLIP_MODES, OPTIMIZERS, TrainConfig
from trainers.networks import Controller
from trainers.rollout import (
    Problem, State, batch_size as leading_size, first_nonfinite_step, per_episode_gradient_variance,
    rollout_loss,
)
from trainers.strategies import STUDY_GATES, Strategy, cosine_similarity, gated_fields, sign_agreement

GATED_STRATEGIES = ("bptt", "modified", "network_only", "one_step", "combined", "truncated")
"""Strategies expressed by gates as data: any mix of them trains in one vmapped program."""
LOSS_COLUMNS = ("batch_loss", "train_loss", "test_loss")
"""The metrics that must stay finite for training to go on. ``update_norm_squared`` is a diagnostic of
the raw update before clipping: it may overflow float32 (norm above about 1.8e19) while the clipped
update, and so the training state, stays finite; it is then logged as ``inf``."""


class TrainState(NamedTuple):
    """What a checkpoint holds: controller params, optimizer state, the strategy's PRNG key and the
    strategy's own state (``()`` for a stateless strategy, which adds nothing to the checkpoint)."""

    params: Any
    optimizer_state: Any
    key: jax.Array
    strategy_state: Any = ()


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
            "floating-point spacing; try a larger es_noise or precision='float64' "
            "(benchmarks/es_resolution.py prints how many differences are nonzero)."
            if strategy_name.startswith("es") else "")
    warnings.warn(f"{run}: the update of strategy {strategy_name} was exactly zero in every batch of epoch "
                  f"{row['epoch']}, so the parameters did not change.{hint}", ZeroUpdateWarning, stacklevel=3)
    return True


def finite_leaves(tree: Any, per_run: bool = False) -> bool | np.ndarray:
    """Whether every floating-point leaf of ``tree`` is finite (host-side check of a training state).

    With ``per_run``, the leaves carry a leading run axis (a group) and the result is a bool array with
    one answer per run.
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


def initial_states(env: ControlEnv, key: jax.Array, count: int) -> State:
    """``count`` states from the environment's starting distribution (a state pytree, leading batch axis)."""
    return jax.vmap(env.initial)(jax.random.split(key, count))


def run_test_states(env: ControlEnv, seed: int, count: int) -> State:
    """The test set of a run with ``seed``: ``count`` initial states drawn with the second of the four keys
    ``jax.random.split(PRNGKey(seed), 4)`` (train, test, init, strategy) that every run splits its seed into."""
    _, test_key, _, _ = jax.random.split(jax.random.PRNGKey(seed), 4)
    return initial_states(env, test_key, count)


def locate_nonfinite(problem: Problem, params: Any, train_states: State, batch_size: int) -> str:
    """Where the rollout's loss or gradient first stops being finite at ``params`` (the parameters at the
    start of the failing epoch): the first training batch, in the epoch's order, with a non-finite step
    loss or per-step gradient, and that step (:func:`trainers.rollout.first_nonfinite_step`)."""
    for number in range(leading_size(train_states) // batch_size):
        batch = jax.tree.map(lambda x: x[number * batch_size:(number + 1) * batch_size], train_states)
        step = first_nonfinite_step(problem, params, batch)
        if step is not None:
            return (f"the first non-finite step loss or gradient is at step {step} (of {problem.num_steps}) of "
                    f"training batch {number}")
        if number >= 7:
            break
    return ("at the epoch's starting parameters every step loss and gradient of the first batches is finite "
            "(the updates diverged during the epoch)")


def tree_squared_norm(tree: Any) -> jax.Array:
    """Squared L2 norm of a pytree seen as one flat vector (scalar)."""
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree))


def scan_epoch(problem: Problem, update: Callable, state: Any, train_states: State,
               test_states: State, batch_size: int) -> tuple[Any, dict[str, jax.Array]]:
    """One epoch: ``update(state, batch) -> (state, (loss, update norm², cosine, extra metrics))``
    scanned over the ``len // batch_size`` fixed-order batches of ``train_states``, then the full train
    and test losses.

    Returns the new state and the epoch's scalar metrics (mean batch loss, train and test losses, mean
    squared update norm, mean cosine, and the mean of each extra metric).
    """
    num_batches = leading_size(train_states) // batch_size
    batches = jax.tree.map(
        lambda x: x[:num_batches * batch_size].reshape(num_batches, batch_size, *x.shape[1:]), train_states)
    state, (losses, norms, cosines, extras) = jax.lax.scan(update, state, batches)
    metrics = {"batch_loss": jnp.mean(losses),
               "train_loss": rollout_loss(problem, state.params, train_states),
               "test_loss": rollout_loss(problem, state.params, test_states),
               "update_norm_squared": jnp.mean(norms),
               "cosine": jnp.mean(cosines)}
    metrics.update({name: jnp.mean(values) for name, values in extras.items()})
    return state, metrics


# ------------------------------------------------------------------------------------------ programs

class RunData(NamedTuple):
    """Per-run data of a group: gates (fields, 2), combine flag, truncation, clipping mode."""

    gates: jax.Array
    combine: jax.Array
    truncate_every: jax.Array
    clip_mode: jax.Array


def is_gated(config: TrainConfig) -> bool:
    """Whether the run's strategy is one of the study's gated strategies (data in a group)."""
    return isinstance(config.strategy, str) and config.strategy in GATED_STRATEGIES


def run_data(config: TrainConfig, fields: int, clip: bool = True) -> RunData:
    """The per-run data of ``config`` in a group with ``fields`` backward sweeps; ``clip`` False means
    no clipping (a custom optimizer object clips, or not, by itself)."""
    strategy = config.strategy if isinstance(config.strategy, str) else ""
    if strategy == "combined":
        gates = [STUDY_GATES["bptt"], STUDY_GATES["modified"]]
    elif strategy == "truncated":
        gates = [STUDY_GATES["bptt"]] * fields
    else:
        gates = [STUDY_GATES.get(strategy, (1.0, 1.0))] * fields
    return RunData(np.asarray(gates[:fields], np.float32), np.asarray(strategy == "combined"),
                   np.asarray(config.truncate_every if strategy == "truncated" else 0, np.int32),
                   np.asarray(CLIP_MODES.index(config.clip) if clip else 0, np.int32))


def clip_update(update: Any, mode: jax.Array, threshold: float) -> Any:
    """The update clipped as ``TrainConfig.make_optimizer`` does for clip mode ``CLIP_MODES[mode]``.

    All three variants are computed (optax.clip and optax.clip_by_global_norm at ``threshold``) and the
    run's mode selects one, so ``mode`` may be a vmapped array.
    """
    by_value, _ = optax.clip(threshold).update(update, optax.EmptyState())
    by_norm, _ = optax.clip_by_global_norm(threshold).update(update, optax.EmptyState())
    return jax.tree.map(lambda none, value, norm: jnp.where(mode == 1, value, jnp.where(mode == 2, norm, none)),
                        update, by_value, by_norm)


def make_group_epoch(problem: Problem, optimizer: optax.GradientTransformation, batch_size: int,
                     clip_threshold: float, strategy: Strategy | None, fields: int,
                     gradient_variance: bool = False) -> Callable:
    """The jitted group epoch ``(states, data, train_states, test_states, active) -> (states, metrics)``.

    Every argument has a leading run axis. ``strategy`` None means a gated group with ``fields`` (1 or 2)
    backward sweeps per run; otherwise every run uses ``strategy`` (stateless or stateful; its
    ``metric_names`` become metrics). ``optimizer`` is the optimizer without clipping (clipping is
    per-run data). Inactive runs keep their state. ``gradient_variance`` adds the metric of that name
    (:func:`trainers.rollout.per_episode_gradient_variance` of each batch, averaged).
    """
    extra_names = () if strategy is None else tuple(n for n in strategy.metric_names if n != "cosine")

    def direction(params: Any, batch: State, key: jax.Array, data: RunData, strategy_state: Any):
        if strategy is not None:
            result, strategy_state = strategy.apply(problem, params, batch, key, strategy_state)
            nan = jnp.full((), jnp.nan, result.loss.dtype)
            extras = {name: result.metrics[name] for name in extra_names}
            return result.loss, result.update, result.metrics.get("cosine", nan), extras, strategy_state
        loss, gradients = gated_fields(problem, params, batch, data.gates, data.truncate_every)
        first = jax.tree.map(lambda g: g[0], gradients)
        nan = jnp.full((), jnp.nan, loss.dtype)
        if fields == 1:
            return loss, first, nan, {}, strategy_state
        second = jax.tree.map(lambda g: g[1], gradients)
        combined = sign_agreement(second, first)
        update = jax.tree.map(lambda c, f: jnp.where(data.combine, c, f), combined, first)
        return loss, update, jnp.where(data.combine, cosine_similarity(second, first), nan), {}, strategy_state

    def epoch(state: TrainState, data: RunData, train_states: State, test_states: State,
              active: jax.Array):
        def update(current: TrainState, batch: State):
            key, step_key = jax.random.split(current.key)
            loss, raw, cosine, extras, strategy_state = direction(current.params, batch, step_key, data,
                                                                  current.strategy_state)
            if gradient_variance:
                extras = {**extras, "gradient_variance": per_episode_gradient_variance(problem, current.params, batch)}
            clipped = clip_update(raw, data.clip_mode, clip_threshold)
            updates, optimizer_state = optimizer.update(clipped, current.optimizer_state, current.params)
            params = optax.apply_updates(current.params, updates)
            return (TrainState(params, optimizer_state, key, strategy_state),
                    (loss, tree_squared_norm(raw), cosine, extras))

        new_state, metrics = scan_epoch(problem, update, state, train_states, test_states, batch_size)
        kept = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
        return kept, metrics

    return jax.jit(jax.vmap(epoch))


def group_key(config: TrainConfig, split_combined: bool = True) -> str:
    """Runs with equal keys train in one vmapped program (``combined`` apart if ``split_combined``)."""
    record = config.to_dict()
    shared = {name: record[name] for name in ("task", "env_params", "num_train", "num_test", "batch_size",
                                               "optimizer", "learning_rate", "clip_threshold")}
    for name in ("precision", "gradient_variance"):
        if name in record:
            shared[name] = record[name]
    if is_gated(config):
        shared["kind"] = "gated"
        if split_combined:
            shared["fields"] = 2 if config.strategy == "combined" else 1
    else:
        shared["kind"] = {"strategy": record["strategy"], "es_population": config.es_population,
                          "es_noise": config.es_noise}
        if config.strategy_options:
            shared["kind"]["options"] = config.strategy_options
    return json.dumps(shared, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Program:
    """What a group compiles to: the problem, the optimizer (without clipping unless ``custom_optimizer``),
    the strategy (None for a gated group), the epoch and evaluation programs and the metric columns."""

    problem: Problem
    optimizer: optax.GradientTransformation
    strategy: Strategy | None
    fields: int
    precision: str
    custom_optimizer: bool
    epoch: Callable
    evaluate: Callable
    columns: tuple[str, ...]
    executables: dict


_PROGRAMS: dict[tuple[str, int, int | None], Program] = {}


def precision_scope(precision: str):
    """The context in which a program of ``precision`` is built and run (float64 enables jax's x64)."""
    return jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()


def program_for(config: TrainConfig, fields: int, controller: Controller | None = None,
                optimizer: optax.GradientTransformation | None = None) -> Program:
    """The group program for runs like ``config`` (cached unless a custom controller, optimizer or
    Strategy object is given). ``optimizer`` (any optax transformation) replaces the named optimizer
    and the clipping."""
    shareable = controller is None and optimizer is None and isinstance(config.strategy, str)
    registered = registration(config.task)            # a registered task: its factory is part of the key
    cache_key = (group_key(config, split_combined=False), fields, id(registered.factory) if registered else None)
    if shareable and cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]
    problem = config.make_problem(controller)
    custom_optimizer = optimizer is not None
    optimizer = optimizer or OPTIMIZERS[config.optimizer](config.learning_rate)
    strategy = None if is_gated(config) else config.make_strategy()
    extra = () if strategy is None else tuple(n for n in strategy.metric_names if n not in rundir.METRIC_COLUMNS)
    extra += ("gradient_variance",) if config.gradient_variance else ()
    program = Program(problem, optimizer, strategy, fields, config.precision, custom_optimizer,
                      make_group_epoch(problem, optimizer, config.batch_size, config.clip_threshold,
                                       strategy, fields, config.gradient_variance),
                      jax.jit(jax.vmap(lambda params, states: rollout_loss(problem, params, states))),
                      rundir.METRIC_COLUMNS + extra, {})
    if shareable:
        if len(_PROGRAMS) >= 16:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[cache_key] = program
    return program


# ------------------------------------------------------------------------------------------- devices

def request_host_devices(count: int) -> None:
    """Ask for ``count`` CPU host devices (``--xla_force_host_platform_device_count``), so that a group's
    runs can be split over the cores of a machine without accelerators. Must run before jax's first
    computation; accelerators (GPUs, TPU cores) are found without it."""
    import os
    from jax._src import xla_bridge
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"devices must be an integer >= 1, got {count!r}")
    flag = "--xla_force_host_platform_device_count"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag in flags or count == 1:
        return
    if xla_bridge._backends:                  # too late: the CPU client exists with its devices
        return
    os.environ["XLA_FLAGS"] = f"{flags} {flag}={count}".strip()


def group_devices(devices: int | None) -> list:
    """The first ``devices`` local devices (None: all) over which a group's runs are split."""
    available = jax.local_devices()
    if devices is None:
        return available
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be an integer >= 1 or None, got {devices!r}")
    if devices > len(available):
        raise ValueError(f"devices: {devices} requested, but this process has {len(available)} "
                         f"({available[0].platform}); on CPU pass --devices before jax starts (the command-line "
                         f"flag does) or set XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
    cores = usable_cores()
    if available[0].platform == "cpu" and devices > cores:
        warnings.warn(f"devices: {devices} CPU host devices on {cores} cores train no faster than {cores} (host "
                      f"devices share the cores; each needs one of its own to help); pass --devices {cores} or "
                      f"fewer", DeviceCountWarning, stacklevel=2)
    return available[:devices]


class DeviceCountWarning(UserWarning):
    """More CPU host devices were asked for than the process has cores: correct, but not faster."""


def usable_cores() -> int:
    """The number of cores this process may run on (its CPU affinity where the OS reports it)."""
    import os
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _shard_runs(tree: Any, sharding: Any) -> Any:
    return tree if sharding is None else jax.device_put(tree, sharding)


# ------------------------------------------------------------------------------------------- running

@dataclasses.dataclass(frozen=True)
class Member:
    """One run of a group: its configuration, run directory (None: in memory only), a label for
    messages, and the record its ``config.json`` holds."""

    config: TrainConfig
    run_dir: Path | None
    label: str
    record: dict[str, Any] | None = None


class Outcome(NamedTuple):
    """How a run ended: status ("trained", "finished" when there was nothing to do, "failed" when it hit
    a non-finite value and ``on_failure`` kept it), its metrics rows and its final params."""

    status: str
    rows: list[dict[str, float]]
    params: Any


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _take(tree: Any, index: int) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], tree)


def as_precision(tree: Any, precision: str) -> Any:
    """``tree`` with its floating-point leaves in float64 when ``precision`` is "float64" (else unchanged)."""
    if precision != "float64":
        return tree
    return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def differing_keys(existing: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two ``config.json`` records."""
    return sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))


class _Prepared(NamedTuple):
    state: TrainState
    train_states: State
    test_states: State
    rows: list[dict[str, float]] | None
    start: int


def _prepare(member: Member, program: Program, overwrite: bool, where: str) -> _Prepared:
    """Config check, initial state and checkpoint of one run."""
    config, run_dir = member.config, member.run_dir
    try:
        existing = rundir.read_config(run_dir) if run_dir is not None else None
    except rundir.RunDirError:
        if not overwrite:
            raise
        existing = {}                             # damaged: overwrite deletes what the run had
    if existing is not None and overwrite:
        for name in (rundir.CHECKPOINT_FILE, rundir.METRICS_FILE, rundir.FAILED_FILE):
            (run_dir / name).unlink(missing_ok=True)
        existing = None
    if existing is not None:
        # a run resumes under a newer library version (the record then names the version that last trained it)
        changed = [key for key in differing_keys(existing, member.record) if key not in ("epochs", "diffenvs_version")]
        if changed:
            raise ValueError(f"{where}: {run_dir} holds a run with a different configuration (differs in "
                             f"{changed}); choose another directory, or overwrite it to start afresh")

    problem = program.problem
    train_key, test_key, init_key, strategy_key = jax.random.split(jax.random.PRNGKey(config.seed), 4)
    train_states = as_precision(initial_states(problem.env, train_key, config.num_train), program.precision)
    test_states = as_precision(initial_states(problem.env, test_key, config.num_test), program.precision)
    params = as_precision(problem.controller.init(init_key), program.precision)
    strategy_state = (program.strategy.initial_state(problem, params, jax.random.fold_in(init_key, 1))
                      if program.strategy is not None else ())
    state = TrainState(params, program.optimizer.init(params), strategy_key, strategy_state)
    # the group's optimizer state without the clipping, whose states have no leaves: the same leaves as
    # the chained (clip, optimizer) state of config.make_optimizer() that older checkpoints were read as
    chained = program.optimizer if program.custom_optimizer else config.make_optimizer()
    template = TrainState(params, chained.init(params), strategy_key, strategy_state)
    mine, theirs = jax.tree.leaves(state), jax.tree.leaves(template)
    if [(np.shape(a), np.asarray(a).dtype) for a in mine] != [(np.shape(b), np.asarray(b).dtype) for b in theirs]:
        raise ValueError(f"optimizer: the state of {config.optimizer!r} with clip {config.clip!r} does not "
                         f"match the checkpoint layout")
    loaded = rundir.load_checkpoint(run_dir, state) if run_dir is not None else None
    start, rows = 0, None
    if loaded is not None:
        start, state = loaded
        rows = [row for row in rundir.read_metrics(run_dir) if row["epoch"] <= start]
        if len(rows) != start + 1:
            raise ValueError(f"{where}: {run_dir}/metrics.csv has {len(rows)} complete rows up to the "
                             f"checkpoint at epoch {start}, expected {start + 1}")
    if run_dir is not None:
        record = member.record
        if existing is not None and start > record["epochs"]:     # asked for fewer epochs than it has
            record = {**record, "epochs": max(existing.get("epochs", start), start)}
        if existing != record:
            rundir.write_config(run_dir, record)
    return _Prepared(state, train_states, test_states, rows, start)


class _Progress:
    """One tqdm bar for a group (losses of a single run, the best test loss of several), or nothing."""

    def __init__(self, total: int, initial: int, quiet: bool, description: str, single: bool):
        self.bar, self.single = None, single
        if not quiet:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=description, unit="epoch", file=sys.stdout,
                            dynamic_ncols=True, mininterval=0.5)

    def update(self, rows: dict[int, dict[str, float]], failed: int) -> None:
        if self.bar is None:
            return
        if self.single and rows:
            row = next(iter(rows.values()))
            self.bar.set_postfix(batch=f"{row['batch_loss']:.3g}", train=f"{row['train_loss']:.3g}",
                                 test=f"{row['test_loss']:.3g}", refresh=False)
        else:
            best = min(row["test_loss"] for row in rows.values()) if rows else math.nan
            self.bar.set_postfix(best_test=f"{best:.3g}", failed=failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _complete(row: dict[str, float], columns: Sequence[str]) -> dict[str, float]:
    """``row`` with every column (NaN for one an older run did not record)."""
    return {**{name: math.nan for name in columns}, **row}


def train_members(program: Program, members: Sequence[Member], *, overwrite: bool = False, quiet: bool = True,
                  where: str = "out", description: str = "",
                  callback: Callable[[int, dict[str, float]], None] | None = None,
                  on_failure: Callable[[int, int, dict[str, float]], None] | None = None,
                  minutes: float | None = None, devices: int | None = 1) -> list[Outcome]:
    """Train ``members`` (runs of one group) together with ``program`` to their configured epochs.

    Each run resumes from its checkpoint and ends with exactly the parameters and metrics of an
    uninterrupted run of the same group. Writes ``config.json``, ``metrics.csv`` (one row per epoch,
    epoch 0 = before training) and ``checkpoint.npz`` of runs with a directory. ``callback(index,
    row)`` is called after run ``index``'s epoch is recorded (and checkpointed when due), with the
    row's metrics except ``cosine`` for strategies that do not compute it (NaN in ``metrics.csv``, which
    keeps its columns); raising from it stops training. A run that hits a non-finite loss or state keeps its last good checkpoint; then
    ``on_failure(index, epoch, row)`` is called and the others go on, or, without ``on_failure``,
    :class:`NonFiniteError` is raised. ``minutes``: a wall-time budget per run (summed ``epoch_seconds``
    across resumes, compilation excluded) after which it stops with a checkpoint.
    ``where`` names the argument that chose the directories, in error messages. ``devices``: split the
    runs over this many local devices (None: all; see :func:`group_devices`), padding the group with
    inactive copies to a multiple of it. The runs are the same computations whatever the split, so the
    metrics agree to float rounding across device counts.
    """
    with precision_scope(program.precision):
        return _train_members(program, members, overwrite, quiet, where, description, callback, on_failure,
                              minutes, devices)


def _train_members(program, members, overwrite, quiet, where, description, callback, on_failure, minutes,
                   devices):
    columns = program.columns
    prepared = [_prepare(member, program, overwrite, where) for member in members]
    outcomes: dict[int, Outcome] = {}
    pending = []
    budget = math.inf if minutes is None else 60.0 * minutes
    spent = []
    for index, (member, ready) in enumerate(zip(members, prepared)):
        if ready.rows is not None:
            seconds = sum(row.get("epoch_seconds", 0.0) for row in ready.rows)
            if ready.start >= member.config.epochs or seconds >= budget:
                outcomes[index] = Outcome("finished", [_complete(r, columns) for r in ready.rows],
                                          ready.state.params)
                continue
        pending.append(index)
    if not pending:
        return [outcomes[index] for index in range(len(members))]

    runs = [members[index] for index in pending]
    ready = [prepared[index] for index in pending]
    state = _stack([item.state for item in ready])
    train_states = _stack([item.train_states for item in ready])
    test_states = _stack([item.test_states for item in ready])
    data = _stack([run_data(run.config, program.fields, clip=not program.custom_optimizer) for run in runs])
    starts = [item.start for item in ready]
    all_rows: list[list[dict[str, float]]] = []
    if any(item.rows is None for item in ready):
        train_losses = np.asarray(program.evaluate(state.params, train_states))
        test_losses = np.asarray(program.evaluate(state.params, test_states))
    for position, (run, item) in enumerate(zip(runs, ready)):
        rows = item.rows
        if rows is None:
            rows = [{"epoch": 0, "batch_loss": math.nan, "train_loss": float(train_losses[position]),
                     "test_loss": float(test_losses[position]), "update_norm_squared": math.nan,
                     "cosine": math.nan, "epoch_seconds": 0.0}]
        rows = [_complete(row, columns) for row in rows]
        if run.run_dir is not None:
            rundir.write_metrics(run.run_dir, rows, columns)
        all_rows.append(rows)
        spent.append(sum(row["epoch_seconds"] for row in rows))

    epochs = [run.config.epochs for run in runs]
    used = group_devices(devices)[:len(runs)]
    sharding = None
    padding = 0
    if len(used) > 1:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        padding = -len(runs) % len(used)              # inactive copies of the first run
        if padding:
            state, data, train_states, test_states = jax.tree.map(
                lambda x: jnp.concatenate([x, jnp.repeat(x[:1], padding, axis=0)]),
                (state, data, train_states, test_states))
            last = max(epochs)                        # never active: start = last epoch = max
            starts, epochs = starts + [last] * padding, epochs + [last] * padding
        sharding = NamedSharding(Mesh(np.array(used), ("runs",)), PartitionSpec("runs"))
        state, data, train_states, test_states = _shard_runs((state, data, train_states, test_states), sharding)
    count = len(runs) + padding
    failed = [False] * count
    stopped = [False] * count
    warned = [False] * len(runs)
    strategies = [run.config.make_strategy() for run in runs]
    strategy_names = [strategy.name for strategy in strategies]
    unreported = [set() if "cosine" in strategy.metric_names else {"cosine"} for strategy in strategies]
    active = np.zeros(count, bool)
    signature = str(jax.tree.map(lambda x: (x.shape, x.dtype), (state, data, train_states, test_states)))
    signature += f" on {len(used)} devices"
    if signature not in program.executables:
        program.executables[signature] = program.epoch.lower(
            state, data, train_states, test_states, _shard_runs(jnp.asarray(active), sharding)).compile()
    compiled = program.executables[signature]
    progress = _Progress(max(epochs), min(starts), quiet, description, single=len(runs) == 1)
    try:
        for epoch in range(min(starts) + 1, max(epochs) + 1):
            active = np.array([start < epoch <= last and not bad and not done
                               for start, last, bad, done in zip(starts, epochs, failed, stopped)])
            if not active.any():
                break
            started = time.perf_counter()
            new_state, metrics = compiled(state, data, train_states, test_states,
                                          _shard_runs(jnp.asarray(active), sharding))
            metrics = {name: np.asarray(value) for name, value in metrics.items()}
            seconds = time.perf_counter() - started
            rows_now, failures = {}, {}
            state_finite = finite_leaves(new_state, per_run=True)
            for index in np.flatnonzero(active):
                row = {"epoch": epoch, **{name: float(value[index]) for name, value in metrics.items()},
                       "epoch_seconds": seconds}
                if rundir.all_finite(row, LOSS_COLUMNS) and state_finite[index]:
                    rows_now[index] = row
                else:
                    failures[index] = row
            if failures and on_failure is None:
                index, row = next(iter(failures.items()))
                run = runs[index]
                kept = f"; the last good checkpoint in {run.run_dir} is kept" if run.run_dir is not None else ""
                where = locate_nonfinite(program.problem, _take(state, index).params, _take(train_states, index),
                                         run.config.batch_size)
                raise NonFiniteError(f"{program.problem.env.name}: epoch {epoch}: non-finite loss, parameters or "
                                     f"optimizer state (batch loss {row['batch_loss']}, update norm² "
                                     f"{row['update_norm_squared']}, test loss {row['test_loss']}); {where}; "
                                     f"training stopped{kept}. Try clip='norm' or a smaller learning_rate.")
            for index, row in failures.items():
                failed[index] = True
                on_failure(pending[index], epoch, row)
            if failures:                                 # failed runs keep their last good state
                keep = jnp.asarray([index in rows_now or not active[index] for index in range(count)])
                new_state = _shard_runs(jax.tree.map(
                    lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                    new_state, state), sharding)
            state = new_state
            for index, row in rows_now.items():
                spent[index] += seconds
                if spent[index] >= budget:
                    stopped[index] = True
            due = [index for index in rows_now if epoch % runs[index].config.checkpoint_every == 0
                   or epoch == epochs[index] or stopped[index]]
            host_state = jax.tree.map(np.asarray, state) if due else None
            for index, row in rows_now.items():
                run = runs[index]
                all_rows[index].append(row)
                if not warned[index]:
                    warned[index] = warn_if_zero_update(row, run.label, strategy_names[index])
                if run.run_dir is not None:
                    rundir.append_metrics(run.run_dir, row, columns)
                    if index in due:
                        rundir.save_checkpoint(run.run_dir, epoch, _take(host_state, index))
            for index, row in rows_now.items():
                if callback is not None:                 # without the NaN of metrics the strategy does not compute
                    callback(pending[index], {key: value for key, value in row.items() if key not in unreported[index]})
            progress.update(rows_now, sum(failed))
    finally:
        progress.close()
    for position, index in enumerate(pending):
        outcomes[index] = Outcome("failed" if failed[position] else "trained", all_rows[position],
                                  _take(state, position).params)
    return [outcomes[index] for index in range(len(members))]
