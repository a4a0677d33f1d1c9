"""Command-line tools: ``diffenvs-train``, ``diffenvs-plot`` and ``diffenvs-eval`` (and the helpers the other
commands share).

Every error a user can cause from the command line is reported by argparse as one line naming the flag
and what it allows; no input ends in a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn, Sequence

from diffenvs.registry import ALIASES, canonical_name, is_builtin
from trainers.plugins import add_import_flag, import_modules
from trainers.strategies import strategy_names
from trainers.training import CLIP_MODES, OPTIMIZERS, PRECISIONS

TASKS = ("cartpole", "guidance", "quantum")
LEVEL_FLAGS = {"cartpole": ("--poles", "num_poles", "poles"), "guidance": ("--rc", "regularization", "rc"),
               "quantum": ("--target", "target_state", "target")}
"""Per task: the flag of its complexity level, the environment parameter it sets, its run-name label."""
ENV_FLAGS = {"num_poles": "--poles", "loss_mode": "--loss-mode", "regularization": "--rc",
             "num_drivers": "--drivers", "num_evaders": "--evaders", "target_state": "--target"}
"""Environment parameters and the flags that set them."""
FIELD_FLAGS = {"num_train": "--train-size", "num_test": "--test-size", "batch_size": "--batch-size",
               "epochs": "--epochs", "checkpoint_every": "--checkpoint-every", "learning_rate": "--lr",
               "clip_threshold": "--clip-threshold", "truncate_every": "--truncate-every",
               "es_population": "--es-population", "es_noise": "--es-noise", "seed": "--seed",
               "optimizer": "--optimizer", "clip": "--clip", "strategy": "--strategy", "task": "task",
               "minutes": "--minutes", "out": "--out", "name": "TASK: name", **ENV_FLAGS}
"""TrainConfig fields (and environment parameters) and the flags of ``diffenvs-train`` that set them."""
class CommandParser(argparse.ArgumentParser):
    """The argument parser of every ``diffenvs-*`` command: an error is one line,
    ``PROG: error: MESSAGE (see PROG --help)``, without argparse's usage block before it; exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" once: not for required flags, flags without a default (None), switches,
    or help texts that already state their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.required or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
                or action.default == []
                or "default" in text
                or isinstance(action, argparse._HelpAction)):
            return text
        return text + " (default: %(default)s)"


def flag_message(message: str, flags: dict[str, str] | None = None) -> str:
    """``message`` (a library ValueError) with parameter names replaced by the command-line flags that
    set them (``flags``, default :data:`FIELD_FLAGS`): "learning_rate must be ..." -> "--lr must be ...".

    The leading name is replaced when it is a key of ``flags``; further names only when they contain an
    underscore (plain words such as "epochs" also occur as prose)."""
    flags = FIELD_FLAGS if flags is None else flags
    for pattern, flag in ((r"^es: population\b", "--es-population (or es:P)"), (r"^es: noise\b", "--es-noise"),
                          (r"^truncated: every\b", "--truncate-every (or truncated:K)")):
        message = re.sub(pattern, flag, message)
    names = sorted(flags, key=len, reverse=True)
    start = 0
    first = re.match("(" + "|".join(map(re.escape, names)) + r")(?=[\s:=]|$)", message)
    if first:
        message = flags[first.group(1)] + message[first.end():]
        start = len(flags[first.group(1)])
    compound = [re.escape(name) for name in names if "_" in name]
    if compound:
        rest = re.sub(r"(?<![\w-])(" + "|".join(compound) + r")(?!\w)", lambda match: flags[match.group(1)],
                      message[start:])
        message = message[:start] + rest
    message = message.replace("overwrite=True (--overwrite)", "--overwrite")
    return message.replace("overwrite=True", "--overwrite").replace("choose another directory",
                                                                       "choose another --out")


