"""The RL comparison: brax PPO, SAC and APG against gradient strategies at equal wall time.

``run_comparison`` trains, for each case (task and complexity level) and each method, one run
directory under ``out``: RL methods with :func:`trainers.experiments.baseline.train_baseline` and a time budget,
gradient strategies with :func:`trainers.training.train` on the study protocol and the same budget
(``minutes``). Finished runs are skipped: gradient runs resume from their checkpoint, RL runs (which
brax cannot resume) are restarted when unfinished. ``comparison_table`` reads the run directories
(or a run archive, which keeps them in git) back and reports, per run, the test loss after 1 and 5
minutes (NaN, shown as "–", for a run that stopped before) and at the end of the budget, the best test loss, the environment steps and the wall time used.

Wall time: for RL runs the training time since brax's ``train`` was called (set-up and compilation
included, test-set evaluations excluded); for gradient runs the summed epoch times (compilation
excluded, the per-epoch evaluation of the full training and test sets included). Environment steps
count training steps only (not the test-set evaluations).
"""

from __future__ import annotations

import argparse
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from diffenvs.registry import canonical_name, is_builtin
from trainers import rundir
from trainers.experiments.archive import export_runs
from trainers.experiments.baseline import ALGOS, short_task_name, train_baseline
from trainers.checks import check_finite_positive
from trainers.experiments.plotting import RunRecord, csv_text, find_runs, plot_comparison, run_level, strategy_label, x_values
from trainers.plugins import add_import_flag, import_modules
from trainers.presets import COMPLEXITY_LEVELS, study_preset, task_preset
from trainers.strategies import parse_strategy, strategy_names
from trainers.config import run_name as config_run_name
from trainers.training import TrainConfig, strategy_fields, train

DEFAULT_CASES = ("cartpole:1", "cartpole:2", "cartpole:4", "guidance:0.01", "quantum:3")
"""The cases of the published comparison (issue 5): TASK:LEVEL."""
GRADIENT_STRATEGIES = ("bptt", "combined")
DEFAULT_METHODS = ("ppo", "sac", "apg", *GRADIENT_STRATEGIES)
GRADIENT_CLIP = "norm"
"""Clipping of the gradient runs (the study protocol otherwise), fixed before any comparison was run."""
MAX_EPOCHS = 1_000_000
"""The gradient runs' epoch limit: high enough that the wall-time budget always ends them first."""
TABLE_COLUMNS = ("task", "level", "method", "minutes", "loss_start", "loss_1min", "loss_5min", "loss_final",
                 "loss_best", "env_steps", "wall_seconds", "rows", "run_dir")
LAST_EVALUATIONS = 50
"""The equal-steps table also reports each run's median test loss over its last 50 evaluations."""


def parse_case(text: str) -> tuple[str, Any]:
    """``"cartpole:4"`` -> ("CartPole", 4): the task and its complexity level (poles, rc or target); a task
    outside the study (``"gymnax:Pendulum-v1"``, a registered name) -> (the name, None): no level."""
    if not is_builtin(str(text).partition(":")[0]):
        try:
            name = canonical_name(str(text))
        except ValueError as error:
            raise ValueError(f"cases: {text!r}: {error}") from None
        if not is_builtin(name):
            return name, None
    task, separator, level_text = str(text).partition(":")
    try:
        name = canonical_name(task)
    except ValueError as error:
        raise ValueError(f"cases: {text!r}: {error}") from None
    parameter, levels = COMPLEXITY_LEVELS[name]
    try:
        level = type(levels[0])(level_text) if separator else None
    except ValueError:
        level = None
    if level not in levels:
        raise ValueError(f"cases: {text!r} must be TASK:LEVEL with a level in {levels} ({parameter}) for {name}")
    return name, level


