"""Sweeps: a grid of training runs (task x level x strategy x clipping x seed), trained in vmapped groups.

Every run of a sweep is an ordinary run directory of :func:`trainers.training.train` (the same
``config.json``, ``metrics.csv`` and ``checkpoint.npz``) named deterministically under the output
root, so ``train`` or ``diffenvs-train`` recognises and resumes it, and a sweep skips finished runs and
resumes interrupted ones from their checkpoints.

Runs that share shapes (same task, environment parameters, data sizes, optimizer and learning rate)
train together as ONE jitted, vmapped epoch program. The strategies differ only in data:

* ``bptt``, ``modified``, ``network_only``, ``one_step`` and ``truncated(k)`` are one backward sweep
  over the forward rollout whose two state paths are scaled by per-run *gates*
  (:func:`trainers.strategies.gated_fields`): a gated value ``sg(x) + g·(x - sg(x))`` has the forward
  value x and scales the gradient by g, so g can be a vmapped array where ``stop_gradient`` cannot;
* ``combined`` is two such sweeps, gates (1, 1) and (0, 1), combined by the sign rule; when a group
  holds a ``combined`` run every run of it carries two fields (the second unused by the others);
* the clipping mode is an index selecting among the unclipped, value-clipped and norm-clipped update
  (all three are computed; they are cheap next to the rollout);
* seeds are vmapped parameters, optimizer states, PRNG keys and initial states.

Other strategies (``es``, custom :class:`~trainers.strategies.Strategy` objects) form their own groups,
vmapped over clipping modes and seeds.

>>> spec = SweepSpec(tasks=("cartpole",), levels=(1, 2), strategies=("bptt", "combined"), seeds=(0, 1))
>>> result = run_sweep(spec, "runs/sweep", part=(1, 2))      # the first half of the grid
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffenvs
from diffenvs.core import EnvState
from diffenvs.registry import canonical_name
from trainers import rundir
from trainers.presets import COMPLEXITY_LEVELS, study_preset
from trainers.rollout import Problem, rollout_loss
from trainers.strategies import (
    STUDY_GATES, Strategy, cosine_similarity, gated_fields, sign_agreement,
)
from trainers.training import (
    CLIP_MODES, LOSS_COLUMNS, OPTIMIZERS, TrainConfig, TrainState, finite_leaves, initial_states, scan_epoch,
    tree_squared_norm, warn_if_zero_update,
)

STUDY_STRATEGIES = ("bptt", "modified", "combined", "one_step")
"""The strategies the study compares (the default of a sweep)."""
GATED_STRATEGIES = ("bptt", "modified", "network_only", "one_step", "combined", "truncated")
"""Strategies expressed by gates as data: any mix of them trains in one vmapped program."""
FAILED_FILE = "failed.json"
"""Written into a run directory whose training hit a non-finite loss or state; the sweep then skips it."""


# ----------------------------------------------------------------------------------------------- grid

def _parse_strategy(entry: str | Strategy) -> dict[str, Any]:
    """TrainConfig fields of a grid strategy entry: a name, "truncated:K", "es" or a Strategy."""
    if isinstance(entry, Strategy):
        return {"strategy": entry}
    if not isinstance(entry, str):
        raise ValueError(f"strategies: entries must be names or Strategy objects, got {entry!r}")
    name, _, argument = entry.partition(":")
    if name == "truncated":
        if not argument:
            return {"strategy": "truncated"}        # truncate_every from the options
        try:
            return {"strategy": "truncated", "truncate_every": int(argument)}
        except ValueError:
            raise ValueError(f"strategies: 'truncated:K' needs an integer K >= 1, got {entry!r}") from None
    if name == "es" and argument:
        try:
            return {"strategy": "es", "es_population": int(argument)}
        except ValueError:
            raise ValueError(f"strategies: 'es:P' needs an even integer P >= 2, got {entry!r}") from None
    allowed = list(GATED_STRATEGIES) + ["truncated:K", "es", "es:P"]
    if argument or name not in set(GATED_STRATEGIES) | {"es"}:
        raise ValueError(f"strategies: each must be one of {allowed} (or a Strategy object), got {entry!r}")
    return {"strategy": name}


def _non_empty(name: str, values: Any) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence, got {values!r}")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values!r}")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A grid of runs: tasks x levels x strategies x clipping modes x seeds x ``vary`` combinations.

    tasks: task names ("cartpole", "guidance", "quantum" or canonical names).
    levels: complexity levels (see :data:`~trainers.presets.COMPLEXITY_LEVELS`): a sequence for a single
    task, a mapping task -> sequence, or None for all of the study's levels.
    strategies: names of :data:`GATED_STRATEGIES`, "truncated:K", "es", "es:P", or Strategy objects.
    clips: clipping modes ("none", "value", "norm"). seeds: integer seeds.
    options: fixed :class:`~trainers.training.TrainConfig` fields over the study protocol of
    :func:`~trainers.presets.study_preset` (e.g. ``{"epochs": 200, "env_params": {"num_steps": 50}}``).
    vary: further TrainConfig fields to vary, field -> sequence of values (the cartesian product).
    """

    tasks: Sequence[str] = ("cartpole",)
    levels: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None
    strategies: Sequence[str | Strategy] = STUDY_STRATEGIES
    clips: Sequence[str] = CLIP_MODES
    seeds: Sequence[int] = (0,)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    vary: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        tasks = tuple(canonical_name(task) for task in _non_empty("tasks", self.tasks))
        for strategy in _non_empty("strategies", self.strategies):
            _parse_strategy(strategy)
        for clip in _non_empty("clips", self.clips):
            if clip not in CLIP_MODES:
                raise ValueError(f"clips: each must be one of {CLIP_MODES}, got {clip!r}")
        for seed in _non_empty("seeds", self.seeds):
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seeds: each must be an integer, got {seed!r}")
        fields = {field.name for field in dataclasses.fields(TrainConfig)}
        gridded = {"task", "strategy", "clip", "seed"}
        for name in list(self.options) + list(self.vary):
            if name not in fields:
                raise ValueError(f"options/vary: {name!r} is not a TrainConfig field; allowed: {sorted(fields)}")
            if name in gridded:
                raise ValueError(f"options/vary: {name!r} is a grid axis (tasks, strategies, clips, seeds)")
        for name, values in self.vary.items():
            _non_empty(f"vary[{name!r}]", values)
        if self.levels is not None and not isinstance(self.levels, Mapping):
            if len(tasks) != 1:
                raise ValueError(f"levels: with several tasks {tasks} give a mapping task -> levels, "
                                 f"got {self.levels!r}")
            _non_empty("levels", self.levels)
        elif isinstance(self.levels, Mapping):
            for task, values in self.levels.items():
                if canonical_name(task) not in tasks:
                    raise ValueError(f"levels: task {task!r} is not in tasks {tasks}")
                _non_empty(f"levels[{task!r}]", values)

    def task_levels(self, task: str) -> tuple[Any, ...]:
        """The levels of ``task`` in this grid."""
        name = canonical_name(task)
        if self.levels is None:
            return COMPLEXITY_LEVELS[name][1]
        if isinstance(self.levels, Mapping):
            for key, values in self.levels.items():
                if canonical_name(key) == name:
                    return tuple(values)
            return COMPLEXITY_LEVELS[name][1]
        return tuple(self.levels)

    def configs(self) -> list[TrainConfig]:
        """Every run's configuration, in grid order. Raises ValueError on an invalid combination."""
        configs = []
        varied = [[(name, value) for value in values] for name, values in self.vary.items()]
        for task in dict.fromkeys(canonical_name(t) for t in self.tasks):
            study_levels = COMPLEXITY_LEVELS[task][1]
            for level in self.task_levels(task):
                level = next((study for study in study_levels if study == level), level)   # 1 -> 1.0 for rc
                for strategy, clip, seed, combination in itertools.product(
                        self.strategies, self.clips, self.seeds, itertools.product(*varied)):
                    overrides = {**self.options, **dict(combination)}
                    overrides.update(_parse_strategy(strategy))
                    config = study_preset(task, level, clip=clip, seed=int(seed), **overrides)
                    config.make_env()                   # unknown environment parameters fail here
                    configs.append(config)
        return configs