def _train_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="diffenvs-train",
        description="Train a controller by backpropagating through rollouts of a diffenvs environment, "
                    "write a run directory (config.json, metrics.csv, checkpoint.npz) and plot its test "
                    "loss. Running it again on an existing run directory resumes the run; on a finished "
                    "one it says so (a larger --epochs continues it).",
        formatter_class=HelpFormatter)
    parser.add_argument("task", nargs="?", default="cartpole",
                        help="the control problem: cartpole, guidance, quantum, gymnax:ENV_ID, brax:NAME or a name "
                             "registered with diffenvs.register (e.g. by a module given to --import)")
    add_import_flag(parser)
    level = parser.add_argument_group("complexity and environment")
    level.add_argument("--env-param", action="append", default=[], metavar="NAME=VALUE",
                       help="an environment parameter (JSON value, repeatable), e.g. --env-param num_steps=50; "
                            "for any task (the study's tasks also have the flags below)")
    level.add_argument("--poles", type=int, default=None, help="cart-pole: number of poles (study: 1..4; default: 1)")
    level.add_argument("--rc", type=float, default=None,
                       help="guidance: control regularisation rc (study: 1, 0.1, 0.01, 0.001; default: 0.01)")
    level.add_argument("--drivers", type=int, default=None, help="guidance: number of drivers (default: 2)")
    level.add_argument("--evaders", type=int, default=None, help="guidance: number of evaders (default: 4)")
    level.add_argument("--target", type=int, default=None,
                       help="quantum: target eigenstate, 1 = ground state (study: 3, 4, 5; default: 3)")
    level.add_argument("--loss-mode", choices=("final", "continuous"), default=None,
                       help="cart-pole: score only the final state (the study's) or every step (default: final)")
    method = parser.add_argument_group("gradient strategy and optimisation")
    method.add_argument("--strategy", default="combined", metavar="STRATEGY",
                        help=f"gradient strategy: one of {', '.join(strategy_names())}; options as NAME:VALUE "
                             "(truncated:10 cuts every 10 steps, es:64 uses 64 perturbations) or "
                             "NAME:key=value,key=value (see docs/strategies.md)")
    method.add_argument("--truncate-every", type=int, default=None,
                        help="truncated: steps between cuts (the same as --strategy truncated:K)")
    method.add_argument("--es-population", type=int, default=None,
                        help="es: perturbations per update, even (the same as --strategy es:P; default: 32)")
    method.add_argument("--es-noise", type=float, default=None, help="es: perturbation scale σ (default: 0.02)")
    method.add_argument("--optimizer", choices=sorted(OPTIMIZERS),
                        default="adam", help="optimizer")
    method.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 0.001, or the task's preset)")
    method.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="floating-point precision of the environment, network, optimizer and metrics")
    method.add_argument("--gradient-variance", action="store_true",
                        help="also log the variance of the per-episode gradients within each batch (metrics.csv "
                             "column gradient_variance; about one more backward pass per batch)")
    method.add_argument("--clip", choices=CLIP_MODES, default="none",
                        help="clip the update by value or by global norm before the optimizer")
    method.add_argument("--clip-threshold", type=float, default=1.0, help="clipping threshold")
    data = parser.add_argument_group("data and schedule")
    data.add_argument("--epochs", type=int, default=None,
                      help="epochs (the study runs 1000; a task outside the study defaults to its preset's); a "
                           "larger value on a finished run continues it (default: 30)")
    data.add_argument("--minutes", type=float, default=None,
                      help="wall-time budget: stop after the first epoch at which the run's training time "
                           "(summed epoch times, compilation excluded, across resumes) reaches it, or at "
                           "--epochs; for comparisons at equal wall time (default: no budget)")
    data.add_argument("--batch-size", type=int, default=None,
                      help="initial states per update (default: 8, or the task's preset)")
    data.add_argument("--train-size", type=int, default=None,
                      help="training initial states (default: 256, or the task's preset)")
    data.add_argument("--test-size", type=int, default=None,
                      help="test initial states (default: 256, or the task's preset)")
    data.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and strategy")
    run = parser.add_argument_group("run directory")
    run.add_argument("--out", type=Path, default=None,
                     help="run directory (default: runs/TASK-LEVEL-STRATEGY-CLIP-seedSEED, e.g. "
                          "runs/cartpole-poles2-combined-none-seed0, followed by -HASH, 8 hex digits, when "
                          "other options than --epochs differ from their defaults; diffenvs-runs finds runs "
                          "by their options)")
    run.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    run.add_argument("--resume", action="store_true",
                     help="require an existing run directory to resume (resuming is automatic otherwise)")
    run.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    run.add_argument("--wait", action="store_true",
                     help="if another process is training the run in --out, wait for it instead of exiting")
    run.add_argument("--no-plot", action="store_true", help="do not write test_loss.png")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _env_params(args: argparse.Namespace) -> dict:
    """The environment parameters given by the complexity flags of ``args`` (those of ``args.task``)
    and by ``--env-param``; ValueError naming a flag that belongs to another task."""
    options = {"cartpole": {"num_poles": args.poles, "loss_mode": args.loss_mode},
               "guidance": {"regularization": args.rc, "num_drivers": args.drivers, "num_evaders": args.evaders},
               "quantum": {"target_state": args.target}}
    task = short_task(args.task)
    for name_of_task, values in options.items():
        if name_of_task != task:
            for name, value in values.items():
                if value is not None:
                    raise ValueError(f"{ENV_FLAGS[name]} applies to the {name_of_task} task, not to {args.task}")
    params = {name: value for name, value in options.get(task, {}).items() if value is not None}
    for name, value in parse_env_params(getattr(args, "env_param", [])).items():
        if name in params:
            raise ValueError(f"--env-param {name} repeats {ENV_FLAGS.get(name, 'another flag')}")
        params[name] = value
    return params


