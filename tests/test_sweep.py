"""Sweeps: vmapped groups equal runs one by one, resume, parts, bad grids, gates as data, the CLI."""

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainers import rundir
from trainers.rollout import rollout_loss
from trainers.strategies import STRATEGIES, Strategy, StrategyResult, sign_agreement, truncated
from trainers.experiments.sweep import (
    FAILED_FILE, SweepSpec, config_record, main, plan, run_sweep,
)
from trainers.engine import clip_update, run_data as _run_data
from trainers.strategies import gated_fields
from trainers.training import TrainConfig, ZeroUpdateWarning, initial_states, train

TINY = dict(env_params={"num_steps": 20}, num_train=16, num_test=16, batch_size=8, epochs=4,
            checkpoint_every=2)
GRID = SweepSpec(tasks=("cartpole",), levels=(1, 2), strategies=("bptt", "combined"), clips=("none", "norm"),
                 seeds=(0,), options=TINY)
ONE_GROUP = dict(split_combined=False)       # bptt and combined in ONE program per level: gates and sign rule as data
# Runs one by one and a vmapped group compute the same numbers through differently batched (and, for the
# single-field strategies, differently ordered) float32 matmuls and reductions, so they agree to rounding
# (observed: relative differences below 3e-7), not bitwise.
RTOL, ATOL = 1e-5, 1e-7
COLUMNS = ("batch_loss", "train_loss", "test_loss", "update_norm_squared", "cosine")


def _checkpoint_leaves(run_dir):
    """The checkpoint's epoch and its controller params (the arrays named params/...), in the params'
    flattening order (flax's sorted module and parameter names)."""
    with np.load(run_dir / rundir.CHECKPOINT_FILE, allow_pickle=False) as archive:
        names = sorted(name for name in archive.files if name.startswith("params/"))
        assert names, archive.files
        return int(archive["epoch"]), [archive[name] for name in names]