# ----------------------------------------------------------------------------------------- planning

def config_record(config: TrainConfig) -> dict[str, Any]:
    """What :func:`~trainers.training.train` writes to ``config.json`` for ``config`` (study controller)."""
    return {**config.to_dict(), "controller": "study", "diffenvs_version": diffenvs.__version__}


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(config: TrainConfig) -> str:
    """Deterministic directory name: task, level, strategy, clip, seed and a hash of the whole config."""
    record = config.to_dict()
    parameter = COMPLEXITY_LEVELS.get(config.task, (None,))[0]
    level = record["env_params"].get(parameter)
    strategy = record["strategy"].replace("custom:", "custom-")
    if strategy == "truncated":
        strategy = f"truncated{config.truncate_every}"
    elif strategy == "es":
        strategy = f"es{config.es_population}"
    digest = hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]
    level_part = f"-{parameter}{_format_value(level)}" if level is not None else ""
    return f"{config.task}{level_part}-{strategy}-{config.clip}-seed{config.seed}-{digest}"


def _group_key(config: TrainConfig, split_combined: bool = True) -> str:
    """Runs with equal keys train in one vmapped program (``combined`` apart if ``split_combined``)."""
    record = config.to_dict()
    shared = {name: record[name] for name in ("task", "env_params", "num_train", "num_test", "batch_size",
                                               "optimizer", "learning_rate", "clip_threshold")}
    if isinstance(config.strategy, str) and config.strategy in GATED_STRATEGIES:
        shared["kind"] = "gated"
        if split_combined:
            shared["fields"] = 2 if config.strategy == "combined" else 1
    else:
        shared["kind"] = {"strategy": record["strategy"], "es_population": config.es_population,
                          "es_noise": config.es_noise}
    return json.dumps(shared, sort_keys=True)


