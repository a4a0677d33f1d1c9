"""The RL study: brax PPO, SAC and APG against ``bptt``, ``combined`` and ``shac`` at the hardest levels,
with tuned RL baselines, several seeds and equal compute budgets.

Protocol (docs/rl-comparison.md states it for readers):

* Cases: the hardest level of each task (cart-pole 4 poles, guidance rc 0.001, quantum control target 5).
* Budget: every method of a case gets the same *single-core time* ``T``: the time of
  :data:`BUDGET_EPOCHS` study epochs of ``bptt``. A run is confined to one CPU core and one XLA thread,
  so its process CPU time is the wall time it takes with a core to itself, and it does not change when
  other processes load the machine (two runs train side by side, one per core). ``T`` is converted once
  into each method's own units (epochs for gradient strategies, environment steps for RL) with the
  rates that :func:`calibrate` measured (``docs/results/rl_budgets.json``); the runs then train for
  those units, so a run gives the same result whatever the load, and an interrupted study resumes run
  by run. Curves are read at equal time through the same rates and at equal environment steps.
* Tuning (``ppo`` and ``sac``): :data:`TUNING_GRIDS` settings per case, on tuning seed 100, by
  successive halving: every setting for ``B/4`` environment steps, the best half for ``B/2``; the best
  setting of the last rung (lowest test loss at the rung's budget, :func:`loss_at`) is then trained on seeds 0-4 for ``B``.
  Every tried setting is a row of ``docs/results/rl_tuning.csv``.
* Gradient strategies keep the study's settings (not tuned either), clip ``none``; their seeds 0-2 are
  the study's runs (docs/results/TASK.csv.gz: same presets, same test states, 1000 epochs), seeds 3-4
  are trained here.
* Longer budget: ``ppo`` and ``sac`` on the two cheaper cases also train seeds 0-2 for
  :data:`LONG_FACTOR` times ``B`` (runs of their own: brax's SAC splits its prefill over the
  evaluations, so a longer run's beginning is not the shorter run).

Every finished run goes into the run archive ``docs/results/rl_comparison_runs.csv.gz`` at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from diffenvs.registry import canonical_name
from trainers.config import RUN_LEVEL_LABELS
from trainers.experiments.rl_statistics import REPETITIONS
from trainers.presets import COMPLEXITY_LEVELS, hardest_level

CASES = ("cartpole", "guidance", "quantum")
RL_METHODS = ("ppo", "sac", "apg")
GRADIENT_METHODS = ("bptt", "combined", "shac")
METHODS = RL_METHODS + GRADIENT_METHODS
EVALUATION_SEEDS = {"ppo": (0, 1, 2, 3, 4), "sac": (0, 1, 2, 3, 4), "bptt": (0, 1, 2, 3, 4),
                    "combined": (0, 1, 2, 3, 4), "apg": (0, 1, 2), "shac": (0, 1, 2)}
REUSED_SEEDS = (0, 1, 2)
"""Seeds of the gradient strategies taken from the study's archives (docs/results/TASK.csv.gz)."""
TUNING_SEED = 100
BUDGET_EPOCHS = 1000
"""The budget T of every case: the single-core time of this many ``bptt`` epochs of the study's protocol
(the study's length of a run)."""
LONG_FACTOR = 4
LONG_SUFFIX = "-long"
"""Ends the name of a longer run (LONG_FACTOR T, seeds LONG_SEEDS): a repetition of an evaluation seed,
read at its own budget and left out of the statistics at T."""
LONG_CASES = ("cartpole", "guidance")
LONG_SEEDS = (0, 1, 2)
EVALUATIONS_PER_BUDGET = 40
"""RL runs are evaluated on the test set every B / 40 environment steps (rounded to whole updates)."""
RUNG_FRACTIONS = (0.25, 0.5)
"""Successive halving: the budget of each rung as a fraction of B; each rung keeps the best half."""
GRADIENT_CLIP = "none"

TUNING_GRIDS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "ppo": {case: [{"learning_rate": rate, "entropy_cost": entropy}
                   for rate in (1e-4, 3e-4, 1e-3) for entropy in (1e-3, 1e-2)] for case in CASES},
    "sac": {case: [{"learning_rate": rate, "reward_scaling": scale}
                   for rate in (1e-4, 3e-4, 1e-3) for scale in ((0.1, 1.0) if case == "quantum" else (1.0, 10.0))]
            for case in CASES},
}
"""The tried settings (brax ``train`` arguments over :data:`trainers.experiments.baseline.DEFAULTS`):
learning rate with entropy cost (PPO) or reward scaling (SAC, whose temperature brax learns; the scale
sets the reward against it, chosen around each task's per-step reward: about 0.01-0.1 for the cart-pole
and guidance, about 1 for quantum control). None of them changes the number of environment steps per
update, so one rate per method and case converts the budget for every setting."""

RESULTS = Path("docs/results")
ARCHIVE = RESULTS / "rl_comparison_runs.csv.gz"
TUNING_CSV = RESULTS / "rl_tuning.csv"
BUDGETS_JSON = RESULTS / "rl_budgets.json"
TUNING_COLUMNS = ("task", "level", "method", "setting", "seed", "budget", "rung", "final_test_loss", "run")
SINGLE_CORE_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def case_env_params(case: str) -> dict[str, Any]:
    """The environment parameters of a case (its hardest level)."""
    task = canonical_name(case)
    return {COMPLEXITY_LEVELS[task][0]: hardest_level(task)}


def steps_per_update(method: str, hyperparameters: dict[str, Any], num_steps: int) -> int:
    """Environment steps between two possible evaluations of brax's trainer (one training step)."""
    if method == "ppo":
        return (hyperparameters["batch_size"] * hyperparameters["unroll_length"]
                * hyperparameters["num_minibatches"])
    if method == "sac":
        return hyperparameters["num_envs"]
    return hyperparameters["num_envs"] * (hyperparameters.get("horizon_length") or num_steps)


# ------------------------------------------------------------------------------------------ runs