def _without_time(rows):
    return [{key: "nan" if value != value else value for key, value in row.items() if key != "epoch_seconds"}
            for row in rows]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The grid trained once, uninterrupted: 2 levels -> 2 vmapped groups of 4 runs. A copy of one run
    directory taken right after epoch 2 (checkpointed) is a run that a sweep left half-way."""
    root = tmp_path_factory.mktemp("sweep")
    half_way = tmp_path_factory.mktemp("half") / "run"
    epochs = []

    def record(run, row):
        epochs.append((run.name, row["epoch"]))
        if run.config.env_params["num_poles"] == 1 and run.config.strategy == "combined" \
                and run.config.clip == "norm" and row["epoch"] == 2:
            shutil.copytree(run.run_dir, half_way)

    result = run_sweep(GRID, root, quiet=True, callback=record, **ONE_GROUP)
    return root, result, epochs, half_way


@pytest.mark.slow
def test_a_group_equals_the_same_runs_one_by_one(swept):
    root, result, epochs, half_way = swept
    groups = plan(GRID, root, **ONE_GROUP)
    assert [len(group.runs) for group in groups] == [4, 4]            # one vmapped program per level
    assert [len(group.runs) for group in plan(GRID, root)] == [2, 2, 2, 2]   # the default splits combined off
    assert {status.status for status in result.runs} == {"trained"}
    for status in result.runs:
        if status.run.config.env_params["num_poles"] != 1:
            continue
        reference = train(status.run.config, quiet=True)
        rows = rundir.read_metrics(status.run.run_dir)
        assert [row["epoch"] for row in rows] == [0, 1, 2, 3, 4]
        for mine, theirs in zip(rows, reference.metrics):
            for column in COLUMNS:
                np.testing.assert_allclose(mine[column], theirs[column], rtol=RTOL, atol=ATOL, equal_nan=True,
                                           err_msg=f"{status.run.name} epoch {mine['epoch']} {column}")
        assert rows[0]["epoch_seconds"] == 0.0 and all(row["epoch_seconds"] > 0 for row in rows[1:])
        if status.run.config.strategy == "combined":
            assert all(-1 - 1e-6 <= row["cosine"] <= 1 + 1e-6 for row in rows[1:])   # float32 rounding
        else:
            assert all(math.isnan(row["cosine"]) for row in rows)
        epoch, leaves = _checkpoint_leaves(status.run.run_dir)
        assert epoch == 4
        expected = jax.tree.leaves(reference.params)
        for mine, theirs in zip(leaves, expected, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=ATOL)
        assert np.any(leaves[-1] != 0)                                  # the runs did learn something


@pytest.mark.slow
def test_sweep_runs_are_ordinary_run_directories_that_train_resumes(swept, tmp_path):
    root, result, epochs, half_way = swept
    status = result.runs[0]
    assert rundir.read_config(status.run.run_dir) == config_record(status.run.config)
    # train() on a finished sweep run recognises it (same config.json) and does not train again
    again = train(status.run.config, out=status.run.run_dir, quiet=True)
    assert [row["epoch"] for row in again.metrics] == [0, 1, 2, 3, 4]
    _, leaves = _checkpoint_leaves(status.run.run_dir)
    assert all(np.array_equal(a, b) for a, b in zip(leaves, jax.tree.leaves(again.params), strict=True))
    # ... and continues one that a sweep left half-way (the checkpoint holds the optimizer state too)
    config = next(s.run.config for s in result.runs if s.run.name == half_way.name or
                  (s.run.config.env_params["num_poles"] == 1 and s.run.config.strategy == "combined"
                   and s.run.config.clip == "norm"))
    assert _checkpoint_leaves(half_way)[0] == 2 and len(rundir.read_metrics(half_way)) == 3
    resumed = train(config, out=half_way, quiet=True)
    reference = train(config, quiet=True)
    assert [row["epoch"] for row in resumed.metrics] == [0, 1, 2, 3, 4]
    for mine, theirs in zip(resumed.metrics, reference.metrics):
        for column in COLUMNS:
            np.testing.assert_allclose(mine[column], theirs[column], rtol=RTOL, atol=ATOL, equal_nan=True)
    assert sorted(epochs) == sorted((s.run.name, e) for s in result.runs for e in range(1, 5))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(swept, tmp_path):
    root, _, _, _ = swept
    level_two = {run.name for group in plan(GRID, tmp_path) for run in group.runs
                 if run.config.env_params["num_poles"] == 2}

    def interrupt(run, row):                       # in the second group, after epoch 3's first row
        if run.name in level_two and row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(GRID, tmp_path, quiet=True, callback=interrupt, **ONE_GROUP)
    finished = {run.name: os.stat(run.run_dir / rundir.METRICS_FILE).st_mtime_ns
                for group in plan(GRID, tmp_path) for run in group.runs if run.name not in level_two}
    for name in level_two:
        assert _checkpoint_leaves(tmp_path / name)[0] == 2                # checkpoint at 2, not at 3
    trained = []
    result = run_sweep(GRID, tmp_path, quiet=True, callback=lambda run, row: trained.append((run.name, row["epoch"])),
                       **ONE_GROUP)
    assert sorted(trained) == sorted((name, epoch) for name in level_two for epoch in (3, 4))  # from epoch 2 on
    statuses = {status.run.name: status.status for status in result.runs}
    assert all(statuses[name] == "finished" for name in finished)
    for name, mtime in finished.items():
        assert os.stat(tmp_path / name / rundir.METRICS_FILE).st_mtime_ns == mtime
    # the resumed sweep ends exactly (bitwise) where the uninterrupted one did: same program, same inputs
    for name in list(level_two) + list(finished):
        assert _without_time(rundir.read_metrics(tmp_path / name)) == _without_time(rundir.read_metrics(root / name))
        assert all(np.array_equal(a, b) for a, b in zip(_checkpoint_leaves(tmp_path / name)[1],
                                                        _checkpoint_leaves(root / name)[1]))


def test_parts_cover_the_grid_exactly_once(tmp_path):
    spec = SweepSpec(tasks=("cartpole", "guidance"), levels={"cartpole": (1, 2, 3), "guidance": (0.1, 0.01)},
                     strategies=("bptt", "combined", "es"), clips=("none", "value"), seeds=(0, 1),
                     options={"epochs": 5})
    everything = sorted(run.name for group in plan(spec, tmp_path) for run in group.runs)
    assert len(everything) == len(set(everything)) == 5 * 3 * 2 * 2
    for count in (1, 2, 3, 7):
        names = [run.name for index in range(1, count + 1)
                 for group in plan(spec, tmp_path, part=(index, count), max_group=5) for run in group.runs]
        assert sorted(names) == everything
    # gated strategies of one level share a group (combined apart by default); es has its own
    assert sorted(len(group.runs) for group in plan(spec, tmp_path)) == [4] * 15
    assert sorted(len(group.runs) for group in plan(spec, tmp_path, split_combined=False)) == [4] * 5 + [8] * 5
    assert all(len(group.runs) <= 3 for group in plan(spec, tmp_path, max_group=3))
    # names are deterministic and differ when any option differs
    again = [run.name for group in plan(spec, tmp_path) for run in group.runs]
    assert sorted(again) == everything
    other = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt",), clips=("none",),
                      options={"epochs": 5, "learning_rate": 1e-4})
    assert plan(other, tmp_path)[0].runs[0].name not in everything
    with pytest.raises(ValueError, match="part must be"):
        plan(spec, tmp_path, part=(3, 2))
    assert list(tmp_path.iterdir()) == []                                  # planning writes nothing


@pytest.mark.parametrize("arguments,message", [
    (dict(strategies=("bptt", "sideways")), "strategies: each must be one of"),
    (dict(seeds=()), "seeds must be a non-empty sequence"),
    (dict(seeds=(0, 0)), "seeds must not repeat"),
    (dict(clips=("both",)), "clips: each must be one of"),
    (dict(tasks=("pendulum",)), "name must be one of"),
    (dict(levels=(7,)), "level must be one of"),
    (dict(strategies=("truncated:x",)), "every must be an integer >= 1"),
    (dict(options={"epochs": 0}), "epochs must be an integer >= 1"),
    (dict(options={"colour": 1}), "not a TrainConfig field"),
    (dict(options={"seed": 1}), "grid axis"),
    (dict(options={"env_params": {"num_legs": 3}}), "unknown parameter"),
])
def test_bad_grids_are_rejected_before_anything_runs(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_sweep(SweepSpec(**{"tasks": ("cartpole",), **arguments}), tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_gates_as_data_reproduce_every_gated_strategy():
    """gated_fields + the run's data + clipping give each strategy's update (random, non-zero params)."""
    config = TrainConfig(task="cartpole", env_params={"num_poles": 2, "num_steps": 12, "loss_mode": "continuous"})
    problem = config.make_problem()
    env, controller = problem.env, problem.controller
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p.shape),
                          controller.init(jax.random.PRNGKey(1)))
    states = initial_states(env, jax.random.PRNGKey(2), 4)
    strategies = {**STRATEGIES, "truncated": truncated(5)}

    @jax.jit
    def both(params):
        expected = {name: s(problem, params, states, jax.random.PRNGKey(0)).update for name, s in strategies.items()}
        gates = jnp.concatenate([_run_data(TrainConfig(strategy=name), 1).gates
                                 for name in ("bptt", "modified", "network_only", "one_step")])
        _, gradients = gated_fields(problem, params, states, gates)            # 4 fields in one sweep
        fields = [jax.tree.map(lambda g: g[i], gradients) for i in range(4)]
        mine = dict(zip(("bptt", "modified", "network_only", "one_step"), fields))
        mine["combined"] = sign_agreement(fields[1], fields[0])
        data = _run_data(TrainConfig(strategy="truncated", truncate_every=5), 1)
        mine["truncated"] = jax.tree.map(lambda g: g[0], gated_fields(problem, params, states, data.gates,
                                                                      data.truncate_every)[1])
        return expected, mine

    expected, mine = both(params)
    for name in strategies:
        for a, b in zip(jax.tree.leaves(mine[name]), jax.tree.leaves(expected[name])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    different = [float(jnp.max(jnp.abs(jax.tree.leaves(expected[name])[0] - jax.tree.leaves(expected["bptt"])[0])))
                 for name in ("modified", "network_only", "one_step", "truncated")]
    assert min(different) > 1e-5                                           # the strategies do differ here
    largest = max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(expected["bptt"]))
    update = jax.tree.map(lambda g: 2 * g / largest, expected["bptt"])  # large enough for both clips to act
    for mode, clip in enumerate(("none", "value", "norm")):
        # TrainConfig.make_optimizer with SGD at learning rate 1 moves the params by minus the clipped update
        reference = TrainConfig(clip=clip, clip_threshold=0.5, optimizer="sgd", learning_rate=1.0).make_optimizer()
        step, _ = reference.update(update, reference.init(params), params)
        clipped = clip_update(update, jnp.asarray(mode), 0.5)
        for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(step)):
            np.testing.assert_allclose(a, -b, rtol=1e-6, err_msg=clip)
        if clip == "value":
            assert max(float(jnp.max(jnp.abs(leaf))) for leaf in jax.tree.leaves(clipped)) == pytest.approx(0.5)


def _clock_strategy():
    """A custom strategy whose update raises the last bias by 1 per step (SGD at rate 1) and whose loss
    turns NaN once that bias exceeds 5.5: the 7th update (epoch 4 with 2 updates per epoch) fails."""
    def compute(problem, params, states, key):
        bias = params["params"]["Dense_2"]["bias"]
        loss = jnp.where(bias[0] > 5.5, jnp.nan, rollout_loss(problem, params, states))
        update = jax.tree.map(jnp.zeros_like, params)
        update["params"]["Dense_2"]["bias"] = -jnp.ones_like(bias)
        return StrategyResult(loss, update, {})
    return Strategy("clock", compute)


def _overflow_strategy():
    """A custom strategy whose update is -1e30 on the last bias (zero elsewhere): finite, but its squared
    norm overflows float32, as `bptt`'s gradient did at quantum targets 4 and 5."""
    def compute(problem, params, states, key):
        update = jax.tree.map(jnp.zeros_like, params)
        bias = params["params"]["Dense_2"]["bias"]
        update["params"]["Dense_2"]["bias"] = jnp.full_like(bias, -1e30)
        return StrategyResult(rollout_loss(problem, params, states), update, {})
    return Strategy("overflow", compute)