def parse_env_params(items: Sequence[str]) -> dict[str, Any]:
    """``--env-param NAME=VALUE`` items as a dict (JSON values; text that is not JSON stays text)."""
    import json
    params: dict[str, Any] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"--env-param expects NAME=VALUE, got {item!r}")
        if name in params:
            raise ValueError(f"--env-param: {name} is given twice")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return params


def short_task(task: str) -> str:
    """The short name of a built-in task ("cartpole"), or ``task`` itself for any other."""
    if is_builtin(task):
        return {name: alias for alias, name in ALIASES.items()}[canonical_name(task)]
    return task


def task_directory_name(task: str) -> str:
    """``task`` as part of a directory name: the short name of a built-in task, other names with every
    character but letters, digits, '.', '_' and '-' replaced by '-' (``gymnax:Pendulum-v1`` ->
    ``gymnax-Pendulum-v1``)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in short_task(task))


def _environment_defaults(task: str) -> dict[str, Any]:
    import diffenvs
    return dataclasses.asdict(diffenvs.make(task).default_params)


def canonical_env_params(task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The environment parameters a run records: always the task's level parameter (its default if not
    given), and the other given parameters that differ from their defaults. So ``diffenvs-train`` and
    ``diffenvs-train --poles 1`` are the same run. For a task outside the study: ``given`` as it is."""
    if not is_builtin(task):
        return dict(given)
    task = short_task(task)
    defaults = _environment_defaults(task)
    parameter = LEVEL_FLAGS[task][1]
    params = {parameter: given.get(parameter, defaults[parameter])}
    params.update({name: value for name, value in given.items()
                   if name != parameter and value != defaults.get(name)})
    return params