class RunSpec(NamedTuple):
    """One run of the study. ``units``: environment steps (RL) or epochs (gradient strategies)."""

    name: str
    case: str
    method: str
    seed: int
    setting: dict[str, Any]
    units: int
    eval_every: int | None
    phase: str            # "tune0", "tune1", "eval", "long"

    def to_json(self) -> str:
        return json.dumps(self._asdict(), sort_keys=True)


def run_name(case: str, method: str, seed: int, phase: str, setting: dict[str, Any] | None = None) -> str:
    """``cartpole-poles4-ppo-seed0`` (evaluation), with ``-long`` or ``-tune0-lr0.0003-ent0.01``."""
    task = canonical_name(case)
    parameter, _ = COMPLEXITY_LEVELS[task]
    level = hardest_level(task)
    name = f"{case}-{RUN_LEVEL_LABELS[parameter]}{level:g}-{method}-seed{seed}"
    if phase == "long":
        name += LONG_SUFFIX
    elif phase.startswith("tune"):
        short = {"learning_rate": "lr", "entropy_cost": "ent", "reward_scaling": "rs"}
        name += f"-{phase}-" + "-".join(f"{short.get(k, k)}{v:g}" for k, v in sorted((setting or {}).items()))
    return name


def load_budgets(path: Path = BUDGETS_JSON) -> dict[str, Any]:
    """The measured rates (units per single-core second) per case and method, and their record."""
    if not path.exists():
        raise ValueError(f"{path} does not exist: run `diffenvs-rl-study calibrate` first")
    return json.loads(path.read_text())


def budget_seconds(case: str, budgets: dict[str, Any]) -> float:
    """T of a case: single-core seconds of BUDGET_EPOCHS bptt epochs."""
    return BUDGET_EPOCHS / budgets["rates"][case]["bptt"]


def budget_units(case: str, method: str, budgets: dict[str, Any]) -> int:
    """The budget T of a case in ``method``'s units (epochs or environment steps)."""
    return max(int(round(budget_seconds(case, budgets) * budgets["rates"][case][method])), 1)


def rl_hyperparameters(case: str, method: str, setting: dict[str, Any]) -> dict[str, Any]:
    from trainers.experiments.baseline import default_hyperparameters
    return {**default_hyperparameters(method, case), **setting}


def eval_interval(case: str, method: str, budgets: dict[str, Any]) -> int:
    """Environment steps between evaluations: B / EVALUATIONS_PER_BUDGET in whole training steps."""
    import diffenvs
    unit = steps_per_update(method, rl_hyperparameters(case, method, {}),
                            diffenvs.make(case, **case_env_params(case)).num_steps())
    return max(int(round(budget_units(case, method, budgets) / EVALUATIONS_PER_BUDGET / unit)), 1) * unit


def _rl_units(case: str, method: str, budgets: dict[str, Any], fraction: float) -> int:
    """A budget of ``fraction`` B as a whole number of evaluation intervals."""
    interval = eval_interval(case, method, budgets)
    return max(int(round(fraction * budget_units(case, method, budgets) / interval)), 1) * interval


def evaluation_runs(budgets: dict[str, Any], best: dict[tuple[str, str], dict[str, Any]],
                    cases: Sequence[str] = CASES) -> list[RunSpec]:
    """The runs on the evaluation seeds (reused gradient seeds excluded) and the longer RL runs.

    ``best`` maps (case, method) to the tuned setting; a method still being tuned is left out."""
    specs = []
    for case in cases:
        for method in METHODS:
            if method in TUNING_GRIDS and (case, method) not in best:
                continue
            setting = best.get((case, method), {})
            runs = [(seed, "eval") for seed in EVALUATION_SEEDS[method]
                    if not (method in GRADIENT_METHODS and seed in REUSED_SEEDS)]
            if method in TUNING_GRIDS and case in LONG_CASES:
                runs += [(seed, "long") for seed in LONG_SEEDS]
            for seed, phase in runs:
                if method in RL_METHODS:
                    units = _rl_units(case, method, budgets, LONG_FACTOR if phase == "long" else 1.0)
                    interval = eval_interval(case, method, budgets)
                else:
                    units, interval = budget_units(case, method, budgets), None
                specs.append(RunSpec(run_name(case, method, seed, phase), case, method, seed, setting, units,
                                     interval, phase))
    return specs


def tuning_runs(budgets: dict[str, Any], rung: int, survivors: dict[tuple[str, str], list[dict[str, Any]]],
                cases: Sequence[str] = CASES) -> list[RunSpec]:
    """The runs of a successive-halving rung: ``survivors`` maps (case, method) to the settings still in."""
    specs = []
    for case in cases:
        for method in TUNING_GRIDS:
            for setting in survivors.get((case, method), []):
                units = _rl_units(case, method, budgets, RUNG_FRACTIONS[rung])
                specs.append(RunSpec(run_name(case, method, TUNING_SEED, f"tune{rung}", setting), case, method,
                                     TUNING_SEED, setting, units, eval_interval(case, method, budgets),
                                     f"tune{rung}"))
    return specs


# ------------------------------------------------------------------------------------------ executing

def train_run(spec: RunSpec, out: Path, quiet: bool = True) -> Path:
    """Train one run into ``out`` (RL: restarted from scratch; gradient: resumed from its checkpoint)."""
    run_dir = out / spec.name
    if spec.method in RL_METHODS:
        from trainers.experiments.baseline import train_baseline
        train_baseline(spec.case, spec.method, env_params=case_env_params(spec.case), seed=spec.seed,
                       num_timesteps=spec.units, eval_every=spec.eval_every, hyperparameters=spec.setting,
                       out=run_dir, overwrite=True, quiet=quiet)
    else:
        from trainers.presets import study_preset
        from trainers.training import train
        config = study_preset(spec.case, hardest_level(canonical_name(spec.case)), strategy=spec.method,
                              clip=GRADIENT_CLIP, seed=spec.seed, epochs=spec.units)
        train(config, out=run_dir, quiet=quiet)
    return run_dir