def _config(task: str, level: Any, method: str, seed: int) -> TrainConfig | dict[str, Any]:
    """The configuration of a comparison run: a TrainConfig for a gradient strategy, the identifying keys
    of the config record for an RL method."""
    if method in ALGOS:
        return {"task": short_task_name(task), "env_params": {COMPLEXITY_LEVELS[canonical_name(task)][0]: level},
                "algo": method, "seed": seed}
    fields = dict(**strategy_fields(method), clip=GRADIENT_CLIP, seed=seed, epochs=MAX_EPOCHS, checkpoint_every=50)
    return study_preset(task, level, **fields) if level is not None else task_preset(task, **fields)


def run_name(task: str, level: Any, method: str, seed: int) -> str:
    """The directory name of a comparison run (:func:`trainers.config.run_name`, as every command names
    its runs), e.g. ``cartpole-poles2-ppo-seed0``."""
    return config_run_name(_config(task, level, method, seed))


def run_dir_for(out: Path, task: str, level: Any, method: str, seed: int) -> Path:
    """The run directory of a comparison run under ``out``: ``out/`` :func:`run_name`, or the directory that
    already holds that run under another name (an earlier version's), found by its ``config.json``."""
    config = _config(task, level, method, seed)
    run_dir = out / config_run_name(config)
    if (run_dir / rundir.CONFIG_FILE).exists() or not out.is_dir():
        return run_dir
    if isinstance(config, TrainConfig):
        earlier = rundir.find_same_run(out, {**config.to_dict(), "controller": "study"})
    else:
        found = [path for path in rundir.find_run_dirs(out, task=task, level=level, strategy=method, seed=seed)
                 if path.parent == out and "algo" in (rundir.read_config(path) or {})]
        earlier = found[0] if found else None
    return earlier if earlier is not None else run_dir


def _check_methods(methods: Sequence[str]) -> list[str]:
    """The methods: RL algorithms, or any registered gradient strategy spelling (NAME, NAME:key=value)."""
    for method in methods:
        if method in ALGOS:
            continue
        try:
            parse_strategy(method)
        except ValueError:
            raise ValueError(f"methods: {method!r} is not one of {(*ALGOS, *GRADIENT_STRATEGIES)} nor another "
                             f"registered gradient strategy {strategy_names()}") from None
    return list(methods)


def _baseline_finished(run_dir: Path, budget_seconds: float) -> bool:
    config = rundir.read_config(run_dir)
    if config is None or config.get("time_budget_seconds") != budget_seconds:
        return False
    rows = rundir.read_metrics(run_dir)
    return bool(rows) and float(rows[-1].get("wall_seconds", 0.0)) >= budget_seconds


def run_comparison(out: str | Path, *, cases: Sequence[str] = DEFAULT_CASES,
                   methods: Sequence[str] = DEFAULT_METHODS, minutes: float = 20.0, seed: int = 0,
                   baseline_options: dict[str, dict[str, Any]] | None = None, quiet: bool = True,
                   log: Callable[[str], None] = print) -> list[Path]:
    """Train every (case, method) run missing under ``out`` with a budget of ``minutes`` of wall time.

    ``baseline_options`` maps an RL method to extra :func:`train_baseline` arguments (for example
    ``{"ppo": {"eval_every": 10_000}}``). Returns the run directories, in order.
    """
    parsed = [parse_case(case) for case in cases]
    methods = _check_methods(methods)
    check_finite_positive("minutes", minutes)
    budget_seconds = 60.0 * minutes
    out = Path(out)
    run_dirs = []
    for task, level in parsed:
        if level is None and any(method in ALGOS for method in methods):
            raise ValueError(f"methods: the RL methods {list(ALGOS)} train the study's tasks only, not {task!r}; "
                             f"give gradient strategies")
    for task, level in parsed:
        parameter = COMPLEXITY_LEVELS[task][0] if level is not None else None
        for method in methods:
            run_dir = run_dir_for(out, task, level, method, seed)
            run_dirs.append(run_dir)
            if method in ALGOS:
                if _baseline_finished(run_dir, budget_seconds):
                    log(f"{run_dir.name}: finished, skipped")
                    continue
                log(f"{run_dir.name}: {method} for {minutes:g} min")
                train_baseline(task, method, env_params={parameter: level}, seed=seed,
                               time_budget_seconds=budget_seconds, out=run_dir, overwrite=True, quiet=quiet,
                               **(baseline_options or {}).get(method, {}))
            else:
                config = _config(task, level, method, seed)
                log(f"{run_dir.name}: {method} (clip {GRADIENT_CLIP}) for {minutes:g} min")
                train(config, out=run_dir, minutes=minutes, quiet=quiet)
    return run_dirs