class Run(NamedTuple):
    """One run of a sweep: its configuration, directory name and directory."""

    config: TrainConfig
    name: str
    run_dir: Path


class Group(NamedTuple):
    """Runs that train together in one vmapped program (``key`` describes what they share)."""

    key: str
    runs: tuple[Run, ...]

    def cost(self) -> float:
        """Relative cost for balancing parts: epochs x rollout steps x states, summed over runs."""
        return float(sum(run.config.epochs * run.config.make_env().num_steps()
                         * (run.config.num_train + run.config.num_test) for run in self.runs))


def _parse_part(part: tuple[int, int] | str) -> tuple[int, int]:
    if isinstance(part, str):
        index, _, count = part.partition("/")
        try:
            part = (int(index), int(count))
        except ValueError:
            raise ValueError(f"part must be 'I/N' with integers 1 <= I <= N, got {part!r}") from None
    index, count = part
    if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
        raise ValueError(f"part must be (I, N) with integers 1 <= I <= N, got {part!r}")
    return index, count


def plan(spec: SweepSpec, out_root: str | Path, *, part: tuple[int, int] | str = (1, 1),
         max_group: int | None = None, split_combined: bool = True) -> list[Group]:
    """The groups of ``spec`` that part ``I/N`` trains (default: all), from the grid alone.

    Groups hold the runs sharing a program, split into chunks of at most ``max_group`` runs; the
    chunks are dealt to the N parts by a greedy balance of :meth:`Group.cost` (largest first), so the
    N parts cover the grid exactly once whatever has already run. With ``split_combined`` (default)
    ``combined`` runs, which need two backward sweeps, form their own groups; otherwise they share one
    program with the single-sweep strategies, which then carry an unused second sweep.
    """
    index, count = _parse_part(part)
    if max_group is not None and (isinstance(max_group, bool) or not isinstance(max_group, int) or max_group < 1):
        raise ValueError(f"max_group must be an integer >= 1 or None, got {max_group!r}")
    out_root = Path(out_root)
    by_key: dict[str, list[Run]] = {}
    names: dict[str, TrainConfig] = {}
    for config in spec.configs():
        name = run_name(config)
        if name in names:
            if names[name] == config:
                continue
            raise ValueError(f"spec: two different runs share the directory name {name!r}")
        names[name] = config
        by_key.setdefault(_group_key(config, split_combined), []).append(Run(config, name, out_root / name))
    chunks = []
    for key, runs in by_key.items():
        runs = sorted(runs, key=lambda run: run.name)
        size = max_group or len(runs)
        chunks += [Group(key, tuple(runs[i:i + size])) for i in range(0, len(runs), size)]
    load = [0.0] * count
    assigned: list[list[Group]] = [[] for _ in range(count)]
    for group in sorted(chunks, key=lambda g: (-g.cost(), g.runs[0].name)):
        target = min(range(count), key=lambda i: (load[i], i))
        load[target] += group.cost()
        assigned[target].append(group)
    return sorted(assigned[index - 1], key=lambda g: g.runs[0].name)


# ------------------------------------------------------------------------------- the vmapped program