def single_core_environment() -> dict[str, str]:
    """The environment of a run's process: one XLA thread (and one BLAS thread)."""
    environment = dict(os.environ)
    environment["XLA_FLAGS"] = (environment.get("XLA_FLAGS", "") + " " + SINGLE_CORE_FLAGS).strip()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[name] = "1"
    return environment


def _start(command: list[str], core: int, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "ab")
    return subprocess.Popen(command, env=single_core_environment(), stdout=handle, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: os.sched_setaffinity(0, {core}))


# ------------------------------------------------------------------------------------------ results

def _archive_record(run_dir: Path, name: str):
    from trainers.experiments.archive import read_run_dir
    record = read_run_dir(run_dir, name)
    config = {**record.config, "task": canonical_name(record.config["task"])}   # one spelling per task
    return record._replace(config=config)


def add_to_archive(records: Iterable[Any], path: Path = ARCHIVE) -> None:
    """Add (or replace) runs in the run archive, written atomically."""
    from trainers.experiments.archive import read_archive, write_archive
    runs = read_archive(path) if path.exists() else {}
    for record in records:
        runs[record.name] = record
    write_archive(runs.values(), path)


def reused_runs(case: str) -> list[Any]:
    """The study's runs of the gradient strategies on the reused seeds, renamed as the study names them."""
    from trainers.experiments.archive import read_archive
    task = canonical_name(case)
    parameter, _ = COMPLEXITY_LEVELS[task]
    found = []
    for record in read_archive(RESULTS / f"{case}.csv.gz").values():
        config = record.config
        if (config.get("strategy") in GRADIENT_METHODS and config.get("clip") == GRADIENT_CLIP
                and config.get("seed") in REUSED_SEEDS
                and config.get("env_params", {}).get(parameter) == hardest_level(task)):
            found.append(record._replace(name=run_name(case, config["strategy"], config["seed"], "eval")))
    return found


def read_tuning(path: Path = TUNING_CSV) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def add_tuning_row(spec: RunSpec, run_dir: Path, path: Path = TUNING_CSV) -> None:
    from trainers import rundir
    metrics = rundir.read_metrics(run_dir)
    final = loss_at([row["env_steps"] for row in metrics], [row["test_loss"] for row in metrics], spec.units)
    rows = [row for row in read_tuning(path) if row["run"] != spec.name]
    task = canonical_name(spec.case)
    rows.append({"task": task, "level": hardest_level(task), "method": spec.method,
                 "setting": json.dumps(spec.setting, sort_keys=True), "seed": spec.seed, "budget": spec.units,
                 "rung": spec.phase[-1], "final_test_loss": repr(final), "run": spec.name})
    rows.sort(key=lambda row: (row["task"], row["method"], int(row["rung"]), row["run"]))
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, TUNING_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(path)