@pytest.mark.slow
def test_an_overflowing_update_norm_does_not_stop_a_clipped_run(tmp_path):
    """Clipped by value the update is finite (0.5 per step on the bias), so the run trains on with the
    diagnostic logged as inf; clipped by norm optax scales by 1/inf, a zero update; unclipped the bias
    jumps by 1e30 at the first step and the run fails in epoch 1."""
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=(_overflow_strategy(),),
                     clips=("value", "norm", "none"),
                     options={**TINY, "optimizer": "sgd", "learning_rate": 1.0, "clip_threshold": 0.5,
                              "epochs": 3, "checkpoint_every": 1})
    result = run_sweep(spec, tmp_path, quiet=True)
    statuses = {status.run.config.clip: status for status in result.runs}
    assert statuses["value"].status == "trained" and statuses["norm"].status == "trained"
    for clip in ("value", "norm"):
        rows = rundir.read_metrics(statuses[clip].run.run_dir)
        assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
        assert all(row["update_norm_squared"] == math.inf for row in rows[1:])
        assert all(math.isfinite(row["test_loss"]) for row in rows)
    (value_epoch, value_leaves), (norm_epoch, norm_leaves) = (
        _checkpoint_leaves(statuses[clip].run.run_dir) for clip in ("value", "norm"))
    assert value_epoch == norm_epoch == 3
    assert all(np.all(np.isfinite(leaf)) for leaf in value_leaves + norm_leaves)
    updates = 3 * TINY["num_train"] // TINY["batch_size"]
    changed = [index for index, (a, b) in enumerate(zip(value_leaves, norm_leaves)) if not np.array_equal(a, b)]
    assert len(changed) == 1          # the bias; by norm it never moved, by value it moved 0.5 per update
    np.testing.assert_allclose(value_leaves[changed[0]] - norm_leaves[changed[0]], 0.5 * updates, rtol=1e-6)
    assert statuses["none"].status == "failed"
    assert json.loads((statuses["none"].run.run_dir / FAILED_FILE).read_text())["epoch"] == 1


