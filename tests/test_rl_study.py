"""The RL study's bookkeeping (budgets, successive halving, readings) and statistics, on synthetic
inputs."""

import json
import math

import numpy as np
import pytest

from trainers.experiments import rl_study
from trainers.experiments.rl_study import (
    CASES, RUNG_FRACTIONS, TUNING_GRIDS, best_settings, budget_units, evaluation_runs, full_plan, loss_at,
    plan_table, run_name, survivors_of, tuning_runs,
)

BUDGETS = {"rates": {case: {"bptt": 10.0, "combined": 8.0, "shac": 4.0, "ppo": 50_000.0, "sac": 2_000.0,
                            "apg": 30_000.0} for case in CASES}}


def _tuning_rows(case, method, rung, losses):
    """Tuning rows of ``rung`` for the settings that enter it, with the given losses in their order."""
    entered = survivors_of(rung, _tuning_rows.rows, [case])[(case, method)]
    for setting, loss in zip(entered, losses):
        spec = next(spec for spec in tuning_runs(BUDGETS, rung, {(case, method): [setting]}, [case]))
        _tuning_rows.rows.append({"task": rl_study.canonical_name(case), "level": "", "method": method,
                                  "setting": json.dumps(setting, sort_keys=True), "seed": spec.seed,
                                  "budget": spec.units, "rung": str(rung), "final_test_loss": repr(loss),
                                  "run": spec.name})
    return entered


def test_successive_halving_keeps_the_best_half_and_picks_the_best_of_the_last_rung():
    _tuning_rows.rows = []
    grid = TUNING_GRIDS["ppo"]["cartpole"]
    assert len(grid) >= 6                                       # at least 6 settings per case
    assert ("cartpole", "ppo") not in survivors_of(1, _tuning_rows.rows, ["cartpole"])
    entered = _tuning_rows("cartpole", "ppo", 0, [5.0, 1.0, math.nan, 3.0, 2.0, 4.0][:len(grid)])
    assert entered == grid
    # rung 1: the best half, best first; a NaN loss ranks last
    second = survivors_of(1, _tuning_rows.rows, ["cartpole"])[("cartpole", "ppo")]
    assert second == [grid[1], grid[4], grid[3]]
    assert ("cartpole", "ppo") not in best_settings(_tuning_rows.rows, ["cartpole"])   # rung 1 not run yet
    _tuning_rows("cartpole", "ppo", 1, [0.9, 0.5, 0.7])
    assert best_settings(_tuning_rows.rows, ["cartpole"])[("cartpole", "ppo")] == grid[4]


def test_the_plan_follows_the_settings_the_tuning_chose():
    _tuning_rows.rows = []
    grid = TUNING_GRIDS["ppo"]["cartpole"]
    _tuning_rows("cartpole", "ppo", 0, [5.0, 1.0, math.nan, 3.0, 2.0, 4.0][:len(grid)])
    _tuning_rows("cartpole", "ppo", 1, [0.9, 0.5, 0.7])
    rows = _tuning_rows.rows
    specs = [spec for spec in full_plan(BUDGETS, ["cartpole"], rows) if spec.method == "ppo"]
    assert [spec.setting for spec in specs if spec.phase == "tune1"] == [grid[1], grid[4], grid[3]]
    assert {json.dumps(spec.setting) for spec in specs if spec.phase == "eval"} == {json.dumps(grid[4])}
    done = {row["run"] for row in rows}
    table = plan_table(BUDGETS, ["cartpole"], done, rows)
    tune1 = next(line for line in table.splitlines() if line.startswith("cartpole  ppo       tune1"))
    assert tune1.split()[3:5] == ["3", "3"]                     # three runs, three done


def test_budgets_are_equal_time_in_each_methods_units():
    seconds = rl_study.budget_seconds("cartpole", BUDGETS)
    assert seconds == pytest.approx(rl_study.BUDGET_EPOCHS / 10.0)
    for method in ("combined", "shac", "ppo", "sac", "apg"):
        assert budget_units("cartpole", method, BUDGETS) / BUDGETS["rates"]["cartpole"][method] == \
            pytest.approx(seconds, rel=1e-3)
    interval = rl_study.eval_interval("cartpole", "ppo", BUDGETS)
    hyper = rl_study.rl_hyperparameters("cartpole", "ppo", {})
    assert interval % (hyper["batch_size"] * hyper["unroll_length"] * hyper["num_minibatches"]) == 0
    for rung, fraction in enumerate(RUNG_FRACTIONS):
        for spec in tuning_runs(BUDGETS, rung, survivors_of(0, [], ["cartpole"]), ["cartpole"]):
            assert spec.units % spec.eval_every == 0 and spec.seed >= 100
            assert spec.units == pytest.approx(fraction * budget_units("cartpole", spec.method, BUDGETS),
                                               rel=0.05)


def test_plan_has_every_run_once_and_counts_core_hours():
    specs = full_plan(BUDGETS)
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    evaluation = [spec for spec in specs if spec.phase == "eval"]
    for method, seeds in rl_study.EVALUATION_SEEDS.items():
        for case in CASES:
            trained = {spec.seed for spec in evaluation if spec.case == case and spec.method == method}
            expected = set(seeds) - (set(rl_study.REUSED_SEEDS) if method in rl_study.GRADIENT_METHODS else set())
            assert trained == expected, (case, method)
    long = [spec for spec in specs if spec.phase == "long"]
    assert {spec.case for spec in long} == set(rl_study.LONG_CASES) and {spec.method for spec in long} == {"ppo", "sac"}
    assert {spec.seed for spec in long} == set(rl_study.LONG_SEEDS)
    for spec in long:
        assert spec.units == pytest.approx(rl_study.LONG_FACTOR * budget_units(spec.case, spec.method, BUDGETS),
                                           rel=0.05)
    table = plan_table(BUDGETS)
    total = sum(spec.units / BUDGETS["rates"][spec.case][spec.method] for spec in specs) / 3600.0
    assert f"total {total:.1f} core-hours" in table


