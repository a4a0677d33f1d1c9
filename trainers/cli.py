"""Command-line tools: ``diffenvs-train`` and ``diffenvs-plot``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from trainers.checks import check_finite_positive
from trainers.training import CLIP_MODES, OPTIMIZERS, NonFiniteError, TrainConfig, train

TASKS = ("cartpole", "guidance", "quantum")
STRATEGY_NAMES = ("bptt", "modified", "network_only", "one_step", "combined", "truncated", "es")


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffenvs-train",
        description="Train a controller by backpropagating through rollouts of a diffenvs environment, "
                    "write a run directory (config.json, metrics.csv, checkpoint.npz) and plot its test "
                    "loss. Running it again on an existing run directory resumes the run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("task", nargs="?", default="cartpole", choices=TASKS, help="the control problem")
    level = parser.add_argument_group("complexity and environment")
    level.add_argument("--poles", type=int, default=None, help="cart-pole: number of poles (study: 1..4; default 1)")
    level.add_argument("--rc", type=float, default=None,
                       help="guidance: control regularisation rc (study: 1, 0.1, 0.01, 0.001; default 0.01)")
    level.add_argument("--drivers", type=int, default=None, help="guidance: number of drivers (default 2)")
    level.add_argument("--evaders", type=int, default=None, help="guidance: number of evaders (default 4)")
    level.add_argument("--target", type=int, default=None,
                       help="quantum: target eigenstate, 1 = ground state (study: 3, 4, 5; default 3)")
    level.add_argument("--loss-mode", choices=("final", "continuous"), default=None,
                       help="cart-pole: score only the final state (study) or every step")
    method = parser.add_argument_group("gradient strategy and optimisation")
    method.add_argument("--strategy", choices=STRATEGY_NAMES, default="combined", help="gradient strategy")
    method.add_argument("--truncate-every", type=int, default=None, help="truncated: steps between cuts")
    method.add_argument("--es-population", type=int, default=32, help="es: perturbations per update (even)")
    method.add_argument("--es-noise", type=float, default=0.02, help="es: perturbation scale σ")
    method.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam", help="optimizer")
    method.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    method.add_argument("--clip", choices=CLIP_MODES, default="none",
                        help="clip the update by value or by global norm before the optimizer")
    method.add_argument("--clip-threshold", type=float, default=1.0, help="clipping threshold")
    data = parser.add_argument_group("data and schedule")
    data.add_argument("--epochs", type=int, default=30, help="epochs (the study runs 1000)")
    data.add_argument("--minutes", type=float, default=None,
                      help="wall-time budget: stop after the first epoch at which the run's training time "
                           "(summed epoch times, compilation excluded, across resumes) reaches it, or at "
                           "--epochs; for comparisons at equal wall time")
    data.add_argument("--batch-size", type=int, default=8, help="initial states per update")
    data.add_argument("--train-size", type=int, default=256, help="training initial states")
    data.add_argument("--test-size", type=int, default=256, help="test initial states")
    data.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and strategy")
    run = parser.add_argument_group("run directory")
    run.add_argument("--out", type=Path, default=None,
                     help="run directory (default runs/TASK-STRATEGY-CLIP-seedSEED)")
    run.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    run.add_argument("--resume", action="store_true",
                     help="require an existing run directory to resume (resuming is automatic otherwise)")
    run.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    run.add_argument("--no-plot", action="store_true", help="do not write test_loss.png")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _env_params(args: argparse.Namespace) -> dict:
    options = {"cartpole": {"num_poles": args.poles, "loss_mode": args.loss_mode},
               "guidance": {"regularization": args.rc, "num_drivers": args.drivers, "num_evaders": args.evaders},
               "quantum": {"target_state": args.target}}
    flags = {"num_poles": "--poles", "loss_mode": "--loss-mode", "regularization": "--rc",
             "num_drivers": "--drivers", "num_evaders": "--evaders", "target_state": "--target"}
    for task, values in options.items():
        if task != args.task:
            for name, value in values.items():
                if value is not None:
                    raise ValueError(f"{flags[name]} applies to the {task} task, not to {args.task}")
    return {name: value for name, value in options[args.task].items() if value is not None}


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-train``."""
    parser = _train_parser()
    args = parser.parse_args(argv)
    try:
        config = TrainConfig(task=args.task, env_params=_env_params(args), strategy=args.strategy,
                             truncate_every=args.truncate_every, es_population=args.es_population,
                             es_noise=args.es_noise, optimizer=args.optimizer, learning_rate=args.lr,
                             clip=args.clip, clip_threshold=args.clip_threshold, num_train=args.train_size,
                             num_test=args.test_size, batch_size=args.batch_size, epochs=args.epochs,
                             seed=args.seed, checkpoint_every=args.checkpoint_every)
        config.make_env()
        if args.minutes is not None:
            check_finite_positive("--minutes", args.minutes)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path("runs") / f"{args.task}-{args.strategy}-{args.clip}-seed{args.seed}"
    if args.resume and not (out / "config.json").exists():
        parser.error(f"--resume: {out} holds no run to resume")
    if not args.quiet:
        print(f"diffenvs-train: {args.task} {config.env_params or ''} strategy={config.strategy} "
              f"clip={config.clip} epochs={config.epochs} -> {out}", flush=True)
    try:
        result = train(config, out=out, quiet=args.quiet, overwrite=args.overwrite, minutes=args.minutes)
    except NonFiniteError as error:
        print(f"diffenvs-train: {error}", file=sys.stderr)
        return 3
    except ValueError as error:
        parser.error(str(error))
    last = result.metrics[-1]
    print(f"epoch {last['epoch']}: train loss {last['train_loss']:.4g}, test loss {last['test_loss']:.4g}")
    if not args.no_plot:
        from trainers.plotting import plot_runs
        figure = plot_runs([out], out / "test_loss.png")
        print(f"plot: {figure}")
    return 0