class RunData(NamedTuple):
    """Per-run data of a gated group: gates (fields, 2), combine flag, truncation, clipping mode."""

    gates: jax.Array
    combine: jax.Array
    truncate_every: jax.Array
    clip_mode: jax.Array


def _run_data(config: TrainConfig, fields: int) -> RunData:
    strategy = config.strategy if isinstance(config.strategy, str) else ""
    if strategy == "combined":
        gates = [STUDY_GATES["bptt"], STUDY_GATES["modified"]]
    elif strategy == "truncated":
        gates = [STUDY_GATES["bptt"]] * fields
    else:
        gates = [STUDY_GATES.get(strategy, (1.0, 1.0))] * fields
    return RunData(np.asarray(gates[:fields], np.float32), np.asarray(strategy == "combined"),
                   np.asarray(config.truncate_every if strategy == "truncated" else 0, np.int32),
                   np.asarray(CLIP_MODES.index(config.clip), np.int32))


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
                     clip_threshold: float, strategy: Strategy | None, fields: int) -> Callable:
    """The jitted group epoch ``(states, data, train_states, test_states, active) -> (states, metrics)``.

    Every argument has a leading run axis. ``strategy`` None means a gated group with ``fields`` (1 or 2)
    backward sweeps per run; otherwise every run uses ``strategy``. ``optimizer`` is the optimizer
    without clipping (clipping is per-run data). Inactive runs keep their state.
    """
    def direction(params: Any, batch: EnvState, key: jax.Array, data: RunData):
        if strategy is not None:
            result = strategy(problem, params, batch, key)
            nan = jnp.full((), jnp.nan, result.loss.dtype)
            return result.loss, result.update, result.metrics.get("cosine", nan)
        loss, gradients = gated_fields(problem, params, batch, data.gates, data.truncate_every)
        first = jax.tree.map(lambda g: g[0], gradients)
        nan = jnp.full((), jnp.nan, loss.dtype)
        if fields == 1:
            return loss, first, nan
        second = jax.tree.map(lambda g: g[1], gradients)
        combined = sign_agreement(second, first)
        update = jax.tree.map(lambda c, f: jnp.where(data.combine, c, f), combined, first)
        return loss, update, jnp.where(data.combine, cosine_similarity(second, first), nan)

    def epoch(state: TrainState, data: RunData, train_states: EnvState, test_states: EnvState,
              active: jax.Array):
        def update(current: TrainState, batch: EnvState):
            key, step_key = jax.random.split(current.key)
            loss, raw, cosine = direction(current.params, batch, step_key, data)
            clipped = clip_update(raw, data.clip_mode, clip_threshold)
            updates, optimizer_state = optimizer.update(clipped, current.optimizer_state, current.params)
            params = optax.apply_updates(current.params, updates)
            return TrainState(params, optimizer_state, key), (loss, tree_squared_norm(raw), cosine)

        new_state, metrics = scan_epoch(problem, update, state, train_states, test_states, batch_size)
        kept = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, state)
        return kept, metrics

    return jax.jit(jax.vmap(epoch))


class _Program(NamedTuple):
    problem: Problem
    optimizer: optax.GradientTransformation
    epoch: Callable
    evaluate: Callable
    executables: dict


_PROGRAMS: dict[tuple[str, int], _Program] = {}


def _program(config: TrainConfig, fields: int) -> _Program:
    """The group program for runs like ``config`` (cached by group key and number of fields)."""
    cache_key = (_group_key(config, split_combined=False), fields)
    if cache_key in _PROGRAMS:
        return _PROGRAMS[cache_key]
    problem = config.make_problem()
    optimizer = OPTIMIZERS[config.optimizer](config.learning_rate)
    gated = isinstance(config.strategy, str) and config.strategy in GATED_STRATEGIES
    strategy = None if gated else config.make_strategy()
    program = _Program(problem, optimizer,
                       make_group_epoch(problem, optimizer, config.batch_size, config.clip_threshold,
                                        strategy, fields),
                       jax.jit(jax.vmap(lambda params, states: rollout_loss(problem, params, states))), {})
    if len(_PROGRAMS) >= 16:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[cache_key] = program
    return program


# ------------------------------------------------------------------------------------------ running

class RunStatus(NamedTuple):
    """How a run of a sweep ended: "trained", "finished" (skipped, already done) or "failed"."""

    run: Run
    status: str
    epoch: int
    test_loss: float


