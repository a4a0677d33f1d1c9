"""Figures and tables from run directories (synthetic ones: nothing is trained here)."""

import csv
import math
import re

import numpy as np
import pytest

from trainers import rundir
from trainers.cli import plot_main
from trainers.experiments.plotting import (
    find_runs, moving_average, plot_runs, plot_study, runs_figure, strategy_label, study_figure, summary_table,
    x_values,
)


def _trainer_run(root, name, *, level=1, strategy="bptt", clip="none", seed=0, epochs=60, scale=1.0, done=None):
    """A run directory in the trainers' format with a decaying test loss."""
    run_dir = root / name
    config = {"task": "CartPole", "env_params": {"num_poles": level}, "strategy": strategy, "clip": clip,
              "seed": seed, "num_train": 32, "batch_size": 8, "epochs": epochs, "truncate_every": None,
              "es_population": 32}
    rundir.write_config(run_dir, config)
    last = epochs if done is None else done
    rows = [{"epoch": e, "batch_loss": math.nan if e == 0 else 1.0, "train_loss": 1.0,
             "test_loss": scale * 2.0 / (1 + e), "update_norm_squared": math.nan if e == 0 else 0.5,
             "cosine": math.nan, "epoch_seconds": 0.0 if e == 0 else 0.25} for e in range(last + 1)]
    rundir.write_metrics(run_dir, rows)
    return run_dir


def _baseline_run(root, name):
    """A run directory as the RL baselines write it: fewer columns, strategy "ppo"."""
    run_dir = root / name
    rundir.write_config(run_dir, {"task": "CartPole", "env_params": {"num_poles": 2}, "strategy": "ppo",
                                  "clip": "none", "seed": 0})
    with open(run_dir / rundir.METRICS_FILE, "w") as handle:
        handle.write("epoch,env_steps,wall_seconds,train_loss,test_loss\n")
        for e in range(5):
            handle.write(f"{e},{e * 1000},{e * 1.5},1.0,{1.0 / (1 + e)}\n")
        handle.write("5,5000,7.")                                      # cut short
    return run_dir


@pytest.fixture
def study_root(tmp_path):
    root = tmp_path / "sweep"
    for level in (1, 2, 3):
        for strategy in ("bptt", "combined"):
            for clip in ("none", "norm"):
                for seed in (0, 1, 2):
                    _trainer_run(root, f"l{level}-{strategy}-{clip}-{seed}", level=level, strategy=strategy,
                                 clip=clip, seed=seed, scale=1 + seed)
    _trainer_run(root, "partial", level=4, strategy="truncated", clip="value", done=10)
    _baseline_run(root / "baselines", "ppo")
    return root


def test_x_axes_are_derived_for_trainer_runs_and_read_for_baselines(study_root):
    trainer = find_runs([study_root / "l1-bptt-none-0"])[0]
    np.testing.assert_array_equal(x_values(trainer, "epoch"), np.arange(61))
    # env steps = epoch x (32 // 8) x 8 x 100 steps of the cart-pole
    np.testing.assert_array_equal(x_values(trainer, "env_steps"), np.arange(61) * 32 * 100)
    np.testing.assert_allclose(x_values(trainer, "wall_seconds"), np.arange(61) * 0.25)
    baseline = find_runs([study_root / "baselines" / "ppo"])[0]
    assert len(baseline.columns["test_loss"]) == 5                         # the cut-short line is dropped
    np.testing.assert_array_equal(x_values(baseline, "env_steps"), np.arange(5) * 1000)
    np.testing.assert_array_equal(x_values(baseline, "wall_seconds"), np.arange(5) * 1.5)
    with pytest.raises(ValueError, match="x must be one of"):
        x_values(trainer, "seconds")


@pytest.mark.slow
@pytest.mark.parametrize("x", ["env_steps", "wall_seconds"])
def test_plot_runs_mixes_trainer_and_baseline_runs(study_root, tmp_path, x):
    out = plot_runs([study_root / "l2-combined-norm-0", study_root / "baselines" / "ppo"], tmp_path / f"{x}.png",
                    smooth=3, x=x)
    assert out.stat().st_size > 1000