def survivors_of(rung: int, tuning: list[dict[str, Any]], cases: Sequence[str] = CASES
                 ) -> dict[tuple[str, str], list[dict[str, Any]]] | None:
    """The settings that enter ``rung`` (all of the grid for rung 0; the best half of the previous rung's,
    once every one of them has a row). None for a (case, method) still waiting is left out."""
    result = {}
    for case in cases:
        for method, grids in TUNING_GRIDS.items():
            grid = grids[case]
            if rung == 0:
                result[(case, method)] = grid
                continue
            previous = _rung_losses(tuning, case, method, rung - 1)
            entered = survivors_of(rung - 1, tuning, [case]).get((case, method), [])
            if entered and all(json.dumps(s, sort_keys=True) in previous for s in entered):
                ranked = sorted(entered, key=lambda s: (_nan_last(previous[json.dumps(s, sort_keys=True)]),
                                                        grid.index(s)))
                result[(case, method)] = ranked[:max(len(ranked) // 2, 1)]
    return result


def _nan_last(value: float) -> float:
    return math.inf if math.isnan(value) else value


def _rung_losses(tuning: list[dict[str, Any]], case: str, method: str, rung: int) -> dict[str, float]:
    task = canonical_name(case)
    return {row["setting"]: float(row["final_test_loss"]) for row in tuning
            if row["task"] == task and row["method"] == method and int(row["rung"]) == rung}


def best_settings(tuning: list[dict[str, Any]], cases: Sequence[str] = CASES) -> dict[tuple[str, str], dict]:
    """The chosen setting per (case, method): the best of the last rung, once it is complete."""
    last = len(RUNG_FRACTIONS) - 1
    entered = survivors_of(last, tuning, cases)
    chosen = {}
    for (case, method), settings in entered.items():
        losses = _rung_losses(tuning, case, method, last)
        if settings and all(json.dumps(s, sort_keys=True) in losses for s in settings):
            chosen[(case, method)] = min(settings, key=lambda s: (_nan_last(losses[json.dumps(s, sort_keys=True)]),
                                                                  TUNING_GRIDS[method][case].index(s)))
    return chosen


# ------------------------------------------------------------------------------------------ calibration

class _Measured(Exception):
    """Raised from a training callback to stop a calibration run once it has measured enough."""


class _CpuClock:
    """Process CPU time at each call; raises :class:`_Measured` once ``seconds`` have passed since the
    call ``skip`` (the first calls include compilation: brax compiles its step twice)."""

    def __init__(self, skip: int, seconds: float):
        self.skip, self.seconds, self.times = skip, seconds, []

    def tick(self) -> None:
        self.times.append(time.process_time())
        if len(self.times) > self.skip + 1 and self.times[-1] - self.times[self.skip] >= self.seconds:
            raise _Measured

    def rate(self, units_per_tick: float) -> dict[str, float]:
        ticks = len(self.times) - 1 - self.skip
        cpu = self.times[-1] - self.times[self.skip]
        return {"rate": ticks * units_per_tick / cpu, "units": ticks * units_per_tick, "cpu_seconds": cpu}


class _EvaluationLines:
    """A stdout stand-in that ticks ``clock`` at each progress line of :func:`train_baseline`."""

    def __init__(self, clock: _CpuClock):
        self.clock = clock

    def write(self, text: str) -> int:
        if text.startswith("evaluation "):
            self.clock.tick()
        return len(text)

    def flush(self) -> None:
        pass


def measure_rate(case: str, method: str, *, seconds: float = 20.0) -> dict[str, float]:
    """Units (epochs or environment steps) per single-core second of ``method`` on ``case``, in this
    process: the process CPU time between epochs (or evaluations, with 8 test states) after the first
    two, until ``seconds`` have been measured."""
    clock = _CpuClock(skip=2, seconds=seconds)
    if method in RL_METHODS:
        import contextlib
        import diffenvs
        from trainers.experiments.baseline import train_baseline
        interval = 8 * steps_per_update(method, rl_hyperparameters(case, method, {}),
                                        diffenvs.make(case, **case_env_params(case)).num_steps())
        with contextlib.suppress(_Measured), contextlib.redirect_stdout(_EvaluationLines(clock)):
            train_baseline(case, method, env_params=case_env_params(case), seed=0, num_test=8,
                           num_timesteps=interval * 10 ** 6, eval_every=interval, quiet=False)
        return clock.rate(interval)
    from trainers.presets import study_preset
    from trainers.training import train
    config = study_preset(case, hardest_level(canonical_name(case)), strategy=method, clip=GRADIENT_CLIP, seed=0,
                          epochs=10 ** 6)
    try:
        train(config, quiet=True, callback=lambda row: clock.tick())
    except _Measured:
        pass
    return clock.rate(1.0)


def calibrate(cases: Sequence[str], methods: Sequence[str], path: Path = BUDGETS_JSON, *, seconds: float = 20.0,
              jobs: int = 2, log=print) -> dict[str, Any]:
    """Measure the rates of ``methods`` on ``cases``, each in a single-core subprocess (``jobs`` at a
    time, each on its own core), and merge them into ``path``."""
    budgets = json.loads(path.read_text()) if path.exists() else {"rates": {}, "measured": {}}
    pending = [(case, method) for case in cases for method in methods]
    cores = sorted(os.sched_getaffinity(0))
    running: dict[tuple[str, str], tuple[int, subprocess.Popen]] = {}
    while pending or running:
        while pending and len(running) < jobs:
            case, method = pending.pop(0)
            core = next((c for c in cores if c not in {c for c, _ in running.values()}), cores[0])
            command = [sys.executable, "-m", "trainers.experiments.rl_study", "_rate", case, method, str(seconds)]
            running[(case, method)] = (core, subprocess.Popen(
                command, env=single_core_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=lambda core=core: os.sched_setaffinity(0, {core})))
        time.sleep(1.0)
        for (case, method), (core, process) in list(running.items()):
            if process.poll() is None:
                continue
            del running[(case, method)]
            output, errors = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"calibration of {method} on {case} failed:\n{errors[-2000:]}")
            measured = json.loads(output.strip().splitlines()[-1])
            budgets["rates"].setdefault(case, {})[method] = measured["rate"]
            budgets["measured"].setdefault(case, {})[method] = {
                **measured, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
            log(f"{case:9s} {method:9s} {measured['rate']:12.4g} {_unit_name(method)} per single-core second "
                f"({measured['units']} in {measured['cpu_seconds']:.1f} CPU s)")
            path.write_text(json.dumps(budgets, indent=1, sort_keys=True) + "\n")
    return budgets


def _unit_name(method: str) -> str:
    return "env steps" if method in RL_METHODS else "epochs"


# ------------------------------------------------------------------------------------------ the plan

def done_names(archive: Path = ARCHIVE, tuning: Path = TUNING_CSV) -> set[str]:
    from trainers.experiments.archive import read_archive
    names = set(read_archive(archive)) if archive.exists() else set()
    return names | {row["run"] for row in read_tuning(tuning)}


def full_plan(budgets: dict[str, Any], cases: Sequence[str] = CASES,
              tuning: Sequence[dict[str, Any]] = ()) -> list[RunSpec]:
    """Every run of the study: the settings the tuning rows in ``tuning`` chose so far, and where a rung
    is not decided yet, the first grid settings (for the cost: settings do not change the cost per step)."""
    grid = survivors_of(0, [], cases)
    specs = tuning_runs(budgets, 0, grid, cases)
    decided = survivors_of(1, list(tuning), cases)
    halves = {key: decided.get(key) or settings[:max(len(settings) // 2, 1)] for key, settings in grid.items()}
    specs += tuning_runs(budgets, 1, halves, cases)
    chosen = best_settings(list(tuning), cases)
    assumed = {key: chosen.get(key, settings[0]) for key, settings in halves.items()}
    return specs + evaluation_runs(budgets, assumed, cases)


def run_seconds(spec: RunSpec, budgets: dict[str, Any]) -> float:
    """Estimated single-core seconds of training (evaluations and compilation not included)."""
    return spec.units / budgets["rates"][spec.case][spec.method]


def plan_table(budgets: dict[str, Any], cases: Sequence[str] = CASES, done: set[str] = frozenset(),
               tuning: Sequence[dict[str, Any]] = ()) -> str:
    """The plan: per case and method the runs (done: those in ``done``), budgets and estimated core-hours,
    and the total; ``tuning`` (rows of rl_tuning.csv) names the settings chosen so far."""
    lines = [f"{'case':9s} {'method':9s} {'phase':6s} {'runs':>4s} {'done':>4s} {'units per run':>14s} "
             f"{'core-hours':>10s} {'left':>6s}"]
    total = left = 0.0
    groups: dict[tuple[str, str, str], list[RunSpec]] = {}
    for spec in full_plan(budgets, cases, tuning):
        groups.setdefault((spec.case, spec.method, spec.phase), []).append(spec)
    for (case, method, phase), specs in groups.items():
        hours = sum(run_seconds(spec, budgets) for spec in specs) / 3600.0
        remaining = sum(run_seconds(spec, budgets) for spec in specs if spec.name not in done) / 3600.0
        finished = sum(spec.name in done for spec in specs)
        units = sorted({spec.units for spec in specs})
        lines.append(f"{case:9s} {method:9s} {phase:6s} {len(specs):4d} {finished:4d} "
                     f"{'/'.join(f'{u:.3g}' for u in units):>14s} {hours:10.2f} {remaining:6.2f}")
        total += hours
        left += remaining
    for case in cases:
        lines.append(f"T({case}) = {budget_seconds(case, budgets) / 60:.1f} single-core minutes "
                     f"({BUDGET_EPOCHS} bptt epochs)")
    lines.append(f"total {total:.1f} core-hours ({total / 2:.1f} h on 2 cores), left {left:.1f} core-hours, "
                 f"of training: evaluations and compilation come on top")
    return "\n".join(lines)


def ready_specs(budgets: dict[str, Any], cases: Sequence[str] = CASES) -> list[RunSpec]:
    """Runs whose inputs are known and that are not done: tuning rungs, then the evaluation runs."""
    tuning = read_tuning()
    done = done_names()
    specs = []
    for rung in range(len(RUNG_FRACTIONS)):
        specs += tuning_runs(budgets, rung, survivors_of(rung, tuning, cases), cases)
    specs += evaluation_runs(budgets, best_settings(tuning, cases), cases)
    # the cheaper cases first, so that whole cases finish early; within a case tuning before the rest
    specs.sort(key=lambda spec: (CASES.index(spec.case), not spec.phase.startswith("tune")))
    return [spec for spec in specs if spec.name not in done]


def calibrated(case: str, budgets: dict[str, Any]) -> bool:
    """Whether every method has a measured rate on ``case``."""
    return all(method in budgets["rates"].get(case, {}) for method in METHODS)


def run_study(out: Path, *, cases: Sequence[str] = CASES, jobs: int = 2, log=print) -> int:
    """Train every ready run of the calibrated ``cases``, re-reading the rates and what is ready after
    each run, until nothing is left; each finished run goes into the archive (and the tuning table) at
    once. A case calibrated while this runs joins in (within :data:`REPLAN_SECONDS`). Returns the number
    of failures."""
    failed: set[str] = set()
    running: dict[int, tuple[int, RunSpec, subprocess.Popen, float]] = {}
    cores = sorted(os.sched_getaffinity(0))
    joined: set[str] = set()
    planned_at = -math.inf
    while True:
        if running and time.monotonic() - planned_at < REPLAN_SECONDS:
            time.sleep(POLL_SECONDS)          # no run ended since the last plan: nothing new is ready
            if _collect_finished(running, failed, out, log):
                planned_at = -math.inf
            continue
        planned_at = time.monotonic()
        budgets = load_budgets()
        active = [case for case in cases if calibrated(case, budgets)]
        for case in sorted(set(active) - joined):
            present = done_names()
            missing = [record for record in reused_runs(case) if record.name not in present]
            if missing:
                add_to_archive(missing)
                log(f"archived {len(missing)} reused study runs of {case}")
            joined.add(case)
        busy = {spec.name for _, spec, _, _ in running.values()}
        waiting = [spec for spec in ready_specs(budgets, active) if spec.name not in busy | failed]
        while waiting and len(running) < jobs:
            spec = waiting.pop(0)
            free = [core for core in cores if core not in {c for c, _, _, _ in running.values()}] or cores
            command = [sys.executable, "-m", "trainers.experiments.rl_study", "_train", spec.to_json(), str(out)]
            process = _start(command, free[0], out / "logs" / f"{spec.name}.log")
            running[process.pid] = (free[0], spec, process, time.time())
            log(f"{time.strftime('%H:%M:%S')} start {spec.name}: {spec.units} {_unit_name(spec.method)} on core {free[0]}")
        if not running:
            return len(failed)


POLL_SECONDS = 5.0
"""How often the driver looks whether a run has ended."""
REPLAN_SECONDS = 300.0
"""While no run ends, the driver re-reads the rates and the archive only this often (a newly calibrated
case joins within this time); reading them is not free: the archive grows with every run."""


def _collect_finished(running: dict, failed: set[str], out: Path, log) -> bool:
    """Archive the runs of ``running`` that ended (removing them); True if any did."""
    ended = False
    for pid in list(running):
        core, spec, process, started = running[pid]
        code = process.poll()
        if code is None:
            continue
        ended = True
        del running[pid]
        minutes = (time.time() - started) / 60.0
        if code != 0:
            failed.add(spec.name)
            log(f"{time.strftime('%H:%M:%S')} FAILED {spec.name} (exit {code}) after {minutes:.1f} min; "
                f"see {out / 'logs' / (spec.name + '.log')}")
            continue
        run_dir = out / spec.name
        if spec.phase.startswith("tune"):
            add_tuning_row(spec, run_dir)
        add_to_archive([_archive_record(run_dir, spec.name)])
        log(f"{time.strftime('%H:%M:%S')} done  {spec.name} in {minutes:.1f} min, archived")
    return ended


# ------------------------------------------------------------------------------------------ the report

READING_FRACTION = 0.05
"""A run's test loss "at" a budget U is the median of its evaluations in the last 5 % of U (U included),
or its last evaluation before U when none falls there."""


def loss_at(positions: np.ndarray, losses: np.ndarray, limit: float) -> float:
    """The test loss at ``limit`` (units of ``positions``): see :data:`READING_FRACTION`; NaN if the run
    stopped before ``limit`` (within one evaluation interval)."""
    positions, losses = np.asarray(positions, float), np.asarray(losses, float)
    if len(positions) < 2 or positions[-1] < limit - (positions[-1] - positions[-2]) * 0.5:
        return math.nan
    window = (positions >= (1.0 - READING_FRACTION) * limit) & (positions <= limit)
    if window.any():
        return float(np.median(losses[window]))
    before = np.flatnonzero(positions <= limit)
    return float(losses[before[-1]]) if len(before) else math.nan


class StudyRun(NamedTuple):
    """An evaluation run of the archive: case, method, seed, and its curve in units, env steps and losses."""

    name: str
    case: str
    method: str
    seed: int
    units: np.ndarray
    env_steps: np.ndarray
    losses: np.ndarray


def study_runs(archive: Path = ARCHIVE) -> list[StudyRun]:
    """The evaluation runs (not the tuning runs) of the archive."""
    from trainers.experiments.baseline import short_task_name
    from trainers.experiments.plotting import read_archive_runs, x_values
    runs = []
    for record in read_archive_runs(archive):
        name = record.run_dir.name
        if "-tune" in name:
            continue
        method = str(record.config.get("algo") or record.config["strategy"])
        unit = "env_steps" if method in RL_METHODS else "epoch"
        runs.append(StudyRun(name, short_task_name(record.config["task"]), method, int(record.config["seed"]),
                             x_values(record, unit), x_values(record, "env_steps"), record.columns["test_loss"]))
    return runs


def reference_losses(case: str, seeds: Iterable[int], num_test: int = 256) -> dict[int, float]:
    """Per seed, the batch-mean loss of zero control on the seed's test states: the score's reference."""
    import jax
    import jax.numpy as jnp
    import diffenvs
    from trainers.experiments.baseline import evaluation_states
    env = diffenvs.make(case, **case_env_params(case))
    zeros = jnp.zeros((env.num_steps(), *env.action_shape()))
    result = {}
    for seed in seeds:
        states = evaluation_states(case, case_env_params(case), seed, num_test)
        result[seed] = float(jnp.mean(jax.vmap(lambda state: env.episode_loss(state, zeros))(states)))
    return result


def budget_steps(case: str, method: str, budgets: dict[str, Any]) -> float:
    """The environment steps that ``method``'s budget T holds on ``case``."""
    if method in RL_METHODS:
        return float(_rl_units(case, method, budgets, 1.0))
    import diffenvs
    from trainers.presets import study_preset
    config = study_preset(case, hardest_level(canonical_name(case)))
    per_epoch = (config.num_train // config.batch_size) * config.batch_size * diffenvs.make(
        case, **case_env_params(case)).num_steps()
    return float(budget_units(case, method, budgets) * per_epoch)


def readings(runs: Sequence[StudyRun], budgets: dict[str, Any]) -> list[dict[str, Any]]:
    """Per run: its loss and score at the budget T (equal time), at LONG_FACTOR T for the longer runs, and
    at the case's equal-steps point (the smallest budget in environment steps among the case's methods)."""
    rows = []
    references = {case: reference_losses(case, sorted({run.seed for run in runs if run.case == case}))
                  for case in sorted({run.case for run in runs})}
    for run in runs:
        case_methods = sorted({other.method for other in runs if other.case == run.case})
        equal_steps = min(budget_steps(run.case, method, budgets) for method in case_methods)
        units = budget_units(run.case, run.method, budgets)
        if run.method in RL_METHODS:
            units = _rl_units(run.case, run.method, budgets, 1.0)
        reference = references[run.case][run.seed]
        row = {"case": run.case, "method": run.method, "seed": run.seed, "run": run.name,
               "reference_loss": reference, "loss_start": float(run.losses[0]),
               "loss_T": loss_at(run.units, run.losses, units),
               "loss_long": (loss_at(run.units, run.losses, _rl_units(run.case, run.method, budgets, LONG_FACTOR))
                             if run.name.endswith(LONG_SUFFIX) else math.nan),
               "equal_steps": equal_steps, "loss_steps": loss_at(run.env_steps, run.losses, equal_steps)}
        for key in ("T", "long", "steps"):
            row[f"score_{key}"] = 1.0 - row[f"loss_{key}"] / reference
        rows.append(row)
    return sorted(rows, key=lambda row: (CASES.index(row["case"]), METHODS.index(row["method"]), row["seed"]))


def _format(estimate: Any) -> str:
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"


def statistics_tables(rows: Sequence[dict[str, Any]], *, repetitions: int = REPETITIONS) -> tuple[str, dict]:
    """The Markdown tables (IQM of the score with 95 % intervals at equal time and equal steps, the
    median loss and P(combined > method)) and the estimates behind them, over the evaluation runs (one
    per method and seed; the longer runs are left out)."""
    from trainers.experiments.rl_statistics import iqm_intervals, probability_of_improvement
    estimates: dict[str, Any] = {}
    lines = ["| case | method | seeds | IQM score, equal time [95 % CI] | IQM score, equal steps [95 % CI] | "
             "median loss, equal time (min-max) | P(combined > method) [95 % CI] |",
             "|---|---|---|---|---|---|---|"]
    for case in CASES:
        # one run per method and seed: the longer runs repeat seeds 0-2 (they are read at their own budget)
        case_rows = [row for row in rows if row["case"] == case and not row["run"].endswith(LONG_SUFFIX)]
        if not case_rows:
            continue
        methods = [method for method in METHODS if any(row["method"] == method for row in case_rows)]
        result = {}
        for key in ("T", "steps"):
            scores = {method: np.array([row[f"score_{key}"] for row in case_rows if row["method"] == method
                                        and math.isfinite(row[f"score_{key}"])]) for method in methods}
            scores = {method: values for method, values in scores.items() if len(values)}
            result[key] = iqm_intervals(scores, repetitions=repetitions)
            if "combined" in scores and len(scores) > 1:
                result[f"improvement_{key}"] = probability_of_improvement(scores, "combined", repetitions=repetitions)
        estimates[case] = result
        for method in methods:
            losses = [row["loss_T"] for row in case_rows if row["method"] == method]
            improvement = result.get("improvement_T", {}).get(method)
            lines.append(
                f"| {case} | {method} | {len(losses)} | "
                f"{_format(result['T'][method]) if method in result['T'] else '–'} | "
                f"{_format(result['steps'][method]) if method in result['steps'] else '–'} | "
                f"{np.nanmedian(losses):.4g} ({np.nanmin(losses):.4g}-{np.nanmax(losses):.4g}) | "
                f"{_format(improvement) if improvement is not None else '–'} |")
    return "\n".join(lines) + "\n", estimates


SEPARATION_MARKERS = ("<!-- rl-study separations: written by diffenvs-rl-study report -->",
                      "<!-- end of rl-study separations -->")
READINGS = {"T": "equal time", "steps": "equal steps"}


def separations_table(estimates: dict[str, Any], seeds: dict[str, dict[str, int]]) -> str:
    """Markdown: per case and reading, each method followed by the methods whose IQM interval lies wholly
    below its own (only pairs whose intervals separate), and the seeds per method behind them."""
    lines = ["| case | reading | above (interval wholly above the ones listed) | seeds |", "|---|---|---|---|"]
    for case, result in estimates.items():
        counts = ", ".join(f"{method} {count}" for method, count in seeds[case].items())
        for key, reading in READINGS.items():
            intervals = result.get(key, {})
            ranked = sorted(intervals, key=lambda method: -intervals[method].value)
            above = [f"{method} > {', '.join(below)}" for method in ranked
                     if (below := [other for other in ranked if intervals[method].low > intervals[other].high])]
            lines.append(f"| {case} | {reading} | {'; '.join(above) or 'no two intervals separate'} | {counts} |")
    return "\n".join(lines) + "\n"


def write_report(archive: Path = ARCHIVE, budgets_path: Path = BUDGETS_JSON, *, out_csv: Path = RESULTS / "rl_comparison.csv",
                 out_table: Path = RESULTS / "rl_comparison.md", figure: Path = Path("docs/images/rl_comparison.png"),
                 page: Path | None = Path("docs/rl-comparison.md"),
                 protocol_page: Path | None = Path("docs/rl-protocol.md"), repetitions: int = REPETITIONS) -> str:
    """Read the archive, write the per-run readings (CSV), the statistics table and the separated pairs
    (Markdown, also into ``page`` between :data:`TABLE_MARKERS` and :data:`SEPARATION_MARKERS`) and the
    figure."""
    from trainers.experiments.plotting import csv_text
    budgets = load_budgets(budgets_path)
    runs = study_runs(archive)
    rows = readings(runs, budgets)
    columns = ("case", "method", "seed", "run", "reference_loss", "loss_start", "loss_T", "score_T", "loss_long",
               "score_long", "equal_steps", "loss_steps", "score_steps")
    out_csv.write_text(csv_text(rows, columns))
    table, estimates = statistics_tables(rows, repetitions=repetitions)
    seeds = {case: {method: len({row["seed"] for row in rows if row["case"] == case and row["method"] == method
                                 and not row["run"].endswith(LONG_SUFFIX)})
                    for method in METHODS if method in estimates[case]["T"]} for case in estimates}
    separations = separations_table(estimates, seeds)
    out_table.write_text(table + "\n" + separations)
    draw_figure(runs, rows, estimates, budgets, figure)
    if page is not None and page.exists():
        replace_between_markers(page, TABLE_MARKERS, table)
        replace_between_markers(page, SEPARATION_MARKERS, separations)
    if protocol_page is not None and protocol_page.exists():
        replace_between_markers(protocol_page, BUDGET_MARKERS, budgets_table(budgets))
        replace_between_markers(protocol_page, TUNING_MARKERS, tuning_table(read_tuning()))
    return table


BUDGET_MARKERS = ("<!-- rl-study budgets: written by diffenvs-rl-study report -->", "<!-- end of rl-study budgets -->")
TUNING_MARKERS = ("<!-- rl-study tuning: written by diffenvs-rl-study report -->", "<!-- end of rl-study tuning -->")


def budgets_table(budgets: dict[str, Any]) -> str:
    """Markdown: per case, T and each method's rate and budget in its own units and in environment steps."""
    lines = ["| case | T (single-core min) | method | rate (units per single-core s) | budget T | env steps in T |",
             "|---|---|---|---|---|---|"]
    for case in CASES:
        if case not in budgets["rates"] or "bptt" not in budgets["rates"][case]:
            continue
        for method in METHODS:
            if method not in budgets["rates"][case]:
                continue
            unit = "epochs" if method in GRADIENT_METHODS else "steps"
            units = _rl_units(case, method, budgets, 1.0) if method in RL_METHODS else budget_units(case, method, budgets)
            lines.append(f"| {case} | {budget_seconds(case, budgets) / 60:.1f} | {method} | "
                         f"{budgets['rates'][case][method]:.4g} {unit} | {units:,} {unit} | "
                         f"{budget_steps(case, method, budgets):.3g} |")
    return "\n".join(lines) + "\n"


def tuning_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: every tried setting with its rung, budget and test loss, the chosen one in bold."""
    from trainers.experiments.baseline import short_task_name
    chosen = {key: json.dumps(setting, sort_keys=True) for key, setting in best_settings(list(rows)).items()}
    lines = ["| case | method | setting | rung | env steps | test loss |", "|---|---|---|---|---|---|"]
    for row in rows:
        case = short_task_name(row["task"])
        mark = "**" if chosen.get((case, row["method"])) == row["setting"] and row["rung"] == str(len(RUNG_FRACTIONS) - 1) else ""
        lines.append(f"| {case} | {row['method']} | {mark}`{row['setting']}`{mark} | {row['rung']} | "
                     f"{int(row['budget']):,} | {float(row['final_test_loss']):.4g} |")
    return "\n".join(lines) + "\n"



TABLE_MARKERS = ("<!-- rl-study table: written by diffenvs-rl-study report -->", "<!-- end of rl-study table -->")


def replace_between_markers(page: Path, markers: tuple[str, str], text: str) -> None:
    """Replace what stands between the two marker lines of ``page`` with ``text`` (ValueError without them)."""
    content = page.read_text()
    start, end = content.find(markers[0]), content.find(markers[1])
    if start < 0 or end < start:
        raise ValueError(f"{page} must contain the lines {markers[0]!r} and {markers[1]!r}, in that order")
    head = content[:start + len(markers[0])]
    page.write_text(f"{head}\n{text}{content[end:]}")


FIGURE_START = 100
"""The curves start at T / FIGURE_START: time is on a log axis, so that the start of training and the
longer runs show on one plot."""


def draw_figure(runs: Sequence[StudyRun], rows: Sequence[dict[str, Any]], estimates: dict, budgets: dict[str, Any],
                out: Path) -> Path:
    """Per case: the median normalised loss over the evaluation seeds (min-max band) against single-core
    minutes, and dashed the median of the longer runs (left), and the IQM of the score with its interval per method at equal time and equal steps (right)."""
    from trainers.experiments.plotting import _colours, pyplot, save_figure
    plt = pyplot()
    cases = [case for case in CASES if case in estimates]
    figure, axes = plt.subplots(len(cases), 2, figsize=(11, 3.3 * len(cases)), squeeze=False)
    colours = _colours(list(METHODS))
    references = {(row["case"], row["seed"]): row["reference_loss"] for row in rows}
    for index, case in enumerate(cases):
        curve_axis, interval_axis = axes[index]
        for method in METHODS:
            members = [run for run in runs if run.case == case and run.method == method]
            rate = budgets["rates"][case].get(method)
            for longer in (False, True):
                group = [run for run in members if run.name.endswith(LONG_SUFFIX) == longer]
                if not group:
                    continue
                limit = (LONG_FACTOR if longer else 1.0) * budget_seconds(case, budgets) / 60.0
                grid = np.geomspace(budget_seconds(case, budgets) / 60.0 / FIGURE_START, limit, 200)
                curves = np.array([np.interp(grid, run.units / rate / 60.0,
                                             run.losses / references[(case, run.seed)], right=np.nan)
                                   for run in group])
                with np.errstate(all="ignore"):
                    median = np.nanmedian(curves, axis=0)
                label = f"{method} {LONG_FACTOR:g} T ({len(group)})" if longer else f"{method} ({len(group)})"
                curve_axis.plot(grid, median, color=colours[method], label=label,
                                linestyle="--" if longer else "-", linewidth=0.9 if longer else 1.5)
                if not longer:
                    curve_axis.fill_between(grid, np.nanmin(curves, axis=0), np.nanmax(curves, axis=0),
                                            color=colours[method], alpha=0.15, linewidth=0)
        curve_axis.axvline(budget_seconds(case, budgets) / 60.0, color="grey", linewidth=0.8, linestyle=":")
        curve_axis.set_yscale("log")
        curve_axis.set_xscale("log")
        curve_axis.set_xlabel("single-core minutes (log)")
        curve_axis.set_ylabel("test loss / zero-control loss")
        curve_axis.set_title(f"{case} (hardest level): median over seeds, min-max band")
        curve_axis.legend(fontsize=7)
        methods = [method for method in METHODS if method in estimates[case]["T"]]
        for position, method in enumerate(methods):
            for offset, key, marker in ((-0.15, "T", "o"), (0.15, "steps", "s")):
                estimate = estimates[case][key].get(method)
                if estimate is None:
                    continue
                interval_axis.errorbar(estimate.value, position + offset, xerr=[[estimate.value - estimate.low],
                                       [estimate.high - estimate.value]], fmt=marker, color=colours[method],
                                       capsize=3, markersize=4)
        interval_axis.set_yticks(range(len(methods)), methods)
        interval_axis.invert_yaxis()
        interval_axis.set_xlabel("IQM of 1 - loss / zero-control loss (o: equal time, s: equal steps)")
        interval_axis.set_title("95 % stratified-bootstrap intervals")
    figure.tight_layout()
    return save_figure(figure, out)


# ------------------------------------------------------------------------------------------ command line

def _parser() -> argparse.ArgumentParser:
    from trainers.cli import CommandParser

    parser = CommandParser(
        prog="diffenvs-rl-study",
        description="The RL study: tuned brax PPO and SAC, APG, and bptt, combined and shac at the hardest "
                    "levels, several seeds, equal single-core time (docs/rl-comparison.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    calibrate_parser = commands.add_parser("calibrate", help="measure each method's units per single-core second")
    calibrate_parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    calibrate_parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    calibrate_parser.add_argument("--seconds", type=float, default=20.0, help="CPU seconds measured per rate")
    calibrate_parser.add_argument("--jobs", type=int, default=2, help="measurements at a time, each on its own core")
    plan_parser = commands.add_parser("plan", help="print the runs and their estimated core-hours")
    plan_parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    run_parser = commands.add_parser("run", help="train every missing run (resumable), archiving each at once")
    run_parser.add_argument("out", type=Path, help="root of the run directories (not archived, e.g. runs/rl-study)")
    run_parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    run_parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each on its own core")
    commands.add_parser("report", help="the statistics table, the per-run readings and the figure from the archive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-rl-study``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_train":                  # one run, in a single-core subprocess
        spec = RunSpec(**json.loads(argv[1]))
        train_run(spec, Path(argv[2]))
        return 0
    if argv and argv[0] == "_rate":
        print(json.dumps(measure_rate(argv[1], argv[2], seconds=float(argv[3]))))
        return 0
    args = _parser().parse_args(argv)
    if args.command == "calibrate":
        calibrate(args.cases, args.methods, seconds=args.seconds, jobs=args.jobs)
        return 0
    try:
        budgets = load_budgets()
    except ValueError as error:
        print(f"diffenvs-rl-study: error: {error}", file=sys.stderr)
        return 2
    if args.command == "report":
        print(write_report(), end="")
        return 0
    ready = [case for case in args.cases if calibrated(case, budgets)]
    if ready:
        print(plan_table(budgets, ready, done_names(), read_tuning()), flush=True)
    for case in sorted(set(args.cases) - set(ready)):
        print(f"{case}: not calibrated yet (diffenvs-rl-study calibrate --cases {case})", flush=True)
    if args.command == "run":
        return 1 if run_study(args.out, cases=args.cases, jobs=args.jobs,
                              log=lambda text: print(text, flush=True)) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
