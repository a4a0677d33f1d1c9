"""The RL comparison runner: cases, skipping finished runs, the table and the figure (tiny budgets)."""

import csv
import math

import numpy as np
import pytest

from trainers import rundir
from trainers.experiments.comparison import (comparison_table, main, parse_case, run_comparison, run_name, steps_table,
                                 write_table)
from trainers.experiments.plotting import plot_comparison

APG_TINY = {"eval_every": 400, "hyperparameters": {"num_envs": 4, "hidden_layer_sizes": [16]}, "num_test": 8}


def test_cases_are_parsed_and_bad_ones_named():
    assert parse_case("cartpole:4") == ("CartPole", 4)
    assert parse_case("guidance:0.01") == ("GuidanceByRepulsion", 0.01)
    assert parse_case("quantum:3") == ("QuantumControl", 3)
    for bad in ("cartpole", "cartpole:7", "guidance:0.5", "quantum:x", "pendulum:1"):
        with pytest.raises(ValueError, match="cases: "):
            parse_case(bad)
    with pytest.raises(ValueError, match="methods: 'ddpg' is not one of"):
        run_comparison("unused", cases=["cartpole:1"], methods=["ddpg"])
    with pytest.raises(ValueError, match="minutes must be a finite number > 0"):
        run_comparison("unused", cases=["cartpole:1"], methods=["bptt"], minutes=0)


@pytest.fixture(scope="module")
def comparison_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("comparison")
    run_comparison(root, cases=["cartpole:1"], methods=["apg", "bptt"], minutes=0.002,
                   baseline_options={"apg": APG_TINY}, log=lambda text: None)
    return root


@pytest.mark.slow
def test_runs_stop_at_the_budget_and_finished_runs_are_skipped(comparison_root):
    apg = comparison_root / run_name("CartPole", 1, "apg", 0)
    bptt = comparison_root / run_name("CartPole", 1, "bptt", 0)
    apg_rows, bptt_rows = rundir.read_metrics(apg), rundir.read_metrics(bptt)
    assert apg_rows[-1]["wall_seconds"] >= 0.12            # stopped at the first evaluation past the budget
    # the gradient run stops after the first epoch that reaches 0.12 s of summed epoch time
    seconds = np.cumsum([row["epoch_seconds"] for row in bptt_rows])
    assert seconds[-1] >= 0.12 and (len(seconds) == 2 or seconds[-2] < 0.12)
    log = []
    run_comparison(comparison_root, cases=["cartpole:1"], methods=["apg", "bptt"], minutes=0.002,
                   baseline_options={"apg": APG_TINY}, log=log.append)
    assert log == [f"{apg.name}: finished, skipped", f"{bptt.name}: bptt (clip norm) for 0.002 min"]
    assert [row["wall_seconds"] for row in rundir.read_metrics(apg)] == [row["wall_seconds"] for row in apg_rows]
    assert len(rundir.read_metrics(bptt)) == len(bptt_rows)            # budget spent: no new epoch


@pytest.mark.slow
def test_table_and_figure(comparison_root, tmp_path, capsys):
    rows = comparison_table([comparison_root])
    assert [row["method"] for row in rows] == ["apg", "bptt"]
    bptt = rows[1]
    metrics = rundir.read_metrics(comparison_root / run_name("CartPole", 1, "bptt", 0))
    assert bptt["loss_final"] == pytest.approx(metrics[-1]["test_loss"])
    assert bptt["loss_best"] == pytest.approx(min(row["test_loss"] for row in metrics))
    assert bptt["env_steps"] == (len(metrics) - 1) * 256 * 100        # epochs x training states x steps
    # the whole run is under a minute: no loss at 1 or 5 minutes (NaN, "–" in the table), not its last one
    assert math.isnan(bptt["loss_1min"]) and math.isnan(bptt["loss_5min"])
    out = write_table(rows, tmp_path / "table.csv")
    with open(out, newline="") as handle:
        assert [row["method"] for row in csv.DictReader(handle)] == ["apg", "bptt"]
    assert (f"| CartPole | 1 | bptt | {bptt['loss_start']:.3g} | – | – | {bptt['loss_final']:.3g} |"
            in out.with_suffix(".md").read_text())
    figure = plot_comparison([comparison_root], tmp_path / "figure.png")
    assert figure.stat().st_size > 5000
    height = int.from_bytes(figure.read_bytes()[20:24], "big")          # PNG header: one row of panels,
    assert height == round(3.4 * 120)                                    # RL and gradient runs together
    assert main([str(comparison_root), "--cases", "cartpole:1", "--methods", "apg", "bptt", "--report-only",
                 "--plot", str(tmp_path / "cli.png")]) == 0
    assert "| CartPole | 1 | apg |" in capsys.readouterr().out and (tmp_path / "cli.png").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "empty"), "--report-only"])
    assert "no comparison runs" in capsys.readouterr().err