def test_rl_runs_are_never_drawn_against_epochs(study_root):
    runs = [study_root / "l2-combined-norm-0", study_root / "baselines" / "ppo"]
    with pytest.raises(ValueError, match=r"x: the RL baseline runs \(ppo\) have no epochs"):
        runs_figure(runs, x="epoch")
    figure = runs_figure(runs)                                   # by default: environment steps
    (axes,) = figure.axes
    assert axes.get_xlabel() == "environment steps"
    assert [line.get_label() for line in axes.get_lines()] == ["combined, clip norm", "ppo"]
    assert runs_figure([study_root / "l2-combined-norm-0"]).axes[0].get_xlabel() == "epoch"


def test_plots_tell_runs_apart(study_root):
    runs = [study_root / name for name in ("l1-bptt-none-0", "l2-bptt-none-0", "l2-bptt-none-1", "l2-bptt-norm-0",
                                           "l2-combined-none-0")]
    runs.append(study_root / "baselines" / "ppo")
    figure = runs_figure(runs)
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["cartpole, 1 pole", "cartpole, 2 poles"]
    one, two = ({line.get_label(): line for line in axes.get_lines()} for axes in panels)
    assert sorted(two) == ["bptt, clip none (seed 0)", "bptt, clip none (seed 1)", "bptt, clip norm",
                           "combined, clip none", "ppo"]
    # one colour per strategy (the same in every panel), one line style per clipping mode
    assert one["bptt, clip none"].get_color() == two["bptt, clip none (seed 0)"].get_color() \
        == two["bptt, clip norm"].get_color()
    assert len({two[label].get_color() for label in ("bptt, clip norm", "combined, clip none", "ppo")}) == 3
    assert two["bptt, clip none (seed 0)"].get_linestyle() == "-" and two["bptt, clip norm"].get_linestyle() == ":"
    # two runs of one strategy and clipping mode differ by a marker as well as by their legend entry
    assert two["bptt, clip none (seed 0)"].get_marker() in ("None", None, "")
    assert two["bptt, clip none (seed 1)"].get_marker() == "o"
    assert figure.legends and len(figure.legends[0].get_texts()) == 6


def test_single_run_title_names_the_level(study_root):
    assert runs_figure([study_root / "l2-bptt-none-0"]).axes[0].get_title() == "cartpole, 2 poles"
    assert runs_figure([study_root / "l1-bptt-none-0"]).axes[0].get_title() == "cartpole, 1 pole"
    assert runs_figure([study_root / "l1-bptt-none-0"], title="mine").axes[0].get_title() == "mine"


