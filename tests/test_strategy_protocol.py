"""The strategy protocol: state owned by a strategy, its metric columns, the registry and its spellings,
and the one epoch path (a single run and a sweep group train any strategy the same way)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainers import rundir
from trainers.config import TrainConfig, strategy_fields
from trainers.strategies import (
    Strategy, StrategyResult, bptt, get_strategy, parse_strategy, strategy_names,
)
from trainers.experiments.sweep import SweepSpec, run_sweep
from trainers.training import train

TINY = dict(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, num_train=16, num_test=16,
            batch_size=8, epochs=6, checkpoint_every=2)


def _averaged_init(problem, params, key):
    return {"average": jax.tree.map(jnp.zeros_like, params), "count": jnp.zeros((), jnp.int32)}


def _averaged_compute(problem, params, states, key, state):
    """The running mean of the bptt gradients seen so far (a strategy whose result depends on its state)."""
    result = bptt(problem, params, states, key)
    count = state["count"] + 1
    average = jax.tree.map(lambda a, g: a + (g - a) / count, state["average"], result.update)
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(average)))
    return StrategyResult(result.loss, average, {"average_norm": norm}), {"average": average, "count": count}


AVERAGED = Strategy("averaged_bptt", _averaged_compute, "running mean of the bptt gradients",
                    init=_averaged_init, metric_names=("average_norm",))


def _strip(rows):
    return [{k: repr(v) for k, v in row.items() if k != "epoch_seconds"} for row in rows]


@pytest.mark.slow
def test_a_stateful_strategy_trains_and_reports_its_metric_column(tmp_path):
    result = train(TrainConfig(strategy=AVERAGED, **TINY), out=tmp_path / "run", quiet=True)
    header = (tmp_path / "run" / rundir.METRICS_FILE).read_text().splitlines()[0].split(",")
    assert header[-1] == "average_norm"
    assert all(np.isfinite(row["average_norm"]) and row["average_norm"] > 0 for row in result.metrics[1:])
    # the state matters: the same strategy restarted from zero at every batch is plain bptt
    plain = train(TrainConfig(strategy="bptt", **TINY), quiet=True)
    assert result.metrics[-1]["test_loss"] != plain.metrics[-1]["test_loss"]


@pytest.mark.slow
def test_the_strategy_state_is_checkpointed_and_resume_is_exact(tmp_path):
    uninterrupted = train(TrainConfig(strategy=AVERAGED, **TINY), quiet=True)

    def stop_at_three(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(strategy=AVERAGED, **TINY), out=tmp_path / "run", quiet=True, callback=stop_at_three)
    stateless = train(TrainConfig(strategy="bptt", **{**TINY, "epochs": 2}), out=tmp_path / "plain", quiet=True)
    problem = TrainConfig(**TINY).make_problem()
    parameter_leaves = len(jax.tree.leaves(problem.controller.init(jax.random.PRNGKey(0))))
    with np.load(tmp_path / "run" / rundir.CHECKPOINT_FILE) as mine, \
            np.load(stateless.run_dir / rundir.CHECKPOINT_FILE) as plain:
        assert int(mine["epoch"]) == 2                                # the checkpoint before the stop
        assert len(mine.files) == len(plain.files) + 1 + parameter_leaves    # + count and average
    resumed = train(TrainConfig(strategy=AVERAGED, **TINY), out=tmp_path / "run", quiet=True)
    assert _strip(resumed.metrics) == _strip(uninterrupted.metrics)


@pytest.mark.slow
def test_a_stateful_strategy_works_in_a_sweep_group(tmp_path):
    options = {key: value for key, value in TINY.items() if key != "task"}
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=(AVERAGED,), clips=("none", "norm"),
                     seeds=(0, 1), options=options)
    result = run_sweep(spec, tmp_path, quiet=True)
    assert [status.status for status in result.runs] == ["trained"] * 4
    for status in result.runs:
        rows = rundir.read_metrics(status.run.run_dir)
        assert len(rows) == TINY["epochs"] + 1 and np.isfinite(rows[-1]["average_norm"])
        alone = train(status.run.config, quiet=True)
        # the same run alone: the same program with another batch shape, equal to float rounding
        np.testing.assert_allclose([r["test_loss"] for r in rows], [r["test_loss"] for r in alone.metrics],
                                   rtol=1e-4)


@pytest.mark.slow
def test_more_epochs_continue_a_finished_run_as_if_trained_from_the_start(tmp_path):
    short = train(TrainConfig(strategy="combined", **{**TINY, "epochs": 3}), out=tmp_path / "run", quiet=True)
    assert len(short.metrics) == 4
    again = train(TrainConfig(strategy="combined", **{**TINY, "epochs": 3}), out=tmp_path / "run", quiet=True)
    assert _strip(again.metrics) == _strip(short.metrics)           # finished: nothing trained
    continued = train(TrainConfig(strategy="combined", **TINY), out=tmp_path / "run", quiet=True)
    scratch = train(TrainConfig(strategy="combined", **TINY), quiet=True)
    assert _strip(continued.metrics) == _strip(scratch.metrics)
    assert rundir.read_config(tmp_path / "run")["epochs"] == TINY["epochs"]
    fewer = train(TrainConfig(strategy="combined", **{**TINY, "epochs": 2}), out=tmp_path / "run", quiet=True)
    assert len(fewer.metrics) == TINY["epochs"] + 1                 # it keeps what it has
    assert rundir.read_config(tmp_path / "run")["epochs"] == TINY["epochs"]


@pytest.mark.slow
def test_a_sweep_asked_for_more_epochs_continues_its_runs(tmp_path):
    options = {key: value for key, value in TINY.items() if key not in ("task", "epochs")}
    spec = lambda epochs: SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt", "combined"),
                                    clips=("none",), seeds=(0,), options={**options, "epochs": epochs})
    run_sweep(spec(3), tmp_path / "a", quiet=True)
    continued = run_sweep(spec(6), tmp_path / "a", quiet=True)
    fresh = run_sweep(spec(6), tmp_path / "b", quiet=True)
    assert [s.run.name for s in continued.runs] == [s.run.name for s in fresh.runs]
    for mine, theirs in zip(continued.runs, fresh.runs):
        assert _strip(rundir.read_metrics(mine.run.run_dir)) == _strip(rundir.read_metrics(theirs.run.run_dir))


def test_strategy_spellings():
    assert parse_strategy("bptt") == ("bptt", {})
    assert parse_strategy("truncated:10") == ("truncated", {"every": 10})
    assert parse_strategy("es:population=64,noise=0.5") == ("es", {"population": 64, "noise": 0.5})
    assert strategy_fields("es:64") == {"strategy": "es", "es_population": 64}
    assert strategy_fields("truncated:5") == {"strategy": "truncated", "truncate_every": 5}
    assert get_strategy("es", {"population": 4, "noise": 0.1}).name == "es(4,0.1)"
    for bad, message in [("nope", "strategy must be one of"), ("bptt:3", "strategy must be one of"),
                         ("es:size=3", "no option 'size'"), ("truncated:a=1", "no option 'a'")]:
        with pytest.raises(ValueError, match=message):
            parse_strategy(bad)
    with pytest.raises(ValueError, match="no option 'depth'"):
        TrainConfig(strategy="es", strategy_options={"depth": 2})
    assert {"bptt", "combined", "truncated", "es"} <= set(strategy_names())


def test_records_of_earlier_runs_stay_valid():
    """strategy_options and precision are recorded only when they differ from their defaults."""
    record = TrainConfig(**TINY).to_dict()
    assert "strategy_options" not in record and "precision" not in record
    assert TrainConfig(**TINY, precision="float64").to_dict()["precision"] == "float64"


@pytest.mark.slow
def test_gradient_variance_column_is_the_mean_of_each_batch_variance():
    """With an optimizer that never moves the parameters, the column equals the mean over the epoch's
    batches of the per-episode gradient variance at the initial parameters."""
    import optax
    from trainers.experiments.diagnostics import per_episode_gradient_variance
    from trainers.training import initial_states
    config = TrainConfig(**{**TINY, "epochs": 1}, strategy="bptt", gradient_variance=True)
    result = train(config, optimizer=optax.set_to_zero(), quiet=True)
    problem = config.make_problem()
    train_key, _, init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed), 4)
    params = problem.controller.init(init_key)
    states = initial_states(problem.env, train_key, config.num_train)
    batches = [jax.tree.map(lambda x: x[i:i + 8], states) for i in range(0, config.num_train, 8)]
    expected = np.mean([float(per_episode_gradient_variance(problem, params, batch)) for batch in batches])
    assert expected > 0
    np.testing.assert_allclose(result.metrics[1]["gradient_variance"], expected, rtol=1e-4)
    assert np.isnan(result.metrics[0]["gradient_variance"])
    plain = train(TrainConfig(**{**TINY, "epochs": 1}, strategy="bptt"), optimizer=optax.set_to_zero(), quiet=True)
    assert "gradient_variance" not in plain.metrics[1]