@pytest.mark.slow
def test_loss_at_equal_environment_steps(comparison_root, tmp_path, capsys):
    # a run of five epochs with known test losses, in the trainers' format
    source = comparison_root / run_name("CartPole", 1, "bptt", 0)
    run = tmp_path / "runs" / source.name
    run.mkdir(parents=True)
    (run / rundir.CONFIG_FILE).write_text((source / rundir.CONFIG_FILE).read_text())
    with open(source / rundir.METRICS_FILE, newline="") as handle:
        template = list(csv.DictReader(handle))[0]
    losses = [2.0, 1.0, 0.5, 0.7, 0.25, 0.3]
    with open(run / rundir.METRICS_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(template), lineterminator="\n")
        writer.writeheader()
        for epoch, loss in enumerate(losses):
            writer.writerow({**template, "epoch": epoch, "test_loss": repr(loss)})
    epoch_steps = 256 * 100                                          # training states x steps per epoch
    rows = steps_table([run], [epoch_steps, 2.9 * epoch_steps, 5 * epoch_steps, 5 * epoch_steps + 1])
    assert len(rows) == 1 and rows[0]["method"] == "bptt" and rows[0]["env_steps"] == 5 * epoch_steps
    # the last evaluation at or before each count (not the nearest one); NaN past the run's end
    assert [rows[0][f"steps_{count}"] for count in (epoch_steps, int(2.9 * epoch_steps), 5 * epoch_steps)] \
        == [1.0, 0.5, 0.3]
    assert math.isnan(rows[0][f"steps_{5 * epoch_steps + 1}"])
    assert rows[0]["loss_last_median"] == pytest.approx(np.median(losses))
    assert [row["method"] for row in steps_table([comparison_root], [epoch_steps])] == ["apg", "bptt"]
    assert main([str(tmp_path / "runs"), "--cases", "cartpole:1", "--methods", "bptt", "--report-only",
                 "--at-steps", str(2.9 * epoch_steps), "1e12", "--table", str(tmp_path / "table.csv")]) == 0
    assert "| CartPole | 1 | bptt | 0.5 | – | 1.28e+05 | 0.6 |" in (tmp_path / "table_steps.md").read_text()
    with open(tmp_path / "table_steps.csv", newline="") as handle:
        assert float(list(csv.DictReader(handle))[0][f"steps_{int(2.9 * epoch_steps)}"]) == 0.5
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(comparison_root), "--report-only", "--at-steps", "0"])
    assert "at-steps: 0.0 must be a finite number of environment steps >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_archive_keeps_the_comparison(comparison_root, tmp_path, capsys):
    archive = tmp_path / "comparison.csv.gz"
    assert main([str(comparison_root), "--cases", "cartpole:1", "--methods", "apg", "bptt", "--report-only",
                 "--archive", str(archive), "--table", str(tmp_path / "from_dirs.csv")]) == 0
    assert "archive: merged 2 runs" in capsys.readouterr().out
    # later, with the run directories gone: the table comes from the archive alone
    assert main([str(tmp_path / "gone"), "--report-only", "--archive", str(archive),
                 "--table", str(tmp_path / "from_archive.csv"), "--plot", str(tmp_path / "archive.png")]) == 0
    assert "merged" not in capsys.readouterr().out and (tmp_path / "archive.png").stat().st_size > 5000
    with open(tmp_path / "from_dirs.csv", newline="") as dirs, open(tmp_path / "from_archive.csv", newline="") as kept:
        from_dirs, from_archive = list(csv.DictReader(dirs)), list(csv.DictReader(kept))
    assert [row.pop("run_dir") for row in from_archive] == [str(archive / run_name("CartPole", 1, method, 0))
                                                             for method in ("apg", "bptt")]
    assert [row.pop("run_dir") and row for row in from_dirs] == from_archive
    # a run of another case merged later keeps the earlier ones
    bptt = comparison_root / run_name("CartPole", 1, "bptt", 0)
    other = tmp_path / "other" / run_name("CartPole", 2, "bptt", 0)
    other.mkdir(parents=True)
    for name in (rundir.CONFIG_FILE, rundir.METRICS_FILE):
        (other / name).write_text((bptt / name).read_text().replace('"num_poles": 1', '"num_poles": 2'))
    assert main([str(tmp_path / "other"), "--cases", "cartpole:2", "--methods", "bptt", "--report-only",
                 "--archive", str(archive)]) == 0
    assert [line.split(" | ")[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("| CartPole")] \
        == [["1", "apg"], ["1", "bptt"], ["2", "bptt"]]


@pytest.mark.slow
def test_both_kinds_of_comparison_runs_load_as_policies_with_their_recorded_test_loss(comparison_root):
    from trainers import evaluate_policy, load_policy
    for method, kind in (("apg", "apg"), ("bptt", "gradient")):
        run_dir = comparison_root / run_name("CartPole", 1, method, 0)
        policy = load_policy(run_dir)
        assert policy.kind == kind and policy.task == "CartPole" and policy.env_params == {"num_poles": 1}
        evaluation = evaluate_policy(policy, episodes=1)
        assert evaluation.recorded_test_loss == next(row["test_loss"] for row in rundir.read_metrics(run_dir)
                                                     if row["epoch"] == policy.epoch)
        assert evaluation.test_loss == pytest.approx(evaluation.recorded_test_loss, rel=1e-5)
