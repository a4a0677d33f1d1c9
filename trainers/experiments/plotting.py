"""Study-style figures and tables from run directories.

* :func:`plot_runs`: test loss on a log scale of some runs, one panel per task and level, one colour per
  strategy, one line style per clipping mode, against epochs, environment steps or wall time (RL baseline
  runs only against environment steps or wall time);
* :func:`plot_study`: the study's figure for a task, one panel per complexity level;
* :func:`summary_table`: the median test loss of the last epochs per run, and its median and spread
  across seeds.

Metrics files are read leniently: any columns beyond ``test_loss`` are optional (the RL baselines write
``epoch, env_steps, wall_seconds, train_loss, test_loss``), and a cut-short last line is ignored.
Run archives (``.csv.gz`` files of :mod:`trainers.experiments.archive`) are read wherever run directories are.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from trainers import rundir
from trainers.checks import check_count

LINE_STYLES = {"none": "-", "value": "--", "norm": ":"}
X_AXES = ("epoch", "env_steps", "wall_seconds")
X_LABELS = {"epoch": "epoch", "env_steps": "environment steps", "wall_seconds": "wall time [s]"}
STRATEGY_ORDER = ("combined", "bptt", "modified", "network_only", "one_step", "truncated", "es", "ppo", "sac", "apg")


class RunRecord(NamedTuple):
    """A run directory's configuration and metrics columns (each a float array, one entry per row).

    For a run read from an archive, ``run_dir`` is ``ARCHIVE/RUN_NAME`` (no such directory exists).
    ``failed``: the run has a ``failed.json`` (a sweep stopped it at a non-finite value)."""

    run_dir: Path
    config: dict[str, Any]
    columns: dict[str, np.ndarray]
    failed: bool = False


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` values (same length as ``values``)."""
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def read_columns(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The columns of ``metrics.csv`` as float arrays ({} if there is none); a cut-short last line is dropped."""
    path = Path(run_dir) / rundir.METRICS_FILE
    if not path.exists():
        return {}
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]                 # a last line cut short by an interrupted write
    reader = csv.DictReader(io.StringIO(text))
    names = [name for name in (reader.fieldnames or []) if name]
    rows = []
    for row in reader:
        try:
            rows.append([float(row[name]) if row[name] != "" else math.nan for name in names])
        except (TypeError, ValueError):                     # a missing field (None) or a garbled value
            break
    if not rows:
        return {}
    table = np.asarray(rows, float)
    return {name: table[:, index] for index, name in enumerate(names)}


def read_run(run_dir: str | Path) -> RunRecord:
    """A run directory's config and metrics; ValueError if it has no config.json or no test losses."""
    config = rundir.read_config(Path(run_dir))
    columns = read_columns(run_dir)
    if config is None or "test_loss" not in columns:
        raise ValueError(f"run_dirs: {run_dir} is not a run directory with config.json and a metrics.csv "
                         f"holding test_loss")
    return RunRecord(Path(run_dir), config, columns, (Path(run_dir) / rundir.FAILED_FILE).exists())


def read_archive_runs(path: str | Path) -> list[RunRecord]:
    """The runs of a run archive (:mod:`trainers.experiments.archive`), sorted by name; ValueError if the archive is
    malformed or a run has no test losses."""
    from trainers.experiments.archive import read_archive
    records = []
    for name, run in sorted(read_archive(path).items()):
        columns = run.float_columns()
        if "test_loss" not in columns:
            raise ValueError(f"run_dirs: run {name!r} of the archive {path} has no test_loss rows")
        records.append(RunRecord(Path(path) / name, run.config, columns, run.failed_json is not None))
    return records


def find_runs(paths: Sequence[str | Path | RunRecord]) -> list[RunRecord]:
    """Runs among ``paths``: each path is a run directory, a root searched recursively for run directories,
    or a run archive file (``.csv.gz``, see :mod:`trainers.experiments.archive`); a :class:`RunRecord` already read is
    taken as it is (so that several tables and figures of the same runs read them once)."""
    records = []
    for path in paths:
        if isinstance(path, RunRecord):
            records.append(path)
            continue
        path = Path(path)
        if path.is_file():
            records += read_archive_runs(path)
            continue
        if (path / rundir.CONFIG_FILE).exists():
            records.append(read_run(path))
            continue
        found = sorted(config.parent for config in path.rglob(rundir.CONFIG_FILE)) if path.is_dir() else []
        found = [run for run in found if (run / rundir.METRICS_FILE).exists()]
        if not found:
            raise ValueError(f"run_dirs: {path} is neither a run directory, a folder holding run directories "
                             f"nor a run archive")
        records += [read_run(run) for run in found]
    return records


@lru_cache(maxsize=64)
def _env_facts(task: str, env_params_json: str) -> tuple[int, dict[str, Any]]:
    """(num_steps, parameters) of an environment configuration."""
    import dataclasses

    import diffenvs
    env = diffenvs.make(task, **json.loads(env_params_json))
    params = env.default_params
    if dataclasses.is_dataclass(params):
        fields = dataclasses.asdict(params)
    elif hasattr(params, "_asdict"):
        fields = dict(params._asdict())
    else:
        fields = dict(params) if isinstance(params, dict) else {}
    return env.num_steps(), fields


def _facts(config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return _env_facts(config["task"], json.dumps(config.get("env_params", {}), sort_keys=True))


def strategy_label(config: dict[str, Any]) -> str:
    """The strategy as drawn: the name, with k for truncated(k) and, for ``es`` with a population or
    noise other than the defaults, ``es(population,noise)``."""
    strategy = str(config.get("strategy", "?"))
    if strategy == "truncated" and config.get("truncate_every"):
        return f"truncated({config['truncate_every']})"
    if strategy == "es":
        from trainers.training import TrainConfig      # imports jax: only for es runs
        defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
        population = config.get("es_population", defaults["es_population"])
        noise = config.get("es_noise", defaults["es_noise"])
        if (population, noise) != (defaults["es_population"], defaults["es_noise"]):
            return f"es({population},{noise:g})"
    return strategy


def x_values(record: RunRecord, x: str = "epoch") -> np.ndarray:
    """The x coordinate of each metrics row: epochs, environment steps or cumulative wall seconds.

    Columns of that name are used when present. Otherwise, for trainer runs, env_steps = epoch x
    (num_train // batch_size) x batch_size x num_steps (x (population + 1) for ``es``, whose updates roll
    out population + 1 times; the full train/test evaluations are not counted) and wall_seconds = the
    cumulative sum of epoch_seconds.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    columns, config = record.columns, record.config
    if x in columns:
        return columns[x]
    length = len(columns["test_loss"])
    epochs = columns.get("epoch", np.arange(length, dtype=float))
    if x == "epoch":
        return epochs
    if x == "wall_seconds":
        if "epoch_seconds" not in columns:
            raise ValueError(f"x: {record.run_dir} has neither wall_seconds nor epoch_seconds")
        return np.cumsum(np.nan_to_num(columns["epoch_seconds"]))
    try:
        batch_size, num_train = int(config["batch_size"]), int(config["num_train"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"x: {record.run_dir} has no env_steps column and no num_train/batch_size") from None
    rollouts = int(config.get("es_population", 0)) + 1 if config.get("strategy") == "es" else 1
    return epochs * (num_train // batch_size) * batch_size * _facts(config)[0] * rollouts


def strategy_rank(label: str) -> tuple[int, str]:
    """Sort key of a strategy label (``truncated(10)`` ranks as ``truncated``): the figures' order,
    :data:`STRATEGY_ORDER`, unknown labels last, then by name."""
    base = label.split("(")[0]
    return (STRATEGY_ORDER.index(base) if base in STRATEGY_ORDER else len(STRATEGY_ORDER), label)


def _colours(labels: Sequence[str]) -> dict[str, str]:
    order = sorted(set(labels), key=strategy_rank)
    return {label: f"C{index % 10}" for index, label in enumerate(order)}


def save_figure(figure: Any, out: str | Path) -> Path:
    """Write ``figure`` to ``out`` (PNG at 120 dpi, folders made) and close it."""
    import matplotlib.pyplot as plt
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _readable_axes(axes: Any, x: str) -> None:
    """Tick labels that read as numbers: integers on an epoch axis (no half epochs), and plain decimals
    (``0.02``, ``1.971``) instead of powers such as 1.971×10⁰ on a log-scale test-loss axis."""
    import matplotlib.ticker as ticker

    class PlainLogFormatter(ticker.LogFormatter):
        def _num_to_string(self, value: float, vmin: float, vmax: float) -> str:
            return f"{value:.4g}"

    if x == "epoch":
        axes.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if axes.get_yscale() == "log":
        axes.yaxis.set_major_formatter(PlainLogFormatter())
        axes.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def pyplot():
    """matplotlib's pyplot with the non-interactive Agg backend (figures are only written to files)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


RL_ALGOS = ("ppo", "sac", "apg")
MARKERS = ("o", "s", "^", "D", "v", "x", "P", "*")
"""Markers that tell apart runs of the same strategy and clipping mode within a panel (the first has none)."""
_NOT_DISTINGUISHING = ("diffenvs_version", "brax_version")


def is_rl_run(config: dict[str, Any]) -> bool:
    """Whether the run is an RL baseline (:mod:`trainers.experiments.baseline`): its rows are evaluations, not epochs."""
    return bool(config.get("algo")) or config.get("strategy") in RL_ALGOS


def resolve_x(runs: Sequence[RunRecord], x: str | None) -> str:
    """The x axis for ``runs``: ``x`` itself, or for None "epoch" unless RL baseline runs are among them
    ("env_steps" then). ValueError for "epoch" with RL runs, whose rows are evaluations, not epochs."""
    rl = sorted({strategy_label(record.config) for record in runs if is_rl_run(record.config)})
    if x is None:
        return "env_steps" if rl else "epoch"
    if x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    if x == "epoch" and rl:
        raise ValueError(f"x: the RL baseline runs ({', '.join(rl)}) have no epochs (their rows are "
                         f"evaluations); draw them against env_steps or wall_seconds")
    return x


def run_label(config: dict[str, Any]) -> str:
    """A run's legend entry: the RL algorithm, or the gradient strategy and its clipping mode."""
    if is_rl_run(config):
        return strategy_label(config)
    return f"{strategy_label(config)}, clip {config.get('clip', 'none')}"


def _short_task(task: str) -> str:
    from diffenvs.registry import ALIASES, canonical_name
    canonical = canonical_name(task)
    return next((alias for alias, name in ALIASES.items() if name == canonical), canonical)


def level_description(config: dict[str, Any]) -> str:
    """The complexity level in words: "2 poles", "rc = 0.01", "target state 3"."""
    from diffenvs.registry import canonical_name
    task, level = canonical_name(config["task"]), run_level(config)
    if level is None:
        return ""
    if task == "CartPole":
        return f"{level} pole" + ("" if level == 1 else "s")
    if task == "GuidanceByRepulsion":
        return f"rc = {level:g}"
    if task == "QuantumControl":
        return f"target state {level}"
    return str(level)


def problem_description(config: dict[str, Any]) -> str:
    """Task, level and any other environment parameter that differs from its default:
    "cartpole, 2 poles", "guidance, rc = 0.01, num_drivers = 3"."""
    from diffenvs.registry import canonical_name
    from trainers.presets import COMPLEXITY_LEVELS
    parameter = COMPLEXITY_LEVELS.get(canonical_name(config["task"]), (None,))[0]
    defaults = _facts({"task": config["task"]})[1]
    others = [f"{key} = {value}" for key, value in sorted(config.get("env_params", {}).items())
              if key != parameter and defaults.get(key) != value]
    return ", ".join(part for part in [_short_task(config["task"]), level_description(config), *others] if part)


def _problem_key(config: dict[str, Any]) -> tuple[str, str]:
    """Runs of equal keys share a panel: the canonical task and all environment parameters (defaults
    filled in), so that baselines (short task names) and trainers (canonical names) meet."""
    from diffenvs.registry import canonical_name
    return canonical_name(config["task"]), json.dumps(_facts(config)[1], sort_keys=True, default=str)


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _variant_labels(records: Sequence[RunRecord]) -> list[str]:
    """For runs sharing a legend entry: what sets each apart (the config fields in which they differ,
    e.g. "seed 1", or else the run directory's name)."""
    keys = sorted({key for record in records for key in record.config} - set(_NOT_DISTINGUISHING))
    differing = [key for key in keys
                 if len({json.dumps(record.config.get(key), sort_keys=True, default=str) for record in records}) > 1]
    labels = [", ".join(f"{key} {_compact(record.config.get(key))}" for key in differing) for record in records]
    if len(set(labels)) < len(labels):
        labels = [f"{label}, {record.run_dir.name}" if label else record.run_dir.name
                  for label, record in zip(labels, records)]
    return labels


def runs_figure(run_dirs: Sequence[str | Path | RunRecord], *, smooth: int = 1, title: str | None = None,
                x: str | None = None) -> Any:
    """The figure of :func:`plot_runs` (a matplotlib Figure, not saved)."""
    runs = find_runs(run_dirs)
    if not runs:
        raise ValueError(f"run_dirs: no runs found in {[str(path) for path in run_dirs]}")
    x = resolve_x(runs, x)
    panels: dict[tuple[str, str], list[RunRecord]] = {}
    for record in runs:
        panels.setdefault(_problem_key(record.config), []).append(record)
    plt = pyplot()
    colours = _colours([strategy_label(record.config) for record in runs])
    count = len(panels)
    columns = 1 if count == 1 else 2 if count <= 4 else 3
    rows = math.ceil(count / columns)
    size = (7, 4.5) if count == 1 else (5.6 * columns, 3.9 * rows)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    ordered = sorted(panels.values(), key=lambda records: (_problem_key(records[0].config)[0],
                                                           str(run_level(records[0].config)),
                                                           problem_description(records[0].config)))
    for panel, records in zip(axes.flat, ordered):
        _draw_runs(panel, records, colours, x=x, smooth=smooth)
        panel.set_title(problem_description(records[0].config) if count > 1 or title is None else title,
                        fontsize=10 if count > 1 else None)
    for panel in list(axes.flat)[count:]:
        panel.set_visible(False)
    if count == 1:
        axes[0, 0].legend(fontsize=8)
        figure.tight_layout()
    else:
        handles: dict[str, Any] = {}
        for panel in axes.flat:
            for handle, label in zip(*panel.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4),
                      fontsize=8, frameon=False)
        figure.suptitle(title or "test loss")
        figure.tight_layout(rect=(0, 0.03 + 0.03 * math.ceil(len(handles) / 4), 1, 1))
    return figure


def draw_seed_band(axis: Any, records: Sequence[RunRecord], *, colour: str, label: str, smooth: int = 10,
                   epoch_scale: float = 1.0, sign: float = 1.0) -> None:
    """Draw on ``axis`` the median over ``records`` (one per seed) of their test loss times ``sign``, as a
    moving average over ``smooth`` epochs (at most a tenth of the run), against the epoch times
    ``epoch_scale``, with the seeds' min-max as a band. Runs are cut to the shortest; a run of at most
    10 epochs gets a marker at each."""
    length = min(len(record.columns["test_loss"]) for record in records)
    window = min(smooth, max(1, (length - 1) // 10))
    curves = sign * np.array([moving_average(record.columns["test_loss"][:length], window) for record in records])
    x = np.arange(length) * epoch_scale
    axis.plot(x, np.median(curves, axis=0), color=colour, label=label, marker="o" if length <= 10 else None)
    if len(records) > 1:
        axis.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.15, linewidth=0)


def plot_runs(run_dirs: Sequence[str | Path | RunRecord], out: str | Path, *, smooth: int = 1,
              title: str | None = None, x: str | None = None) -> Path:
    """Draw the test loss of each run on a log scale and save it as a PNG at ``out``.

    One panel per problem (task, level and other environment parameters), titled e.g. "cartpole, 2
    poles" (``title`` replaces the title of a single panel, or is the figure's title above several);
    one colour per strategy and one line style per clipping mode, the same in every panel; runs that
    share both within a panel get markers and their differences (e.g. "seed 1") in the legend.
    ``x``: "epoch", "env_steps" or "wall_seconds"; None takes epochs unless RL baseline runs are among
    them (their rows are evaluations, so they are drawn against environment steps or wall time only).
    Each entry of ``run_dirs`` is a run directory, a folder holding run directories or a run archive.
    """
    return save_figure(runs_figure(run_dirs, smooth=smooth, title=title, x=x), out)


def _draw_runs(axes: Any, runs: Sequence[RunRecord], colours: dict[str, str], *, x: str, smooth: int) -> None:
    """One line per run: test loss (moving average over ``smooth`` rows) against ``x``, log scale; colour
    by strategy, line style by clipping mode, and a marker for each further run of the same legend entry."""
    groups: dict[str, list[RunRecord]] = {}
    for record in runs:
        groups.setdefault(run_label(record.config), []).append(record)
    def order(item: tuple[str, list[RunRecord]]) -> tuple:
        clip = str(item[1][0].config.get("clip", "none"))
        return (strategy_rank(strategy_label(item[1][0].config)),
                list(LINE_STYLES).index(clip) if clip in LINE_STYLES else len(LINE_STYLES), item[0])

    for label, records in sorted(groups.items(), key=order):
        variants = _variant_labels(records) if len(records) > 1 else [""]
        for index, (record, variant) in enumerate(zip(records, variants)):
            config = record.config
            strategy, clip = strategy_label(config), str(config.get("clip", "none"))
            loss = moving_average(record.columns["test_loss"], smooth)
            marker = None if index == 0 else MARKERS[(index - 1) % len(MARKERS)]
            axes.plot(x_values(record, x), loss, color=colours[strategy], linestyle=LINE_STYLES.get(clip, "-"),
                      label=f"{label} ({variant})" if variant else label, linewidth=1.4, marker=marker,
                      markevery=max(1, len(loss) // 8), markersize=4)
    axes.set_yscale("log")
    if x == "env_steps":
        axes.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    _readable_axes(axes, x)
    axes.set_xlabel(X_LABELS[x])
    axes.set_ylabel("test loss")
    axes.grid(True, which="both", alpha=0.3)


def plot_comparison(paths: Sequence[str | Path | RunRecord], out: str | Path, *, smooth: int = 1,
                    title: str | None = None) -> Path:
    """The RL comparison figure: one row per (task, level), test loss against wall time (left) and
    environment steps (right), one colour per method (RL algorithm or gradient strategy). Saves a PNG."""
    runs = find_runs(paths)
    if not runs:
        raise ValueError(f"paths: no runs found in {[str(path) for path in paths]}")
    from diffenvs.registry import canonical_name
    cases: dict[tuple[str, str], list[RunRecord]] = {}
    for record in runs:                             # baselines record the short task name, trainers the canonical
        cases.setdefault((canonical_name(record.config["task"]), str(run_level(record.config))), []).append(record)
    plt = pyplot()
    colours = _colours([strategy_label(record.config) for record in runs])
    figure, axes = plt.subplots(len(cases), 2, figsize=(11, 3.4 * len(cases)), squeeze=False)
    for row, ((task, level), records) in enumerate(sorted(cases.items())):
        for column, x in enumerate(("wall_seconds", "env_steps")):
            _draw_runs(axes[row, column], records, colours, x=x, smooth=smooth)
            axes[row, column].set_xscale("log" if x == "env_steps" else "linear")
            axes[row, column].set_title(problem_description(records[0].config), fontsize=10)
    handles = {}
    for panel in axes.flat:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 5), fontsize=8)
    figure.suptitle(title or "test loss: RL baselines and gradient strategies")
    figure.tight_layout(rect=(0, 0.04, 1, 0.98))
    return save_figure(figure, out)


def run_level(config: dict[str, Any]) -> Any:
    """The complexity level of a run (its value of the task's level parameter, defaults included); None
    for a task outside the study."""
    from diffenvs.registry import canonical_name
    from trainers.presets import COMPLEXITY_LEVELS
    name = canonical_name(config["task"])
    if name not in COMPLEXITY_LEVELS:
        return None
    parameter = COMPLEXITY_LEVELS[name][0]
    return config.get("env_params", {}).get(parameter, _facts(config)[1].get(parameter))


def smoothing_window(rows: int, smooth: int | None) -> int:
    """The moving-average window for a run of ``rows`` rows: ``smooth`` if given, else a tenth of the
    run, between 1 and 30 rows (so that a short run's curve keeps its shape)."""
    return smooth if smooth is not None else max(1, min(30, rows // 10))


def study_figure(paths: Sequence[str | Path | RunRecord], task: str, *, smooth: int | None = None,
                 x: str | None = None, title: str | None = None) -> Any:
    """The figure of :func:`plot_study` (a matplotlib Figure, not saved)."""
    from diffenvs.registry import canonical_name
    from trainers.presets import COMPLEXITY_LEVELS
    if x is not None and x not in X_AXES:
        raise ValueError(f"x must be one of {X_AXES}, got {x!r}")
    if smooth is not None:
        check_count("smooth", smooth)
    name = canonical_name(task)
    parameter, study_levels = COMPLEXITY_LEVELS[name]
    runs = [record for record in find_runs(paths) if canonical_name(record.config["task"]) == name]
    if not runs:
        raise ValueError(f"task: no runs of {name} under {[str(p) for p in paths]}")
    x = resolve_x(runs, x)
    present = {run_level(r.config) for r in runs}
    levels = [level for level in study_levels if level in present] + sorted(present - set(study_levels), key=str)
    columns = 2 if len(levels) == 4 else min(len(levels), 3)
    rows = math.ceil(len(levels) / columns)
    plt = pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    colours = _colours([strategy_label(r.config) for r in runs])
    handles: dict[str, Any] = {}
    windows = set()
    for panel, level in zip(axes.flat, levels):
        curves: dict[tuple[str, str], list[RunRecord]] = {}
        labels: dict[tuple[str, str], str] = {}
        for record in runs:
            if run_level(record.config) == level:
                key = (strategy_label(record.config), str(record.config.get("clip", "none")))
                curves.setdefault(key, []).append(record)
                labels[key] = run_label(record.config)
        for (strategy, clip), records in sorted(curves.items(), key=lambda item: (
                list(colours).index(item[0][0]), list(LINE_STYLES).index(item[0][1]) if item[0][1] in LINE_STYLES else 9)):
            length = min(len(r.columns["test_loss"]) for r in records)
            window = smoothing_window(length, smooth)
            windows.add(window)
            losses = np.stack([moving_average(r.columns["test_loss"], window)[:length] for r in records])
            xs = np.median(np.stack([x_values(r, x)[:length] for r in records]), axis=0)
            label = labels[(strategy, clip)]
            (line,) = panel.plot(xs, np.median(losses, axis=0), color=colours[strategy],
                                 linestyle=LINE_STYLES.get(clip, "-"), linewidth=1.3, label=label)
            if len(records) > 1:
                panel.fill_between(xs, losses.min(axis=0), losses.max(axis=0), color=colours[strategy], alpha=0.08,
                                   linewidth=0)
            handles.setdefault(label, line)
        panel.set_yscale("log")
        panel.set_title(level_description({"task": name, "env_params": {parameter: level}}), fontsize=10)
        if x == "env_steps":
            panel.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        _readable_axes(panel, x)
        panel.set_xlabel(X_LABELS[x])
        panel.set_ylabel("test loss")
        panel.grid(True, which="both", alpha=0.3)
    for panel in list(axes.flat)[len(levels):]:
        panel.set_visible(False)
    spread = f"{min(windows)}" if len(windows) == 1 else f"{min(windows)}–{max(windows)}"
    smoothing = "raw" if windows == {1} else f"moving average over {spread} rows"
    figure.suptitle(title or f"{_short_task(name)}: test loss ({smoothing})")
    figure.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6), fontsize=8,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(handles) / 6), 1, 1))
    return figure