class SweepResult(NamedTuple):
    """The runs of the part that ran, with their status, and the wall time of the sweep."""

    runs: list[RunStatus]
    seconds: float


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def _take(tree: Any, index: int) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _prepare(run: Run, program: _Program, overwrite: bool):
    """Config check, initial state and checkpoint of one run: (state, rows or None, start epoch)."""
    config, run_dir = run.config, run.run_dir
    record = config_record(config)
    existing = rundir.read_config(run_dir)
    if existing is not None and existing != record and not overwrite:
        changed = sorted(k for k in set(existing) | set(record) if existing.get(k) != record.get(k))
        raise ValueError(f"out_root: {run_dir} holds a run with a different configuration (differs in "
                         f"{changed}); remove it or pass overwrite=True")
    if existing is not None and overwrite:
        for name in (rundir.CHECKPOINT_FILE, rundir.METRICS_FILE, FAILED_FILE):
            (run_dir / name).unlink(missing_ok=True)
    if existing != record:
        rundir.write_config(run_dir, record)

    env, controller = program.problem.env, program.problem.controller
    train_key, test_key, init_key, strategy_key = jax.random.split(jax.random.PRNGKey(config.seed), 4)
    train_states = initial_states(env, train_key, config.num_train)
    test_states = initial_states(env, test_key, config.num_test)
    params = controller.init(init_key)
    state = TrainState(params, program.optimizer.init(params), strategy_key)
    # train()'s checkpoint holds the chained (clip, optimizer) state; the clipping states have no leaves
    template = TrainState(params, config.make_optimizer().init(params), strategy_key)
    mine, theirs = jax.tree.leaves(state), jax.tree.leaves(template)
    if [(np.shape(a), np.asarray(a).dtype) for a in mine] != [(np.shape(b), np.asarray(b).dtype) for b in theirs]:
        raise ValueError(f"optimizer: the state of {config.optimizer!r} with clip {config.clip!r} does not "
                         f"match train()'s checkpoint layout")
    loaded = rundir.load_checkpoint(run_dir, template)
    if loaded is None:
        return state, train_states, test_states, None, 0
    start, loaded_state = loaded
    state = jax.tree.unflatten(jax.tree.structure(state), jax.tree.leaves(loaded_state))
    rows = [row for row in rundir.read_metrics(run_dir) if row["epoch"] <= start]
    if len(rows) != start + 1:
        raise ValueError(f"out_root: {run_dir}/metrics.csv has {len(rows)} complete rows up to the "
                         f"checkpoint at epoch {start}, expected {start + 1}")
    return state, train_states, test_states, rows, start