@pytest.mark.slow
def test_non_finite_runs_are_marked_failed_and_skipped(tmp_path):
    """The unclipped run fails at epoch 4 and keeps its epoch-3 checkpoint; the norm-clipped run of the same
    (custom-strategy) group moves half as fast and goes on; a second sweep skips the failed run."""
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=(_clock_strategy(),), clips=("none", "norm"),
                     options={**TINY, "optimizer": "sgd", "learning_rate": 1.0, "clip_threshold": 0.5,
                              "epochs": 5, "checkpoint_every": 1})
    result = run_sweep(spec, tmp_path, quiet=True)
    statuses = {status.run.config.clip: status for status in result.runs}
    failed = statuses["none"]
    assert failed.status == "failed" and failed.epoch == 3
    assert json.loads((failed.run.run_dir / FAILED_FILE).read_text())["epoch"] == 4
    epoch, leaves = _checkpoint_leaves(failed.run.run_dir)
    assert epoch == 3 and [row["epoch"] for row in rundir.read_metrics(failed.run.run_dir)] == [0, 1, 2, 3]
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert statuses["norm"].status == "trained" and statuses["norm"].epoch == 5
    assert rundir.read_config(failed.run.run_dir)["strategy"] == "custom:clock"
    again = run_sweep(spec, tmp_path, quiet=True)
    assert {status.run.config.clip: status.status for status in again.runs} == {"none": "failed", "norm": "finished"}