def _loss_at(positions: np.ndarray, losses: np.ndarray, limit: float) -> float:
    """The test loss of the last evaluation at or before ``limit`` (seconds or steps of training)."""
    index = np.searchsorted(positions, limit, side="right") - 1
    return float(losses[index]) if index >= 0 else math.nan


def _loss_within(positions: np.ndarray, losses: np.ndarray, limit: float) -> float:
    """:func:`_loss_at` for a run that trained at least ``limit`` (seconds or steps); NaN for one that
    stopped before it (its last loss is not a loss at ``limit``)."""
    return _loss_at(positions, losses, limit) if len(positions) and positions[-1] >= limit else math.nan


def _cell(value: float) -> str:
    """A loss in a markdown table: 3 significant digits, "–" for NaN (a budget the run never reached)."""
    return "–" if math.isnan(value) else f"{value:.3g}"


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by task, level and method (RL methods first, in :data:`DEFAULT_METHODS` order)."""
    order = {method: index for index, method in enumerate(DEFAULT_METHODS)}
    return sorted(rows, key=lambda row: (row["task"], -math.inf if row["level"] is None else float(row["level"]),
                                         order.get(row["method"], 99), row["method"]))


def _identity(record: RunRecord) -> dict[str, Any]:
    """The case and method of a run: task (canonical: baselines record the short name), level, method."""
    return {"task": canonical_name(record.config["task"]), "level": run_level(record.config),
            "method": strategy_label(record.config)}


def comparison_table(runs: Sequence[str | Path | RunRecord]) -> list[dict[str, Any]]:
    """One row per run found in ``runs`` (paths, or records already read; see :data:`TABLE_COLUMNS`),
    sorted by task, level, method."""
    rows = []
    for record in find_runs(runs):
        config = record.config
        losses = record.columns["test_loss"]
        seconds = x_values(record, "wall_seconds")
        steps = x_values(record, "env_steps")
        budget = config.get("time_budget_seconds")
        rows.append({**_identity(record),
                     "minutes": round(budget / 60.0, 3) if budget else round(float(seconds[-1]) / 60.0, 3),
                     "loss_start": float(losses[0]), "loss_1min": _loss_within(seconds, losses, 60.0),
                     "loss_5min": _loss_within(seconds, losses, 300.0), "loss_final": float(losses[-1]),
                     "loss_best": float(np.nanmin(losses)), "env_steps": int(steps[-1]),
                     "wall_seconds": float(seconds[-1]), "rows": len(losses), "run_dir": str(record.run_dir)})
    return _sorted(rows)


def _step_counts(step_counts: Sequence[float]) -> list[int]:
    """The counts as integers; a clear error for a count that is not a finite number >= 1."""
    for count in step_counts:
        if not (isinstance(count, numbers.Real) and math.isfinite(count) and count >= 1):
            raise ValueError(f"at-steps: {count!r} must be a finite number of environment steps >= 1")
    return [int(count) for count in step_counts]


def steps_table(runs: Sequence[str | Path | RunRecord], step_counts: Sequence[float]) -> list[dict[str, Any]]:
    """Test loss at equal numbers of training environment steps: one row per run found in ``runs``
    (paths, or records already read).

    For each count in ``step_counts`` (``steps_<count>``): the test loss of the run's last evaluation
    at or before that many training steps, NaN when the run stopped before reaching it. Also the
    run's total steps and the median test loss of its last :data:`LAST_EVALUATIONS` evaluations
    (``loss_last_median``). Sorted like :func:`comparison_table`.
    """
    counts = _step_counts(step_counts)
    rows = []
    for record in find_runs(runs):
        losses = record.columns["test_loss"]
        steps = x_values(record, "env_steps")
        row = {**_identity(record), "env_steps": int(steps[-1])}
        for count in counts:
            row[f"steps_{count}"] = _loss_within(steps, losses, count)
        row["loss_last_median"] = float(np.nanmedian(losses[-LAST_EVALUATIONS:]))
        rows.append(row)
    return _sorted(rows)


def steps_markdown(rows: Sequence[dict[str, Any]], step_counts: Sequence[float]) -> str:
    """The rows of :func:`steps_table` as a markdown table."""
    counts = _step_counts(step_counts)
    header = " | ".join(f"{count:.3g} steps" for count in counts)
    lines = [f"| task | level | method | {header} | env steps | median of the last {LAST_EVALUATIONS} evaluations |",
             "|---|---|---|" + "---|" * (len(counts) + 2)]
    for row in rows:
        cells = " | ".join(_cell(row[f"steps_{count}"]) for count in counts)
        lines.append(f"| {row['task']} | {row['level']} | {row['method']} | {cells} | {row['env_steps']:.3g} | "
                     f"{row['loss_last_median']:.3g} |")
    return "\n".join(lines) + "\n"


def write_steps_table(rows: Sequence[dict[str, Any]], step_counts: Sequence[float], out: str | Path) -> Path:
    """The rows of :func:`steps_table` as CSV at ``out`` and as markdown beside it (``.md``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = ["task", "level", "method", "env_steps", *(f"steps_{count}" for count in _step_counts(step_counts)),
               "loss_last_median"]
    out.write_text(csv_text(rows, columns))
    out.with_suffix(".md").write_text(steps_markdown(rows, step_counts))
    return out


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| task | level | method | test loss: start | 1 min | 5 min | end | best | env steps | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        losses = " | ".join(_cell(row[key]) for key in ("loss_start", "loss_1min", "loss_5min", "loss_final",
                                                          "loss_best"))
        lines.append(f"| {row['task']} | {row['level']} | {row['method']} | {losses} | {row['env_steps']:.3g} | "
                     f"{row['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], out: str | Path) -> Path:
    """The rows as CSV at ``out`` and as markdown beside it (``.md``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(csv_text(rows, TABLE_COLUMNS))
    out.with_suffix(".md").write_text(markdown_table(rows))
    return out


COMPARE_FLAGS = {"at-steps": "--at-steps", "cases": "--cases", "methods": "--methods", "minutes": "--minutes",
                 "out": "OUT", "seed": "--seed", "paths": "--archive", "run_dirs": "OUT"}
"""Argument names in the library's messages and the flags of ``diffenvs-compare`` that set them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-compare``."""
    from trainers.cli import CommandParser, HelpFormatter, _check_out_path, check_file_path, flag_message

    import_modules(argv, "diffenvs-compare")
    parser = CommandParser(
        prog="diffenvs-compare",
        description="Run the RL comparison: for each case, the methods (by default brax PPO, SAC and APG and the "
                    f"gradient strategies {' and '.join(GRADIENT_STRATEGIES)}; any registered strategy, such as shac "
                    f"or ivw:population=32, may be added; study protocol, clip {GRADIENT_CLIP}) with the same wall-time "
                    "budget, one run directory each under OUT (finished runs are skipped); then print the table and "
                    "draw the figure (test loss against wall time and environment steps).",
        formatter_class=HelpFormatter)
    parser.add_argument("out", type=Path, help="output root (one run directory per case and method)")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES),
                        help="TASK:LEVEL cases of the study's tasks, or tasks outside the study (gymnax:ENV_ID, "
                             "brax:NAME, a registered name; gradient strategies only, with the task's preset)")
    add_import_flag(parser)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"among {(*ALGOS, *GRADIENT_STRATEGIES)} or any gradient strategy of "
                             f"{strategy_names()} (options as NAME:key=value,...)")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-time budget of every run")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (and of the test set)")
    parser.add_argument("--table", type=Path, default=None, help="write the table as CSV (and .md beside it)")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure (PNG)")
    parser.add_argument("--report-only", action="store_true", help="train nothing; table and figure of OUT")
    parser.add_argument("--archive", type=Path, default=None, metavar="ARCHIVE",
                        help="run archive (.csv.gz) that keeps the comparison: the runs of these cases and methods "
                             "found in OUT are merged into it (replacing runs of the same name), and the table and "
                             "figure show every run of ARCHIVE")
    parser.add_argument("--at-steps", nargs="+", type=float, default=None, metavar="N",
                        help="also print the test loss of each run of these cases at N training environment steps "
                             "(the last evaluation at or before N; for example 1e6 2e7) and the median of its last "
                             f"{LAST_EVALUATIONS} evaluations; with --table, written beside it as NAME_steps.csv/.md")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for flag, path in (("--table", args.table), ("--plot", args.plot), ("--archive", args.archive)):
        problem = check_file_path(flag, path)
        if problem:
            parser.error(problem)
    problem = _check_out_path(args.out)
    if problem:
        parser.error(problem.replace("--out: ", "OUT: ").replace("choose another --out", "choose another OUT"))
    try:
        for case in args.cases:
            parse_case(case)
        _check_methods(args.methods)
        check_finite_positive("--minutes", args.minutes)
        _step_counts(args.at_steps or [])
        if args.report_only:
            found = [run_dir_for(args.out, *parse_case(case), method, args.seed)
                     for case in args.cases for method in args.methods]
            run_dirs = [run_dir for run_dir in found if (run_dir / rundir.CONFIG_FILE).exists()]
        else:
            run_dirs = run_comparison(args.out, cases=args.cases, methods=args.methods, minutes=args.minutes,
                                      seed=args.seed, quiet=args.quiet,
                                      log=lambda text: print(f"diffenvs-compare: {text}", flush=True))
        sources: list[Path] = run_dirs
        if args.archive is not None:
            if run_dirs:
                export_runs(run_dirs, args.archive, merge=True)
                print(f"archive: merged {len(run_dirs)} runs into {args.archive}")
            if args.archive.exists():
                sources = [args.archive]
        if not sources:
            raise ValueError(f"out: no comparison runs in {args.out}")
        records = find_runs(sources)
        rows = comparison_table(records)
        if args.at_steps is not None:
            cases = {parse_case(case) for case in args.cases}
            step_rows = [row for row in steps_table(records, args.at_steps) if (row["task"], row["level"]) in cases]
    except ValueError as error:
        parser.error(flag_message(str(error), COMPARE_FLAGS))
    except OSError as error:
        parser.error(f"--out/--archive: cannot write {error.filename or ''}: {error.strerror or error}")
    except KeyboardInterrupt:
        print("\ndiffenvs-compare: interrupted; run the same command again to continue (finished runs are "
              "skipped)", file=sys.stderr)
        return 130
    print(markdown_table(rows), end="")
    try:
        if args.table is not None:
            print(f"table: {write_table(rows, args.table)}")
        if args.at_steps is not None:
            print(steps_markdown(step_rows, args.at_steps), end="")
            if args.table is not None:
                steps_path = args.table.with_name(f"{args.table.stem}_steps.csv")
                print(f"table: {write_steps_table(step_rows, args.at_steps, steps_path)}")
        if args.plot is not None:
            print(f"plot: {plot_comparison(records, args.plot)}")
    except OSError as error:
        parser.error(f"--table/--plot: cannot write {error.filename or ''}: {error.strerror or error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