def plot_study(paths: Sequence[str | Path | RunRecord], task: str, out: str | Path, *, smooth: int | None = None,
               x: str | None = None, title: str | None = None) -> Path:
    """The study's figure for ``task``: one panel per complexity level that has runs (2 x 2 for four
    levels, 1 x 3 for three), test loss on a log scale against ``x`` (None: epochs, or environment steps
    when RL baseline runs are among them, see :func:`resolve_x`), a trailing moving average over
    ``smooth`` rows (None: :func:`smoothing_window`, a tenth of the run up to 30 rows), one colour per
    strategy and one line style per clipping mode. With several seeds a line is the median across seeds
    and a light band spans their minimum and maximum. Saves a PNG at ``out``.
    """
    return save_figure(study_figure(paths, task, smooth=smooth, x=x, title=title), out)


SUMMARY_COLUMNS = ("task", "level", "strategy", "clip", "runs", "median", "min", "max", "q25", "q75",
                   "reached_runs", "reached_epoch_median")
RUN_COLUMNS = ("task", "level", "strategy", "clip", "seed", "epochs", "last_epoch", "status", "final_test_loss",
               "min_test_loss", "median_last", "best_smoothed", "reached_epoch", "run_dir")


def summary_table(paths: Sequence[str | Path], out: str | Path, *, last: int = 50, reach: float = 0.01,
                  smooth: int | None = None) -> tuple[list[dict], list[dict], str]:
    """Per run the median test loss of its last ``last`` rows (epoch 0 excluded); across seeds, per (task,
    level, strategy, clip), the median and spread (min, max, quartiles) of those medians.

    Speed of convergence: per run ``reached_epoch``, the first epoch at which the test loss itself (not
    smoothed, so that a moving average's lag never delays it) is below ``reach`` (empty if never), and
    ``best_smoothed``, the lowest trailing moving average of the test loss (``smooth`` rows, None: as in
    the figure, :func:`smoothing_window`); across seeds ``reached_runs`` (how many reached it) and
    ``reached_epoch_median`` (the median epoch among those, empty if none).

    Writes ``out`` (the summary CSV), ``<out stem>_runs.csv`` (the per-run rows) and ``<out stem>.md`` (the
    summary as a markdown table). Returns (per-run rows, summary rows, markdown). A run's status is
    "finished", "failed" (failed.json from a sweep: stopped by a non-finite value) or "partial".
    """
    check_count("last", last)
    if smooth is not None:
        check_count("smooth", smooth)
    if not (isinstance(reach, (int, float)) and math.isfinite(reach) and reach > 0):
        raise ValueError(f"reach must be a finite loss > 0, got {reach!r}")
    run_rows = []
    for record in find_runs(paths):
        config, columns = record.config, record.columns
        losses = columns["test_loss"]
        epochs = columns.get("epoch", np.arange(len(losses), dtype=float))
        trained = losses[epochs > 0] if np.any(epochs > 0) else losses
        last_epoch = int(epochs[-1]) if len(epochs) else 0
        target = config.get("epochs")
        status = ("failed" if record.failed else
                  "finished" if target is None or last_epoch >= int(target) else "partial")
        smoothed = moving_average(losses, smoothing_window(len(losses), smooth))
        below = np.flatnonzero(losses < reach)
        run_rows.append({"task": config["task"], "level": run_level(config), "strategy": strategy_label(config),
                         "clip": str(config.get("clip", "none")), "seed": config.get("seed"),
                         "epochs": target, "last_epoch": last_epoch, "status": status,
                         "final_test_loss": float(losses[-1]), "min_test_loss": float(np.nanmin(losses)),
                         "median_last": float(np.median(trained[-last:])),
                         "best_smoothed": float(np.nanmin(smoothed)),
                         "reached_epoch": int(epochs[below[0]]) if len(below) else None,
                         "run_dir": str(record.run_dir)})
    run_rows.sort(key=lambda r: (r["task"], str(r["level"]), r["strategy"], r["clip"], str(r["seed"])))
    groups: dict[tuple, list[dict]] = {}
    for row in run_rows:
        groups.setdefault((row["task"], row["level"], row["strategy"], row["clip"]), []).append(row)
    summary = []
    for (task, level, strategy, clip), rows in groups.items():
        values = np.asarray([row["median_last"] for row in rows])
        reached = [row["reached_epoch"] for row in rows if row["reached_epoch"] is not None]
        summary.append({"task": task, "level": level, "strategy": strategy, "clip": clip, "runs": len(values),
                        "median": float(np.median(values)), "min": float(values.min()),
                        "max": float(values.max()), "q25": float(np.percentile(values, 25)),
                        "q75": float(np.percentile(values, 75)), "reached_runs": len(reached),
                        "reached_epoch_median": float(np.median(reached)) if reached else None})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(csv_text(summary, SUMMARY_COLUMNS))
    out.with_name(out.stem + "_runs.csv").write_text(csv_text(run_rows, RUN_COLUMNS))
    markdown = _markdown(summary, last, reach)
    out.with_suffix(".md").write_text(markdown)
    return run_rows, summary, markdown


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with a header of ``columns``; floats written with repr (exact round trip), None empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: repr(value) if isinstance(value, float) else value for key, value in row.items()})
    return buffer.getvalue()