def test_run_names_are_distinct_and_readable():
    assert run_name("cartpole", "ppo", 0, "eval") == "cartpole-poles4-ppo-seed0"
    assert run_name("guidance", "sac", 1, "long") == "guidance-rc0.001-sac-seed1-long"
    names = {run_name("quantum", "ppo", 100, "tune0", setting) for setting in TUNING_GRIDS["ppo"]["quantum"]}
    assert len(names) == len(TUNING_GRIDS["ppo"]["quantum"])


def test_loss_at_reads_the_last_five_percent_and_refuses_unreached_budgets():
    positions = np.arange(0, 101, 1.0)
    losses = np.arange(101, 0, -1.0)
    assert loss_at(positions, losses, 100) == np.median(losses[95:])
    assert loss_at(positions, losses, 50) == np.median(losses[48:51])
    assert math.isnan(loss_at(positions, losses, 200))
    sparse = np.array([0.0, 40.0, 80.0, 120.0])
    assert loss_at(sparse, np.array([4.0, 3.0, 2.0, 1.0]), 100) == 2.0     # no evaluation in (95, 100]


def test_statistics_against_direct_computation():
    from scipy import stats
    from trainers.experiments.rl_statistics import iqm_intervals, probability_of_improvement
    rng = np.random.default_rng(1)
    scores = {"combined": rng.normal(0.9, 0.05, 8), "bptt": rng.normal(0.2, 0.05, 8),
              "ppo": rng.normal(0.88, 0.05, 8)}
    estimates = iqm_intervals(scores, repetitions=500)             # 500: a quarter of the time of 2000
    for method, values in scores.items():
        assert estimates[method].value == pytest.approx(stats.trim_mean(values, 0.25))
        assert estimates[method].low <= estimates[method].value <= estimates[method].high
    assert estimates["combined"].separated_from(estimates["bptt"])
    assert not estimates["combined"].separated_from(estimates["ppo"])
    improvement = probability_of_improvement(scores, "combined", repetitions=500)
    pairs = np.mean([[float(a > b) + 0.5 * float(a == b) for b in scores["ppo"]] for a in scores["combined"]])
    assert improvement["ppo"].value == pytest.approx(pairs)
    assert improvement["bptt"].value == 1.0
    with pytest.raises(ValueError, match=r"scores\['x'\] must be finite"):
        iqm_intervals({"x": [1.0, math.nan]})


def test_reference_loss_is_zero_control_on_the_seeds_test_states():
    import jax
    import jax.numpy as jnp
    import diffenvs
    from trainers.experiments.baseline import evaluation_states
    reference = rl_study.reference_losses("cartpole", [3], num_test=4)[3]
    env = diffenvs.make("cartpole", num_poles=4)
    states = evaluation_states("cartpole", {"num_poles": 4}, 3, 4)
    zeros = jnp.zeros((env.num_steps(), 1))
    expected = np.mean([float(env.episode_loss(jax.tree.map(lambda x: x[i], states), zeros)) for i in range(4)])
    assert reference == pytest.approx(expected, rel=1e-6)


def test_the_statistics_count_one_run_per_seed_and_leave_the_longer_runs_out():
    from trainers.experiments.rl_study import statistics_tables
    rows = []
    for seed in range(5):
        for method, score in (("combined", 0.9), ("ppo", 0.5)):
            rows.append({"case": "cartpole", "method": method, "seed": seed, "run": f"cartpole-{method}-seed{seed}",
                         "loss_T": 1.0 - score, "score_T": score + 0.01 * seed, "score_steps": score})
    for seed in range(3):                                   # longer runs on seeds 0-2: far better at T
        rows.append({"case": "cartpole", "method": "ppo", "seed": seed, "run": f"cartpole-ppo-seed{seed}-long",
                     "loss_T": 0.0, "score_T": 1.0, "score_steps": 1.0})
    table, estimates = statistics_tables(rows, repetitions=200)
    ppo_line = next(line for line in table.splitlines() if line.startswith("| cartpole | ppo |"))
    assert ppo_line.split(" | ")[2] == "5"                 # five seeds, not eight runs
    assert estimates["cartpole"]["T"]["ppo"].value == pytest.approx(0.52)     # IQM of 0.50..0.54


def test_the_separations_list_only_pairs_whose_intervals_do_not_overlap():
    from trainers.experiments.rl_statistics import Estimate
    from trainers.experiments.rl_study import separations_table
    estimates = {"cartpole": {"T": {"combined": Estimate(0.9, 0.85, 0.95), "bptt": Estimate(0.8, 0.7, 0.86),
                                    "ppo": Estimate(0.3, 0.1, 0.5)},
                              "steps": {"combined": Estimate(0.5, 0.1, 0.9), "ppo": Estimate(0.4, 0.2, 0.6)}}}
    table = separations_table(estimates, {"cartpole": {"combined": 5, "bptt": 5, "ppo": 5}})
    lines = table.splitlines()
    assert lines[2] == "| cartpole | equal time | combined > ppo; bptt > ppo | combined 5, bptt 5, ppo 5 |"
    assert lines[3] == "| cartpole | equal steps | no two intervals separate | combined 5, bptt 5, ppo 5 |"
