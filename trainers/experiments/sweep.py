"""Sweeps: a grid of training runs (task x level x strategy x clipping x seed), trained in vmapped groups.

Every run of a sweep is an ordinary run directory of :func:`trainers.training.train` (the same
``config.json``, ``metrics.csv`` and ``checkpoint.npz``) under the output root, named by
:func:`trainers.config.run_name` as ``diffenvs-train`` names its runs, so ``train`` or ``diffenvs-train``
recognises and resumes it, and a sweep skips finished runs and resumes interrupted ones from their
checkpoints. A run already under the root with another name (an earlier version's, or renamed) is found
by its ``config.json`` and resumed where it is.

Runs that share shapes (same task, environment parameters, data sizes, optimizer, learning rate and
strategy family) train together as ONE jitted, vmapped epoch program of :mod:`trainers.engine`, the
same engine that trains a single run: the study's gated strategies, clipping modes and seeds are data
in that program, and any other strategy forms groups of its own.

Examples:
    >>> spec = SweepSpec(tasks=("cartpole",), levels=(1, 2), strategies=("bptt", "combined"), seeds=(0, 1))
    >>> result = run_sweep(spec, "runs/sweep", part=(1, 2))      # the first half of the grid
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

import diffenvs
from diffenvs.registry import canonical_name, is_builtin
from trainers import rundir
from trainers.config import CLIP_MODES, TrainConfig, run_name, strategy_fields
from trainers.engine import (
    GATED_STRATEGIES, Member, group_key, program_for, request_host_devices, train_members,
)
from trainers.presets import COMPLEXITY_LEVELS, study_preset, task_preset
from trainers.plugins import add_import_flag, import_modules
from trainers.strategies import Strategy, strategy_names

STUDY_STRATEGIES = ("bptt", "modified", "combined", "one_step")
"""The strategies the study compares (the default of a sweep)."""
FAILED_FILE = rundir.FAILED_FILE
__all__ = ["GATED_STRATEGIES", "STUDY_STRATEGIES", "FAILED_FILE", "SweepSpec", "Run", "Group", "RunStatus",
           "SweepResult", "plan", "run_name", "config_record", "train_group", "run_sweep", "main"]


# ----------------------------------------------------------------------------------------------- grid

def _parse_strategy(entry: str | Strategy) -> dict[str, Any]:
    """TrainConfig fields of a grid strategy entry: a spelling such as "bptt", "truncated:K", "es:P",
    "NAME:key=value,..." (see :func:`trainers.strategies.parse_strategy`) or a Strategy."""
    if isinstance(entry, Strategy):
        return {"strategy": entry}
    if not isinstance(entry, str):
        raise ValueError(f"strategies: entries must be names or Strategy objects, got {entry!r}")
    if entry == "truncated":
        return {"strategy": "truncated"}            # truncate_every from the options
    try:
        return strategy_fields(entry)
    except ValueError as error:
        raise ValueError(f"strategies: {error}".replace("strategies: strategy must", "strategies: each must")) from None


def _non_empty(name: str, values: Any) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence, got {values!r}")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{name} must not repeat values, got {values!r}")
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A grid of runs: tasks x levels x strategies x clipping modes x seeds x ``vary`` combinations.

    tasks: task names ("cartpole", "guidance", "quantum" or canonical names; "gymnax:ENV_ID",
    "brax:NAME" or registered names, which have no levels and train with their preset,
    :func:`~trainers.presets.task_preset`).
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
            if not is_builtin(tasks[0]):
                raise ValueError(f"levels: task {tasks[0]!r} has no complexity levels (set its environment "
                                 f"parameters with options env_params), got {self.levels!r}")
        elif isinstance(self.levels, Mapping):
            for task, values in self.levels.items():
                if canonical_name(task) not in tasks:
                    raise ValueError(f"levels: task {task!r} is not in tasks {tasks}")
                if not is_builtin(task):
                    raise ValueError(f"levels: task {task!r} has no complexity levels (set its environment "
                                     f"parameters with options env_params)")
                _non_empty(f"levels[{task!r}]", values)

    def task_levels(self, task: str) -> tuple[Any, ...]:
        """The levels of ``task`` in this grid."""
        name = canonical_name(task)
        if not is_builtin(name):
            return (None,)
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
            study_levels = COMPLEXITY_LEVELS.get(task, (None, ()))[1]
            for level in self.task_levels(task):
                level = next((study for study in study_levels if study == level), level)   # 1 -> 1.0 for rc
                for strategy, clip, seed, combination in itertools.product(
                        self.strategies, self.clips, self.seeds, itertools.product(*varied)):
                    overrides = {**self.options, **dict(combination)}
                    overrides.update(_parse_strategy(strategy))
                    if is_builtin(task):
                        config = study_preset(task, level, clip=clip, seed=int(seed), **overrides)
                    else:
                        config = task_preset(task, clip=clip, seed=int(seed), **overrides)
                    config.make_env()                   # unknown environment parameters fail here
                    configs.append(config)
        return configs


# ----------------------------------------------------------------------------------------- planning

def config_record(config: TrainConfig) -> dict[str, Any]:
    """What :func:`~trainers.training.train` writes to ``config.json`` for ``config`` (study controller)."""
    return {**config.to_dict(), "controller": "study", "diffenvs_version": diffenvs.__version__}


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
    earlier: dict[str, Path] | None = None
    for config in spec.configs():
        name = run_name(config)
        if not (out_root / name / rundir.CONFIG_FILE).exists():     # resumed under an earlier name, if any
            if earlier is None:
                earlier = rundir.runs_by_identity(out_root)
            found = earlier.get(rundir.run_identity(config_record(config)))
            name = found.name if found is not None else name
        if name in names:
            if names[name] == config:
                continue
            raise ValueError(f"spec: two different runs share the directory name {name!r}")
        names[name] = config
        by_key.setdefault(group_key(config, split_combined), []).append(Run(config, name, out_root / name))
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


def train_group(group: Group, *, overwrite: bool = False, quiet: bool = True,
                callback: Callable[[Run, dict[str, float]], None] | None = None,
                devices: int | None = None) -> list[RunStatus]:
    """Train the unfinished runs of a group together (resuming from checkpoints); returns each run's
    status. This is the unit of work that executors distribute.

    A run that hits a non-finite value gets ``failed.json`` and keeps its last good checkpoint while
    the others go on; it is skipped afterwards (``overwrite`` starts it afresh). The group's run
    directories are locked while it trains (all or none); a group that another process holds raises
    :class:`~trainers.rundir.RunDirBusyError`. ``devices``: split the group's runs over this many local
    devices (None: all of them; see :func:`trainers.engine.group_devices`).
    """
    locks = rundir.lock_all([run.run_dir for run in group.runs])
    if locks is None:
        busy = next(run.run_dir for run in group.runs if not _free(run.run_dir))
        raise rundir.RunDirBusyError(f"a group of {len(group.runs)} runs is being trained by another process "
                                     f"({busy} is locked)")
    try:
        return _train_claimed_group(group, overwrite, quiet, callback, devices)
    finally:
        for held in locks:
            held.release()


def _free(run_dir: Path) -> bool:
    held = rundir.try_lock(run_dir)
    if held is not None:
        held.release()
    return held is not None


def _train_claimed_group(group: Group, overwrite: bool, quiet: bool,
                         callback: Callable[[Run, dict[str, float]], None] | None,
                         devices: int | None) -> list[RunStatus]:
    statuses: dict[str, RunStatus] = {}
    members = []
    for run in group.runs:
        if (run.run_dir / FAILED_FILE).exists() and not overwrite:
            rows = rundir.read_metrics(run.run_dir)
            statuses[run.name] = RunStatus(run, "failed", rows[-1]["epoch"] if rows else 0,
                                           rows[-1]["test_loss"] if rows else math.nan)
            continue
        members.append(run)
    if members:
        fields = 2 if any(run.config.strategy == "combined" for run in members) else 1
        program = program_for(members[0].config, fields)

        def failed(index: int, epoch: int, row: dict[str, float]) -> None:
            rundir._write_atomically(members[index].run_dir / FAILED_FILE, (json.dumps(
                {"epoch": epoch, "row": {k: repr(v) for k, v in row.items()},
                 "message": "non-finite loss, parameters or optimizer state; the last good checkpoint is kept"},
                indent=2) + "\n").encode())

        config = members[0].config
        outcomes = train_members(
            program, [Member(run.config, run.run_dir, run.name, config_record(run.config)) for run in members],
            overwrite=overwrite, quiet=quiet, where="out_root", on_failure=failed, devices=devices,
            description=f"{config.task} {config.env_params}: {len(members)} runs",
            callback=None if callback is None else lambda index, row: callback(members[index], row))
        for run, outcome in zip(members, outcomes):
            last = outcome.rows[-1]
            statuses[run.name] = RunStatus(run, outcome.status, last["epoch"], last["test_loss"])
    return [statuses[run.name] for run in group.runs]


def run_sweep(spec: SweepSpec, out_root: str | Path, *, part: tuple[int, int] | str = (1, 1),
              max_group: int | None = None, split_combined: bool = True, overwrite: bool = False, quiet: bool = False,
              callback: Callable[[Run, dict[str, float]], None] | None = None, executor: str = "local",
              address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0,
              devices: int | None = None) -> SweepResult:
    """Train part ``I/N`` of the grid ``spec`` into run directories under ``out_root``.

    Args:
        spec: the grid of runs.
        out_root: the directory that holds one run directory per run (named by :func:`run_name`).
        part: ``(I, N)`` or ``"I/N"``: train the I-th of N parts of similar cost (1 <= I <= N).
        max_group: at most this many runs per vmapped program (memory); None: no bound.
        split_combined: train ``combined`` runs in groups of their own (see :func:`plan`).
        overwrite: start every run of the part afresh.
        quiet: no progress bars.
        callback: ``callback(run, row)`` after each run's epoch is recorded; raising stops the sweep.
        executor: "local" (this process) or "ray" (one Ray task per group).
        address: the Ray cluster's address (executor "ray"; None starts a local one).
        cpus_per_task: CPUs reserved per Ray task (> 0).
        gpus_per_task: GPUs reserved per Ray task (>= 0).
        devices: split each group's runs over this many local devices (None: all).

    Returns:
        A :class:`SweepResult`: each run of the part with its status, and the sweep's wall time in
            seconds.

    Raises:
        ValueError: a malformed ``part``, an unknown ``executor``, Ray options with the local executor,
            a ``callback`` with the Ray executor, or a run directory that holds a run with a different
            configuration.

    Several processes may run the same sweep on the same ``out_root`` at once: each group is trained by
    the first that locks it, the others go on with the remaining groups and then wait for the ones still
    held, so each run is trained once and the result equals one sweep's. Finished runs are skipped,
    interrupted runs resume from their checkpoints, runs that hit a
    non-finite value are marked with ``failed.json`` and skipped afterwards (``overwrite=True`` starts
    every run of the part afresh). ``callback(run, row)`` is called after each run's epoch is recorded
    (and checkpointed when due); raising from it stops the sweep. ``max_group`` bounds the runs per
    vmapped program (memory); ``split_combined`` see :func:`plan`. ``devices``: split each group's runs
    over this many local devices (None: all).

    ``executor`` "local" trains the groups one after the other in this process; "ray" runs each group
    as one Ray task (:func:`trainers.experiments.ray_executor.run_sweep_on_ray`: ``address`` of a running cluster or
    None for a local one, ``cpus_per_task`` and ``gpus_per_task`` reserved per task; no ``callback``).
    """
    if executor == "ray":
        if callback is not None:
            raise ValueError("callback: not supported by executor 'ray' (the runs train in other processes)")
        from trainers.experiments.ray_executor import run_sweep_on_ray
        return run_sweep_on_ray(spec, out_root, address=address, cpus_per_task=cpus_per_task,
                                gpus_per_task=gpus_per_task, part=part, max_group=max_group,
                                split_combined=split_combined, overwrite=overwrite, quiet=quiet,
                                devices=devices)
    if executor != "local":
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if address is not None or cpus_per_task != 1 or gpus_per_task != 0:
        raise ValueError(f"address, cpus_per_task and gpus_per_task apply to executor 'ray', got address="
                         f"{address!r}, cpus_per_task={cpus_per_task!r}, gpus_per_task={gpus_per_task!r}")
    started = time.perf_counter()
    groups = plan(spec, out_root, part=part, max_group=max_group, split_combined=split_combined)
    statuses: list[RunStatus] = []
    pending = list(groups)
    while pending:                  # groups that another sweep process trains are taken up afterwards
        deferred = []
        for group in pending:
            try:
                statuses += train_group(group, overwrite=overwrite, quiet=quiet, callback=callback,
                                        devices=devices)
            except rundir.RunDirBusyError:
                deferred.append(group)
        if len(deferred) == len(pending):
            time.sleep(1.0)
        pending = deferred
    order = {run.name: index for index, run in enumerate(run for group in groups for run in group.runs)}
    statuses.sort(key=lambda status: order[status.run.name])
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
    from trainers.cli import CommandParser

    parser = CommandParser(
        prog="diffenvs-sweep",
        description="Train a grid of runs (task x level x strategy x clipping x seed) with the study protocol, "
                    "in vmapped groups, into run directories under OUT. Finished runs are skipped and "
                    "interrupted ones resumed; --part I/N trains the I-th of N disjoint parts of the grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", type=Path, help="output root (one run directory per run)")
    parser.add_argument("--tasks", nargs="+", default=["cartpole"],
                        help="cartpole, guidance, quantum; or gymnax:ENV_ID, brax:NAME or a registered name (no "
                             "levels; trained with the task's preset, environment parameters with --set env_params=...)")
    add_import_flag(parser)
    parser.add_argument("--levels", nargs="+", default=None,
                        help="complexity levels (poles, rc, target); for several tasks TASK=L1,L2,...; "
                             "default: the study's levels")
    parser.add_argument("--strategies", nargs="+", default=list(STUDY_STRATEGIES),
                        help=f"among {strategy_names()}; options as NAME:VALUE (truncated:10, es:64) "
                             "or NAME:key=value,key=value")
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
    parser.add_argument("--devices", type=int, default=None,
                        help="split each group's runs over N local devices (GPUs, TPU cores; on a CPU-only "
                             "machine N host devices, one per core is a good choice); default: all devices")
    parser.add_argument("--precision", choices=("float32", "float64"), default=None,
                        help="floating-point precision of every run (default: float32)")
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
    archive = parser.add_argument_group("archives (instead of training; see trainers.experiments.archive)")
    exclusive = archive.add_mutually_exclusive_group()
    exclusive.add_argument("--export", type=Path, default=None, metavar="ARCHIVE",
                           help="write the configs and metrics of every run directory under OUT into ONE "
                                "gzip-compressed CSV (e.g. docs/results/cartpole.csv.gz) and exit without training")
    exclusive.add_argument("--import-archive", dest="import_", type=Path, default=None, metavar="ARCHIVE",
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
    if args.precision is not None:
        options["precision"] = args.precision
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


def check_import_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A one-line error for ``--import ARCHIVE``, the spelling that recreated runs from an archive before
    ``--import`` took Python modules (now ``--import-archive ARCHIVE``)."""
    for name in args.imports:
        if name.endswith((".csv.gz", ".csv")):
            parser.error(f"--import takes a Python module; to recreate the runs of the archive {name} use "
                         f"--import-archive {name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-sweep``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    check_import_values(_parser(), pre.parse_known_args(argv)[0])
    import_modules(argv, "diffenvs-sweep")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.devices is not None:
        try:
            request_host_devices(args.devices)
        except ValueError as error:
            parser.error(f"--{error}")
    if args.merge and args.export is None:
        parser.error("--merge applies to --export")
    if args.export is not None or args.import_ is not None:
        from trainers.experiments import archive
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
                           gpus_per_task=args.gpus_per_task, devices=args.devices)
    except (ValueError, ImportError) as error:             # one line, no usage: the arguments parsed fine
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    counts = {status: sum(1 for s in result.runs if s.status == status) for status in ("trained", "finished", "failed")}
    print(f"diffenvs-sweep: {counts['trained']} trained, {counts['finished']} already finished, "
          f"{counts['failed']} failed (non-finite) in {result.seconds:.1f} s")
    return 0


def _finished(run: Run) -> bool:
    epoch = rundir.checkpoint_epoch(run.run_dir)
    return epoch is not None and epoch >= run.config.epochs


if __name__ == "__main__":
    raise SystemExit(main())