def train_group(group: Group, *, overwrite: bool = False, quiet: bool = True,
                callback: Callable[[Run, dict[str, float]], None] | None = None) -> list[RunStatus]:
    """Train the unfinished runs of a group together (resuming from checkpoints); returns each run's
    status. This is the unit of work that executors distribute."""
    statuses: dict[str, RunStatus] = {}
    fields = 2 if any(run.config.strategy == "combined" for run in group.runs) else 1
    program = _program(group.runs[0].config, fields)
    pending = []
    for run in group.runs:
        if (run.run_dir / FAILED_FILE).exists() and not overwrite:
            rows = rundir.read_metrics(run.run_dir)
            statuses[run.name] = RunStatus(run, "failed", rows[-1]["epoch"] if rows else 0,
                                           rows[-1]["test_loss"] if rows else math.nan)
            continue
        prepared = _prepare(run, program, overwrite)
        start, rows = prepared[4], prepared[3]
        if start >= run.config.epochs:                # finished: nothing is rewritten
            statuses[run.name] = RunStatus(run, "finished", start, rows[-1]["test_loss"])
            continue
        pending.append((run, prepared))
    if not pending:
        return [statuses[run.name] for run in group.runs]

    runs = [run for run, _ in pending]
    state = _stack([prepared[0] for _, prepared in pending])
    train_states = _stack([prepared[1] for _, prepared in pending])
    test_states = _stack([prepared[2] for _, prepared in pending])
    data = _stack([_run_data(run.config, fields) for run in runs])
    starts = [prepared[4] for _, prepared in pending]
    all_rows: list[list[dict[str, float]]] = []
    if any(prepared[3] is None for _, prepared in pending):
        train_losses = np.asarray(program.evaluate(state.params, train_states))
        test_losses = np.asarray(program.evaluate(state.params, test_states))
    for index, (run, prepared) in enumerate(pending):
        rows = prepared[3]
        if rows is None:
            rows = [{"epoch": 0, "batch_loss": math.nan, "train_loss": float(train_losses[index]),
                     "test_loss": float(test_losses[index]), "update_norm_squared": math.nan,
                     "cosine": math.nan, "epoch_seconds": 0.0}]
        rundir.write_metrics(run.run_dir, rows)
        all_rows.append(rows)

    epochs = [run.config.epochs for run in runs]
    failed = [False] * len(runs)
    warned = [False] * len(runs)
    strategy_names = [run.config.make_strategy().name for run in runs]
    active = np.zeros(len(runs), bool)
    signature = str(jax.tree.map(lambda x: (x.shape, x.dtype), (state, data, train_states, test_states)))
    if signature not in program.executables:
        program.executables[signature] = program.epoch.lower(
            state, data, train_states, test_states, jnp.asarray(active)).compile()
    compiled = program.executables[signature]
    progress = None
    if not quiet:
        from tqdm.auto import tqdm
        config = runs[0].config
        progress = tqdm(total=max(epochs), initial=min(starts), unit="epoch", file=sys.stdout, dynamic_ncols=True,
                        mininterval=0.5, desc=f"{config.task} {config.env_params}: {len(runs)} runs")
    try:
        for epoch in range(min(starts) + 1, max(epochs) + 1):
            active = np.array([start < epoch <= last and not bad
                               for start, last, bad in zip(starts, epochs, failed)])
            if not active.any():
                break
            started = time.perf_counter()
            new_state, metrics = compiled(state, data, train_states, test_states, jnp.asarray(active))
            metrics = {name: np.asarray(value) for name, value in metrics.items()}
            seconds = time.perf_counter() - started
            rows_now = {}
            state_finite = finite_leaves(new_state, per_run=True)
            for index in np.flatnonzero(active):
                row = {"epoch": epoch, **{name: float(value[index]) for name, value in metrics.items()},
                       "epoch_seconds": seconds}
                if rundir.all_finite(row, LOSS_COLUMNS) and state_finite[index]:
                    rows_now[index] = row
                else:
                    failed[index] = True
                    rundir._write_atomically(runs[index].run_dir / FAILED_FILE, (json.dumps(
                        {"epoch": epoch, "row": {k: repr(v) for k, v in row.items()},
                         "message": "non-finite loss, parameters or optimizer state; the last good checkpoint is kept"},
                        indent=2) + "\n").encode())
            if len(rows_now) < int(active.sum()):       # failed runs keep their last good state
                keep = jnp.asarray([index in rows_now or not active[index] for index in range(len(runs))])
                new_state = jax.tree.map(
                    lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                    new_state, state)
            state = new_state
            due = [index for index in rows_now
                   if epoch % runs[index].config.checkpoint_every == 0 or epoch == epochs[index]]
            host_state = jax.tree.map(np.asarray, state) if due else None
            for index, row in rows_now.items():
                run = runs[index]
                all_rows[index].append(row)
                rundir.append_metrics(run.run_dir, row)
                if not warned[index]:
                    warned[index] = warn_if_zero_update(row, run.name, strategy_names[index])
                if index in due:
                    rundir.save_checkpoint(run.run_dir, epoch, _take(host_state, index))
            for index, row in rows_now.items():
                if callback is not None:
                    callback(runs[index], row)
            if progress is not None:
                best = min(row["test_loss"] for row in rows_now.values()) if rows_now else math.nan
                progress.set_postfix(best_test=f"{best:.3g}", failed=sum(failed), refresh=False)
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()
    for index, run in enumerate(runs):
        last = all_rows[index][-1]
        statuses[run.name] = RunStatus(run, "failed" if failed[index] else "trained", last["epoch"],
                                       last["test_loss"])
    return [statuses[run.name] for run in group.runs]