def _markdown(summary: list[dict], last: int, reach: float) -> str:
    lines = [f"Median test loss of the last {last} epochs per run; across seeds: median, min and max. Last column: "
             f"the median epoch at which the test loss first fell below {reach:g}, and in how many runs it did.",
             "",
             f"| task | level | strategy | clip | runs | median | min | max | below {reach:g} at epoch (runs) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in summary:
        reached = ("never" if row["reached_runs"] == 0 else
                   f"{row['reached_epoch_median']:g} ({row['reached_runs']}/{row['runs']})")
        lines.append(f"| {row['task']} | {row['level']} | {row['strategy']} | {row['clip']} | {row['runs']} | "
                     f"{row['median']:.4g} | {row['min']:.4g} | {row['max']:.4g} | {reached} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- readings of a run

def last_window(epochs: int) -> int:
    """How many epochs up to epoch ``epochs`` a reading is the median of: the last 5 % (50 of 1000, the
    study's), at least 1."""
    return max(1, epochs // 20)


def loss_at_epoch(record: RunRecord, epoch: int, column: str = "test_loss") -> float:
    """The median of ``column`` over the :func:`last_window` of epochs ending at ``epoch`` (clamped to the
    run's last epoch; epoch 0, the untrained controller, only when it is the last)."""
    values = record.columns[column]
    end = min(len(values) - 1, epoch)
    return float(np.median(values[max(1, end - last_window(end) + 1):end + 1] if end > 0 else values[:1]))


def final_loss(record: RunRecord, column: str = "test_loss") -> float:
    """The test loss at the end: the median over the last 5 % of the run's epochs."""
    return loss_at_epoch(record, len(record.columns[column]) - 1, column)


def seeds_epochs_initial(records: Sequence[RunRecord]) -> tuple[str, str, list[float]]:
    """For the runs of one method: their seeds ("0, 1, 2"), their numbers of epochs ("300", or
    "156/300" when they differ) and their test losses at epoch 0."""
    seeds = ", ".join(str(record.config.get("seed")) for record in records)
    epochs = "/".join(map(str, sorted({len(record.columns["test_loss"]) - 1 for record in records})))
    return seeds, epochs, [float(record.columns["test_loss"][0]) for record in records]


def _short_number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def median_range(values: Sequence[float]) -> str:
    """``median (min–max)`` of ``values`` to 3 significant digits (the value alone for one; ``min to max``
    when the minimum is negative, so that no minus sign follows the dash)."""
    if len(values) == 1:
        return _short_number(values[0])
    dash = " to " if min(values) < 0 else "–"
    return (f"{_short_number(float(np.median(values)))} "
            f"({_short_number(min(values))}{dash}{_short_number(max(values))})")


def tables_and_figure_command(description: str, markdown: Callable[[Sequence[str]], str],
                              plot: Callable[[Sequence[str], Path], Any], argv: Sequence[str] | None = None) -> int:
    """The command line of a docs script that prints the Markdown tables of some runs and may plot them:
    ``RUNS... [--plot PNG]``, where RUNS are run archives or folders of run directories. Bad runs or a
    path that cannot be written end in a one-line usage error (exit status 2)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run archives (.csv.gz) or folders of run directories")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure (PNG) here")
    args = parser.parse_args(argv)
    try:
        sys.stdout.write(markdown(args.runs))
        if args.plot is not None:
            plot(args.runs, args.plot)
    except (ValueError, OSError, KeyError) as error:
        parser.error(str(error))
    return 0