@pytest.mark.slow
def test_study_figure_and_table(study_root, tmp_path):
    figure = plot_study([study_root], "cartpole", tmp_path / "study.png", x="env_steps")
    assert figure.stat().st_size > 5000
    runs, summary, markdown = summary_table([study_root], tmp_path / "table" / "summary.csv", last=50)
    assert len(runs) == 3 * 2 * 2 * 3 + 2
    one = next(row for row in summary if (row["level"], row["strategy"], row["clip"]) == (1, "bptt", "none"))
    # per run: the median over epochs 11..60 of s·2/(1 + e); the seeds have s = 1, 2, 3
    per_run = np.median(2.0 / (1 + np.arange(11, 61)))
    assert one["runs"] == 3
    assert one["median"] == pytest.approx(2 * per_run) and one["min"] == pytest.approx(per_run)
    assert one["max"] == pytest.approx(3 * per_run)
    statuses = {row["strategy"]: row["status"] for row in runs}
    assert statuses["truncated"] == "partial" and statuses["ppo"] == "finished"
    with open(tmp_path / "table" / "summary.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(summary) == 3 * 2 * 2 + 2
    assert (tmp_path / "table" / "summary_runs.csv").exists()
    assert (tmp_path / "table" / "summary.md").read_text() == markdown
    assert "| CartPole | 1 | bptt | none | 3 |" in markdown


def test_table_reports_when_the_loss_itself_reaches_a_level(study_root, tmp_path):
    runs, summary, markdown = summary_table([study_root], tmp_path / "summary.csv", reach=0.09, smooth=30)

    def first_epoch_below(scale):                 # the raw test loss scale·2/(1 + e), computed directly
        return next((epoch for epoch in range(61) if scale * 2.0 / (1 + epoch) < 0.09), None)

    expected = [first_epoch_below(scale) for scale in (1.0, 2.0, 3.0)]
    assert expected == [22, 44, None]                              # the test bites: seed 2 never gets there
    bptt = sorted((row for row in runs if (row["level"], row["strategy"], row["clip"]) == (1, "bptt", "none")),
                  key=lambda row: row["seed"])
    assert [row["reached_epoch"] for row in bptt] == expected
    assert bptt[0]["best_smoothed"] == pytest.approx(np.mean(2.0 / (1 + np.arange(31, 61))))
    one = next(row for row in summary if (row["level"], row["strategy"], row["clip"]) == (1, "bptt", "none"))
    assert one["reached_runs"] == 2 and one["reached_epoch_median"] == pytest.approx(np.median(expected[:2]))
    assert f"| {np.median(expected[:2]):g} (2/3) |" in markdown
    with open(tmp_path / "summary_runs.csv", newline="") as handle:
        assert [row["reached_epoch"] for row in csv.DictReader(handle)][:3] == [str(expected[0]), str(expected[1]), ""]


def test_the_default_smoothing_never_hides_when_a_short_run_crossed(tmp_path, capsys):
    run = _trainer_run(tmp_path / "runs", "short", epochs=50)       # 2/(1 + e) < 0.1 from epoch 20 on
    assert plot_main([str(tmp_path / "runs"), "--table", str(tmp_path / "t.csv"), "--reach", "0.1"]) == 0
    assert "| CartPole | 1 | bptt | none | 1 |" in capsys.readouterr().out
    (row,) = summary_table([run], tmp_path / "u.csv", reach=0.1)[0]
    assert row["reached_epoch"] == 20
    # the figure smooths a short run over a tenth of it (5 rows of 51), not 30 rows
    figure = study_figure([run], "cartpole")
    (line,) = figure.axes[0].get_lines()
    np.testing.assert_allclose(line.get_ydata(), moving_average(2.0 / (1 + np.arange(51)), 5))
    assert "moving average over 5 rows" in figure._suptitle.get_text()


def test_study_figure_draws_only_levels_with_runs_and_readable_ticks(tmp_path):
    import matplotlib.ticker as ticker

    root = tmp_path / "runs"
    _trainer_run(root, "one", level=1, epochs=12)
    _trainer_run(root, "three", level=3, epochs=12, scale=1.05)
    figure = study_figure([root], "cartpole")
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_title() for axes in panels] == ["1 pole", "3 poles"]
    narrow = runs_figure([_trainer_run(tmp_path, "narrow", epochs=5, scale=1.0)])  # 2 .. 0.33: under a decade
    for axes in [*panels, *narrow.axes]:
        figure.canvas.draw()
        narrow.canvas.draw()
        assert isinstance(axes.xaxis.get_major_locator(), ticker.MaxNLocator)
        low, high = axes.get_xlim()
        ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks        # no half epochs
        labels = [label.get_text() for label in axes.get_yticklabels(minor=True) + axes.get_yticklabels()]
        shown = [label for label in labels if label]
        assert shown and all(re.fullmatch(r"[0-9.]+", label) for label in shown), shown  # no 2×10^0


    with pytest.raises(ValueError, match="reach must be a finite loss > 0, got -1"):
        summary_table([study_root], tmp_path / "bad.csv", reach=-1.0)


@pytest.mark.slow
def test_plot_command(study_root, tmp_path, capsys):
    assert plot_main([str(study_root), "--study", "cartpole", "--out", str(tmp_path / "s.png"),
                      "--table", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 5000 and (tmp_path / "t.csv").exists()
    assert "| CartPole |" in capsys.readouterr().out
    assert plot_main([str(study_root / "l1-bptt-none-0"), "--x", "wall_seconds", "--out",
                      str(tmp_path / "w.png")]) == 0
    assert (tmp_path / "w.png").exists()
    with pytest.raises(SystemExit):
        plot_main([str(study_root), "--study", "pendulum", "--out", str(tmp_path / "p.png")])
    assert "name must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path / "missing")])


def test_moving_average_is_trailing():
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_strategy_labels_tell_truncation_and_non_default_es_settings_apart():
    assert strategy_label({"strategy": "truncated", "truncate_every": 16}) == "truncated(16)"
    assert strategy_label({"strategy": "es", "es_population": 32, "es_noise": 0.02}) == "es"
    assert strategy_label({"strategy": "es", "es_population": 32, "es_noise": 0.5}) == "es(32,0.5)"
    assert strategy_label({"strategy": "es", "es_population": 8}) == "es(8,0.02)"
    assert strategy_label({"strategy": "combined", "es_noise": 0.5}) == "combined"