def run_sweep(spec: SweepSpec, out_root: str | Path, *, part: tuple[int, int] | str = (1, 1),
              max_group: int | None = None, split_combined: bool = True, overwrite: bool = False, quiet: bool = False,
              callback: Callable[[Run, dict[str, float]], None] | None = None, executor: str = "local",
              address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0) -> SweepResult:
    """Train part ``I/N`` of the grid ``spec`` into run directories under ``out_root``.

    Finished runs are skipped, interrupted runs resume from their checkpoints, runs that hit a
    non-finite value are marked with ``failed.json`` and skipped afterwards (``overwrite=True`` starts
    every run of the part afresh). ``callback(run, row)`` is called after each run's epoch is recorded
    (and checkpointed when due); raising from it stops the sweep. ``max_group`` bounds the runs per
    vmapped program (memory); ``split_combined`` see :func:`plan`.

    ``executor`` "local" trains the groups one after the other in this process; "ray" runs each group
    as one Ray task (:func:`trainers.ray_executor.run_sweep_on_ray`: ``address`` of a running cluster or
    None for a local one, ``cpus_per_task`` and ``gpus_per_task`` reserved per task; no ``callback``).
    """
    if executor == "ray":
        if callback is not None:
            raise ValueError("callback: not supported by executor 'ray' (the runs train in other processes)")
        from trainers.ray_executor import run_sweep_on_ray
        return run_sweep_on_ray(spec, out_root, address=address, cpus_per_task=cpus_per_task,
                                gpus_per_task=gpus_per_task, part=part, max_group=max_group,
                                split_combined=split_combined, overwrite=overwrite, quiet=quiet)
    if executor != "local":
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if address is not None or cpus_per_task != 1 or gpus_per_task != 0:
        raise ValueError(f"address, cpus_per_task and gpus_per_task apply to executor 'ray', got address="
                         f"{address!r}, cpus_per_task={cpus_per_task!r}, gpus_per_task={gpus_per_task!r}")
    started = time.perf_counter()
    groups = plan(spec, out_root, part=part, max_group=max_group, split_combined=split_combined)
    statuses: list[RunStatus] = []
    for group in groups:
        statuses += train_group(group, overwrite=overwrite, quiet=quiet, callback=callback)
    return SweepResult(statuses, time.perf_counter() - started)


# -------------------------------------------------------------------------------------- command line

def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_assignment(text: str, flag: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise ValueError(f"{flag} expects NAME=VALUE, got {text!r}")
    return name.replace("-", "_"), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffenvs-sweep",
        description="Train a grid of runs (task x level x strategy x clipping x seed) with the study protocol, "
                    "in vmapped groups, into run directories under OUT. Finished runs are skipped and "
                    "interrupted ones resumed; --part I/N trains the I-th of N disjoint parts of the grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", type=Path, help="output root (one run directory per run)")
    parser.add_argument("--tasks", nargs="+", default=["cartpole"], help="cartpole, guidance, quantum")
    parser.add_argument("--levels", nargs="+", default=None,
                        help="complexity levels (poles, rc, target); for several tasks TASK=L1,L2,...; "
                             "default: the study's levels")
    parser.add_argument("--strategies", nargs="+", default=list(STUDY_STRATEGIES),
                        help=f"among {list(GATED_STRATEGIES)}, truncated:K, es, es:P")
    parser.add_argument("--clips", nargs="+", default=list(CLIP_MODES), help="clipping modes")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the study's 1000)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="epochs between checkpoints (10)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="fix a TrainConfig field (JSON value), e.g. num_train=64 or "
                             "env_params='{\"num_steps\": 50}'")
    parser.add_argument("--vary", action="append", default=[], metavar="NAME=V1,V2",
                        help="vary a TrainConfig field over comma-separated JSON values, e.g. learning_rate=1e-3,1e-4")
    parser.add_argument("--part", default="1/1", help="train part I of N (disjoint parts covering the grid)")
    parser.add_argument("--max-group", type=int, default=None, help="at most this many runs per vmapped program")
    parser.add_argument("--no-split-combined", action="store_true",
                        help="train combined runs in the same program as the other gated strategies "
                             "(by default they form their own groups, which is faster)")
    parser.add_argument("--overwrite", action="store_true", help="restart the runs of this part from scratch")
    parser.add_argument("--dry-run", action="store_true", help="list the groups and runs of the part and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: the groups one after the other in this process; ray: each group as one "
                             "Ray task (pip install 'diffenvs[ray]'; see docs/cluster.md)")
    parser.add_argument("--address", default=None, metavar="HOST:PORT",
                        help="--executor ray: the head of a running Ray cluster (default: start a local one)")
    parser.add_argument("--cpus-per-task", type=float, default=1, help="--executor ray: CPUs reserved per group")
    parser.add_argument("--gpus-per-task", type=float, default=0, help="--executor ray: GPUs reserved per group")
    archive = parser.add_argument_group("archives (instead of training; see trainers.archive)")
    exclusive = archive.add_mutually_exclusive_group()
    exclusive.add_argument("--export", type=Path, default=None, metavar="ARCHIVE",
                           help="write the configs and metrics of every run directory under OUT into ONE "
                                "gzip-compressed CSV (e.g. docs/results/cartpole.csv.gz) and exit without training")
    exclusive.add_argument("--import", dest="import_", type=Path, default=None, metavar="ARCHIVE",
                           help="recreate the run directories of ARCHIVE under OUT (config.json, metrics.csv; "
                                "no checkpoints) and exit without training")
    archive.add_argument("--merge", action="store_true",
                         help="--export: keep the other runs of an existing ARCHIVE, replacing those of the same name")
    return parser