def plot_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-plot``."""
    parser = argparse.ArgumentParser(
        prog="diffenvs-plot", description="Draw the study-style figure (test loss on a log scale, one colour per "
        "strategy, one line style per clipping mode) for run directories, the study's figure for a task from a "
        "sweep (--study: one panel per complexity level) and a summary table (--table).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run directories, folders holding run directories (e.g. a sweep's output root), or "
                             "run archives (.csv.gz, from diffenvs-sweep OUT --export)")
    parser.add_argument("--out", type=Path, default=None,
                        help="PNG file to write (default test_loss.png, or study_TASK.png with --study)")
    parser.add_argument("--smooth", type=int, default=None,
                        help="moving-average window in rows (default 1, or 30 with --study)")
    parser.add_argument("--x", choices=("epoch", "env_steps", "wall_seconds"), default="epoch",
                        help="x axis: epochs, environment steps, or cumulative wall time")
    parser.add_argument("--title", default=None, help="figure title")
    parser.add_argument("--study", metavar="TASK", default=None,
                        help="draw the study's figure for TASK (cartpole, guidance, quantum): a panel per level")
    parser.add_argument("--table", type=Path, default=None, metavar="CSV",
                        help="write the summary table (CSV, CSV_runs.csv, and markdown .md) and print it; "
                             "no figure unless --out or --study is given")
    parser.add_argument("--last", type=int, default=50, help="summary table: epochs at the end to take the median of")
    parser.add_argument("--reach", type=float, default=0.01,
                        help="summary table: report the first epoch at which the smoothed test loss is below this")
    args = parser.parse_args(argv)
    if args.smooth is not None and args.smooth < 1:
        parser.error(f"--smooth must be an integer >= 1, got {args.smooth}")
    from trainers.plotting import plot_runs, plot_study, summary_table
    try:
        if args.table is not None:
            _, _, markdown = summary_table(args.runs, args.table, last=args.last, reach=args.reach,
                                         smooth=args.smooth or 30)
            print(markdown, end="")
            print(f"table: {args.table}")
        if args.study is not None:
            out = args.out or Path(f"study_{args.study}.png")
            figure = plot_study(args.runs, args.study, out, smooth=args.smooth or 30, x=args.x, title=args.title)
            print(f"plot: {figure}")
        elif args.table is None or args.out is not None:
            figure = plot_runs(args.runs, args.out or Path("test_loss.png"), smooth=args.smooth or 1,
                               title=args.title, x=args.x)
            print(f"plot: {figure}")
    except ValueError as error:
        parser.error(str(error))
    return 0