def _strategy_fields(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields of ``--strategy`` (the sweep's spellings) with --truncate-every, --es-population
    and --es-noise; ValueError naming the flag on a bad or contradictory value."""
    from trainers.experiments.sweep import _parse_strategy
    try:
        fields = _parse_strategy(args.strategy)
    except ValueError as error:
        message = str(error).replace("strategies: each must be one of", "--strategy must be one of")
        message = re.sub(r"^strategies: (strategy: |strategy (?=must))?", "--strategy: ", message)
        raise ValueError(message.replace("--strategy: must", "--strategy must")) from None
    strategy = fields["strategy"]
    if args.truncate_every is not None:
        if strategy != "truncated":
            raise ValueError(f"--truncate-every applies to --strategy truncated, not to {args.strategy!r}")
        if fields.get("truncate_every", args.truncate_every) != args.truncate_every:
            raise ValueError(f"--truncate-every {args.truncate_every} contradicts --strategy {args.strategy}")
        fields["truncate_every"] = args.truncate_every
    if strategy == "truncated" and "truncate_every" not in fields:
        raise ValueError("--strategy truncated needs the steps between cuts: --strategy truncated:K "
                         "or --truncate-every K (an integer >= 1)")
    for flag, field, value in (("--es-population", "es_population", args.es_population),
                               ("--es-noise", "es_noise", args.es_noise)):
        if value is None:
            continue
        if strategy != "es":
            raise ValueError(f"{flag} applies to --strategy es, not to {args.strategy!r}")
        if fields.get(field, value) != value:
            raise ValueError(f"{flag} {value} contradicts --strategy {args.strategy}")
        fields[field] = value
    return fields


def default_run_dir(config: Any, root: Path = Path("runs")) -> Path:
    """``root/NAME`` with NAME from :func:`trainers.config.run_name` (``TASK-LEVEL-STRATEGY-CLIP-seedSEED``
    and a hash of the other options that differ from their defaults), or the directory under ``root``
    that already holds the same run under another name (an earlier version's naming), to resume it there.
    Different settings never share a directory."""
    from trainers import rundir
    from trainers.config import run_name
    out = root / run_name(config)
    if not (out / rundir.CONFIG_FILE).exists() and root.is_dir():
        earlier = rundir.find_same_run(root, {**config.to_dict(), "controller": "study"})
        out = earlier if earlier is not None else out
    return out


def _check_out_path(out: Path) -> str | None:
    """Why ``out`` cannot be a run directory (a file, or under a file), or None."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            where = "" if path == out else f" (its parent {path} is a file)"
            return f"--out: {out} is not a directory{where}; choose another --out"
    return None


def check_file_path(flag: str, path: Path | None) -> str | None:
    """Why ``path`` (a file to write, given by ``flag``) cannot be written: a directory, or under a
    file; None if it can be tried."""
    if path is None:
        return None
    if path.is_dir():
        return f"{flag}: {path} is a directory; give a file name"
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return f"{flag}: {path} cannot be written, its parent {parent} is a file"
    return None


def _checkpoint_epoch(out: Path) -> int | None:
    """The epoch of ``out``'s checkpoint, None without one; ValueError if it cannot be read."""
    from trainers import rundir
    try:
        return rundir.checkpoint_epoch(out)
    except (OSError, rundir.RunDirError) as error:
        raise ValueError(f"--out: {error}; or pass --overwrite to start the run again") from None


def _existing_run(out: Path, record: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """(the config of the run in ``out`` or None, the fields other than epochs in which it differs from
    ``record``); ValueError if ``out`` holds an unreadable config.json."""
    from trainers import rundir
    try:
        existing = rundir.read_config(out)
    except (OSError, ValueError) as error:
        raise ValueError(f"--out: {out}/{rundir.CONFIG_FILE} cannot be read ({error}); pass --overwrite to "
                         f"start the run again, or choose another --out") from None
    if existing is None:
        return None, []
    from trainers.engine import differing_keys
    ignored = {"epochs", "diffenvs_version"}     # record (made before train) has no version field
    return existing, [key for key in differing_keys(existing, record) if key not in ignored]


def _data_defaults(task: str) -> dict[str, Any]:
    """The defaults of --epochs, --batch-size, --train-size, --test-size and --lr for ``task``: those of
    :class:`TrainConfig` for the study's tasks, the task's preset for others
    (:func:`trainers.presets.task_preset`)."""
    from trainers.presets import task_preset
    from trainers.training import TrainConfig
    config = TrainConfig() if is_builtin(task) else task_preset(task)
    return {"epochs": config.epochs, "batch_size": config.batch_size, "train_size": config.num_train,
            "test_size": config.num_test, "lr": config.learning_rate}


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-train``."""
    import_modules(argv, "diffenvs-train")
    parser = _train_parser()
    args = parser.parse_args(argv)
    from trainers.checks import check_finite_positive
    from trainers.rundir import RunDirBusyError
    from trainers.training import NonFiniteError, TrainConfig, train
    try:
        task = canonical_name(args.task)
        for name, value in _data_defaults(task).items():
            if getattr(args, name) is None:
                setattr(args, name, value)
        env_params = _env_params(args)
        if not is_builtin(task):
            from trainers.presets import task_preset
            env_params = {**task_preset(task).env_params, **env_params}
        env_params = canonical_env_params(task, env_params)
        config = TrainConfig(task=ALIASES.get(args.task, task), env_params=env_params, **_strategy_fields(args),
                             optimizer=args.optimizer, learning_rate=args.lr, clip=args.clip,
                             clip_threshold=args.clip_threshold, num_train=args.train_size,
                             num_test=args.test_size, batch_size=args.batch_size, epochs=args.epochs,
                             seed=args.seed, checkpoint_every=args.checkpoint_every, precision=args.precision,
                             gradient_variance=args.gradient_variance)
        config.make_env()
        if args.minutes is not None:
            check_finite_positive("--minutes", args.minutes)
    except ValueError as error:
        parser.error(flag_message(str(error)))
    out = args.out or default_run_dir(config)
    problem = _check_out_path(out)
    if problem:
        parser.error(problem)
    if args.resume and not (out / "config.json").exists():
        parser.error(f"--resume: {out} holds no run to resume")
    if not args.overwrite:
        try:
            record = {**config.to_dict(), "controller": "study"}
            existing, changed = _existing_run(out, record)
            if existing is not None and changed:
                raise ValueError(f"--out: {out} holds a run with a different configuration (differs in {changed}); "
                                 f"choose another --out or pass --overwrite")
            epoch = _checkpoint_epoch(out) if existing is not None else None
        except ValueError as error:
            parser.error(str(error))
        if epoch is not None and epoch >= args.epochs:
            plot = out / "test_loss.png"
            where = f"{out / 'metrics.csv'}" + (f" and {plot}" if plot.exists() else "")
            print(f"diffenvs-train: {out} is finished (epoch {epoch}, --epochs {args.epochs}); its results are in "
                  f"{where}; pass a larger --epochs to continue it")
            return 0
    if not args.quiet:
        print(f"diffenvs-train: {args.task} {config.env_params} strategy={args.strategy} "
              f"clip={config.clip} epochs={config.epochs} -> {out}", flush=True)
    try:
        result = train(config, out=out, quiet=args.quiet, overwrite=args.overwrite, minutes=args.minutes,
                       wait=args.wait)
    except RunDirBusyError as error:
        print(f"diffenvs-train: {error}", file=sys.stderr)
        return 4
    except NonFiniteError as error:
        print(f"diffenvs-train: {error}", file=sys.stderr)
        return 3
    except ValueError as error:
        parser.error(flag_message(str(error)))
    except OSError as error:
        parser.error(f"--out: cannot write the run directory {out}: {error.strerror or error}")
    except KeyboardInterrupt:
        print(f"\ndiffenvs-train: interrupted; run the same command again to resume from the last checkpoint "
              f"in {out}", file=sys.stderr)
        return 130
    last = result.metrics[-1]
    print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4g}, test loss {last['test_loss']:.4g}")
    if not args.no_plot:
        from trainers.experiments.plotting import plot_runs
        figure = plot_runs([out], out / "test_loss.png")
        print(f"plot: {figure}")
    return 0


PLOT_FLAGS = {"out": "--out", "last": "--last", "reach": "--reach", "smooth": "--smooth", "x": "--x", "run_dirs": "RUNS",
              "paths": "RUNS", "task": "--study"}
"""Argument names of the plotting functions and the flags of ``diffenvs-plot`` that set them."""


def plot_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-plot``."""
    import_modules(argv, "diffenvs-plot")
    parser = CommandParser(
        prog="diffenvs-plot", description="Draw the study-style figure (test loss on a log scale, one panel per "
        "task and level, one colour per strategy, one line style per clipping mode) for run directories, the "
        "study's figure for a task from a sweep (--study: one panel per complexity level) and a summary table "
        "(--table).",
        formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run directories, folders holding run directories (e.g. a sweep's output root), or "
                             "run archives (.csv.gz, from diffenvs-sweep OUT --export)")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG file to write (default: test_loss.png, or study_TASK.png with --study)")
    parser.add_argument("--smooth", type=int, default=None,
                        help="moving-average window in rows (default: 1, or with --study a tenth of each run, "
                             "at most 30; --table reads --reach from the unsmoothed loss)")
    parser.add_argument("--x", choices=("epoch", "env_steps", "wall_seconds"), default=None,
                        help="x axis: epochs, environment steps, or cumulative wall time (default: epoch, or "
                             "env_steps when RL baseline runs, which have no epochs, are among the runs)")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--study", metavar="TASK", default=None,
                        help="draw the study's figure for TASK (cartpole, guidance, quantum): a panel per level")
    parser.add_argument("--table", type=Path, default=None, metavar="CSV",
                        help="write the summary table (CSV, CSV_runs.csv, and markdown .md) and print it; "
                             "no figure unless --out or --study is given")
    parser.add_argument("--last", type=int, default=50, help="summary table: epochs at the end to take the median of")
    parser.add_argument("--reach", type=float, default=0.01,
                        help="summary table: report the first epoch at which the test loss is below this")
    add_import_flag(parser)
    args = parser.parse_args(argv)
    if args.smooth is not None and args.smooth < 1:
        parser.error(f"--smooth must be an integer >= 1, got {args.smooth}")
    for flag, path in (("--out", args.out), ("--table", args.table)):
        problem = check_file_path(flag, path)
        if problem:
            parser.error(problem)
    from trainers.experiments.plotting import plot_runs, plot_study, summary_table
    try:
        if args.study is not None:
            from diffenvs.registry import canonical_name
            try:
                canonical_name(args.study)
            except ValueError as error:
                raise ValueError(f"--study: {error}") from None
        if args.table is not None:
            _, _, markdown = summary_table(args.runs, args.table, last=args.last, reach=args.reach,
                                         smooth=args.smooth)
            print(markdown, end="")
            print(f"table: {args.table}")
        if args.study is not None:
            out = args.out or Path(f"study_{args.study}.png")
            figure = plot_study(args.runs, args.study, out, smooth=args.smooth, x=args.x, title=args.title)
            print(f"plot: {figure}")
        elif args.table is None or args.out is not None:
            figure = plot_runs(args.runs, args.out or Path("test_loss.png"), smooth=args.smooth or 1,
                               title=args.title, x=args.x)
            print(f"plot: {figure}")
    except ValueError as error:
        parser.error(flag_message(str(error), PLOT_FLAGS))
    except OSError as error:
        parser.error(f"--out/--table: cannot write {error.filename or ''}: {error.strerror or error}")
    return 0


SWEEP_FLAGS = {"name": "--tasks: name", "tasks": "--tasks", "level": "--levels", "levels": "--levels",
               "strategies": "--strategies", "clips": "--clips", "seeds": "--seeds", "part": "--part",
               "max_group": "--max-group", "options/vary": "--set/--vary", "spec": "the grid"}
"""Names in the messages of :mod:`trainers.experiments.sweep` and the flags of ``diffenvs-sweep`` that set them."""


def _one_line_warning(prog: str, show: Any) -> Any:
    """A ``warnings.showwarning`` that prints a :class:`~trainers.engine.DeviceCountWarning` as one line
    ``PROG: warning: MESSAGE`` and passes other warnings to ``show``."""
    from trainers.engine import DeviceCountWarning

    def one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, DeviceCountWarning):
            print(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)
    return one_line


def sweep_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-sweep``: :func:`trainers.experiments.sweep.main` with defaults shown once in --help,
    OUT checked first, and a one-line error (no traceback) when a file cannot be written."""
    from trainers.experiments import sweep
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--import", dest="imports", action="append", default=[])
    sweep.check_import_values(sweep._parser(), pre.parse_known_args(argv)[0])
    import_modules(argv, "diffenvs-sweep")
    parser = sweep._parser()
    parser.formatter_class = HelpFormatter
    args = parser.parse_args(argv)
    if args.devices is not None:              # before jax starts: CPU host devices are fixed then
        try:
            sweep.request_host_devices(args.devices)
        except ValueError as error:
            parser.error(f"--{error}")
    problem = _check_out_path(args.out)
    if problem:
        parser.error(problem.replace("--out: ", "OUT: ").replace("choose another --out", "choose another OUT"))
    problem = check_file_path("--export", args.export)
    if problem:
        parser.error(problem)
    if args.export is None and args.import_ is None and not args.merge:
        try:                                # the checks of sweep.main, with messages naming the flags
            spec = sweep._spec_from_args(args)
            sweep.plan(spec, args.out, part=args.part, max_group=args.max_group,
                       split_combined=not args.no_split_combined)
        except ValueError as error:
            parser.error(flag_message(str(error), SWEEP_FLAGS))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(parser.prog, warnings.showwarning)
            return sweep.main(argv)
    except OSError as error:
        parser.error(f"cannot write {error.filename or 'a file'}: {error.strerror or error}")
    except KeyboardInterrupt:
        print(f"\ndiffenvs-sweep: interrupted; run the same command again to resume (finished runs are skipped, "
              f"the others resume from their checkpoints in {args.out})", file=sys.stderr)
        return 130


def runs_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-runs``: the run directories under ROOT whose configuration matches the
    filters, whatever their names (see :func:`trainers.rundir.find_run_dirs`)."""
    import json
    parser = CommandParser(
        prog="diffenvs-runs",
        description="List the run directories under ROOT (of diffenvs-train, diffenvs-sweep, diffenvs-compare, "
                    "diffenvs-baseline, whatever their names) whose config.json matches every filter, with the "
                    "epoch reached and the last test loss.",
        formatter_class=HelpFormatter)
    parser.add_argument("root", type=Path, nargs="?", default=Path("runs"), help="folder searched at any depth")
    parser.add_argument("--task", default=None, help="cartpole, guidance or quantum")
    parser.add_argument("--level", default=None, help="complexity level (poles, rc or target state)")
    parser.add_argument("--strategy", default=None, help="strategy name (or RL algorithm: ppo, sac, apg)")
    parser.add_argument("--clip", default=None, choices=CLIP_MODES, help="clipping mode")
    parser.add_argument("--seed", type=int, default=None, help="seed")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config.json key or environment parameter (JSON value), e.g. "
                             "--where learning_rate=3e-4 --where num_drivers=3")
    args = parser.parse_args(argv)
    from trainers import rundir
    filters: dict[str, Any] = {name: getattr(args, name) for name in ("task", "strategy", "clip", "seed")
                               if getattr(args, name) is not None}
    if args.level is not None:
        filters["level"] = json.loads(args.level) if re.fullmatch(r"[-+0-9.eE]+", args.level) else args.level
    for text in args.where:
        key, equals, value = text.partition("=")
        if not equals or not key:
            parser.error(f"--where expects KEY=VALUE, got {text!r}")
        try:
            filters[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            filters[key.replace("-", "_")] = value
    if not args.root.is_dir():
        parser.error(f"ROOT: {args.root} is not a directory")
    try:
        found = rundir.find_run_dirs(args.root, **filters)
    except ValueError as error:
        parser.error(f"--{error}")
    for run_dir in found:
        try:
            rows = rundir.read_metrics(run_dir)
        except rundir.RunDirError:
            rows = []
        progress = f"epoch {rows[-1]['epoch']}, test loss {rows[-1]['test_loss']:.4g}" if rows else "no metrics"
        print(f"{run_dir}  {progress}")
    print(f"diffenvs-runs: {len(found)} runs under {args.root}" + (f" matching {filters}" if filters else ""))
    return 0


EVAL_COLUMNS = ("run", "kind", "epoch", "test loss", "recorded", "return (mean ± std)")


def _eval_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="diffenvs-eval",
        description="Load the trained policy of run directories of any kind (diffenvs-train, diffenvs-sweep, "
                    "diffenvs-baseline, diffenvs-compare) and evaluate it: the trainers' test loss on the run's own "
                    "test set (next to the test loss the run recorded for the same params) and the mean and "
                    "standard deviation of the episode return over N episodes in its Gymnasium environment.",
        epilog="Example: diffenvs-eval runs/cartpole-poles1-combined --episodes 20 --animation cartpole.gif",
        formatter_class=HelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    parser.add_argument("--episodes", type=int, default=10, help="Gymnasium episodes per run for the return")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes' first reset")
    parser.add_argument("--test-size", type=int, default=None,
                        help="test states (default: the run's own test set, so that the loss equals the recorded one)")
    parser.add_argument("--animation", type=Path, default=None, metavar="PATH",
                        help="write an animation (.gif, or .mp4 with imageio's ffmpeg plugin) of the first run's "
                             "policy; with several runs, PATH gets the run's name before its suffix")
    parser.add_argument("--animation-episodes", type=int, default=1, metavar="K",
                        help="episodes in the animation")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def _animation_path(path: Path, run_dir: Path, several: bool) -> Path:
    return path.with_name(f"{path.stem}-{run_dir.name}{path.suffix}") if several else path


def _format_loss(value: float) -> str:
    return "nan" if value != value else f"{value:.6g}"


def eval_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-eval``."""
    parser = _eval_parser()
    args = parser.parse_args(argv)
    flags = {"episodes": "--episodes", "seed": "--seed", "num_test": "--test-size", "animation": "--animation",
             "frames": "--animation"}
    for flag, value, low in (("--episodes", args.episodes, 0), ("--seed", args.seed, 0),
                             ("--animation-episodes", args.animation_episodes, 1)):
        if value < low:
            parser.error(f"{flag} must be an integer >= {low}, got {value}")
    if args.test_size is not None and args.test_size < 1:
        parser.error(f"--test-size must be an integer >= 1, got {args.test_size}")
    if args.animation is not None:
        problem = check_file_path("--animation", args.animation)
        if problem:
            parser.error(problem)
        if args.animation.suffix.lower() not in (".gif", ".mp4"):
            parser.error(f"--animation must be a path ending in .gif or .mp4, got {str(args.animation)!r}")
    from trainers.evaluation import episode_frames, evaluate_policy, write_animation
    from trainers.policy import load_policy
    from trainers.rundir import RunDirError
    results = []
    try:
        policies = [load_policy(run) for run in args.runs]
        for policy in policies:
            evaluation = evaluate_policy(policy, num_test=args.test_size, episodes=args.episodes, seed=args.seed)
            result = {"run": str(policy.run_dir), "kind": policy.kind, "epoch": policy.epoch,
                      "num_test": evaluation.num_test, "test_loss": evaluation.test_loss,
                      "recorded_test_loss": evaluation.recorded_test_loss, "episodes": evaluation.episodes,
                      "mean_return": evaluation.mean_return, "std_return": evaluation.std_return}
            if args.animation is not None:
                path = _animation_path(args.animation, policy.run_dir, len(policies) > 1)
                frames = episode_frames(policy, args.animation_episodes, args.seed)
                result["animation"] = str(write_animation(path, frames))
                result["animation_frames"] = len(frames)
            results.append(result)
    except RunDirError as error:                  # names the run directory's file already
        parser.error(str(error))
    except ValueError as error:
        parser.error(flag_message(str(error), flags))
    except OSError as error:
        parser.error(f"cannot write {error.filename or 'a file'}: {error.strerror or error}")
    if args.json:
        import json
        print(json.dumps([{key: (None if isinstance(value, float) and value != value else value)
                           for key, value in result.items()} for result in results], indent=2))
        return 0
    table = [EVAL_COLUMNS]
    for result in results:
        spread = (f"{result['mean_return']:.6g} ± {result['std_return']:.3g} ({result['episodes']} episodes)"
                  if result["episodes"] else "-")
        table.append((result["run"], result["kind"], str(result["epoch"]), _format_loss(result["test_loss"]),
                      _format_loss(result["recorded_test_loss"]), spread))
    widths = [max(len(row[index]) for row in table) for index in range(len(EVAL_COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for result in results:
        if "animation" in result:
            print(f"animation: {result['animation']} ({result['animation_frames']} frames)")
    return 0