def _spec_from_args(args: argparse.Namespace) -> SweepSpec:
    options: dict[str, Any] = {}
    for text in args.set:
        name, value = _parse_assignment(text, "--set")
        options[name] = _json_value(value)
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.checkpoint_every is not None:
        options["checkpoint_every"] = args.checkpoint_every
    vary = {}
    for text in args.vary:
        name, value = _parse_assignment(text, "--vary")
        vary[name] = [_json_value(item) for item in value.split(",") if item != ""]
    levels: Any = None
    if args.levels:
        if any("=" in item for item in args.levels):
            levels = {}
            for item in args.levels:
                task, value = _parse_assignment(item, "--levels")
                levels[task] = [_json_value(v) for v in value.split(",") if v != ""]
        else:
            levels = [_json_value(item) for item in args.levels]
    return SweepSpec(tasks=tuple(args.tasks), levels=levels, strategies=tuple(args.strategies),
                     clips=tuple(args.clips), seeds=tuple(args.seeds), options=options, vary=vary)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-sweep``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.merge and args.export is None:
        parser.error("--merge applies to --export")
    if args.export is not None or args.import_ is not None:
        from trainers import archive
        try:
            if args.export is not None:
                names = archive.export_runs([args.out], args.export, merge=args.merge)
                total = len(archive.read_archive(args.export)) if args.merge else len(names)
                print(f"diffenvs-sweep: exported {len(names)} runs of {args.out} to {args.export} "
                      f"({total} runs, {args.export.stat().st_size} bytes)")
            else:
                run_dirs = archive.import_runs(args.import_, args.out)
                print(f"diffenvs-sweep: imported {len(run_dirs)} runs of {args.import_} into {args.out}")
        except ValueError as error:
            parser.error(str(error))
        return 0
    try:
        spec = _spec_from_args(args)
        groups = plan(spec, args.out, part=args.part, max_group=args.max_group,
                      split_combined=not args.no_split_combined)
    except ValueError as error:
        parser.error(str(error))
    total = sum(len(group.runs) for group in groups)
    print(f"diffenvs-sweep: part {args.part}: {total} runs in {len(groups)} groups -> {args.out}", flush=True)
    if args.dry_run:
        for group in groups:
            finished = sum(1 for run in group.runs if _finished(run))
            print(f"group of {len(group.runs)} ({finished} finished): {group.key}")
            for run in group.runs:
                print(f"  {run.name}{'  [finished]' if _finished(run) else ''}")
        return 0
    if args.executor == "local" and (args.address is not None or args.cpus_per_task != 1 or args.gpus_per_task != 0):
        parser.error("--address, --cpus-per-task and --gpus-per-task apply to --executor ray")
    try:
        result = run_sweep(spec, args.out, part=args.part, max_group=args.max_group,
                           split_combined=not args.no_split_combined, overwrite=args.overwrite, quiet=args.quiet,
                           executor=args.executor, address=args.address, cpus_per_task=args.cpus_per_task,
                           gpus_per_task=args.gpus_per_task)
    except (ValueError, ImportError) as error:             # one line, no usage: the arguments parsed fine
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    counts = {status: sum(1 for s in result.runs if s.status == status) for status in ("trained", "finished", "failed")}
    print(f"diffenvs-sweep: {counts['trained']} trained, {counts['finished']} already finished, "
          f"{counts['failed']} failed (non-finite) in {result.seconds:.1f} s")
    return 0


def _finished(run: Run) -> bool:
    path = run.run_dir / rundir.CHECKPOINT_FILE
    if not path.exists():
        return False
    with np.load(path, allow_pickle=False) as archive:
        return int(archive["epoch"]) >= run.config.epochs


if __name__ == "__main__":
    raise SystemExit(main())