def test_command_line_dry_run_and_part(tmp_path, capsys):
    arguments = [str(tmp_path), "--levels", "1", "2", "--strategies", "bptt", "combined", "--clips", "none",
                 "--epochs", "2", "--set", "num_train=16", "--set", 'env_params={"num_steps": 20}', "--dry-run"]
    assert main(arguments + ["--part", "1/2"]) == 0
    first = capsys.readouterr().out
    assert main(arguments + ["--part", "2/2"]) == 0
    second = capsys.readouterr().out
    names = [line.split()[0] for line in (first + second).splitlines() if line.startswith("  ")]
    assert len(names) == len(set(names)) == 4
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--strategies", "sideways"])
    assert "strategies: each must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--part", "0/2"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_plot_and_table_commands_on_a_sweep(swept, tmp_path, capsys):
    from trainers.cli import plot_main
    root = swept[0]
    assert plot_main([str(root), "--study", "cartpole", "--out", str(tmp_path / "study.png"), "--x", "env_steps",
                      "--table", str(tmp_path / "summary.csv")]) == 0
    assert (tmp_path / "study.png").stat().st_size > 5000
    with open(tmp_path / "summary_runs.csv") as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 8
    assert "| CartPole | 2 | combined | norm | 1 |" in capsys.readouterr().out


def _frozen_strategy() -> Strategy:
    def compute(problem, params, states, key):
        update = jax.tree.map(jnp.zeros_like, params)
        return StrategyResult(rollout_loss(problem, params, states), update, {})
    return Strategy("frozen", compute)


@pytest.mark.slow
def test_a_sweep_warns_for_each_run_whose_update_is_exactly_zero(tmp_path):
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=(_frozen_strategy(), "bptt"), clips=("none",),
                     options={**TINY, "epochs": 2})
    with pytest.warns(ZeroUpdateWarning) as caught:
        result = run_sweep(spec, tmp_path, quiet=True)
    assert [status.status for status in result.runs] == ["trained", "trained"]
    messages = [str(warning.message) for warning in caught if warning.category is ZeroUpdateWarning]
    assert len(messages) == 1 and "-frozen-" in messages[0] and "epoch 1" in messages[0]
