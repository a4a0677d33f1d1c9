"""diffenvs-baseline: brax runs evaluated on the trainers' test states with the trainers' loss, written
in the trainers' run-directory format."""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from trainers import rundir
from trainers.experiments.baseline import BASELINE_COLUMNS, evaluation_states, main, train_baseline
from trainers.networks import Controller
from trainers.rollout import Problem, rollout_loss

TINY_PPO = ["--set", "num_envs=4", "--set", "batch_size=4", "--set", "num_minibatches=1", "--set", "unroll_length=10",
            "--set", "num_updates_per_batch=1", "--set", "policy_hidden_layer_sizes=[16]",
            "--set", "value_hidden_layer_sizes=[16]"]


pytestmark = pytest.mark.usefixtures("fast_compilation")  # compilation dominates these tests


def _independent_test_states(env, seed: int, count: int):
    test_key = jax.random.split(jax.random.PRNGKey(seed), 4)[1]
    return jax.vmap(env.initial)(jax.random.split(test_key, count))


def _loss_of_policy(env, action_scale: float, make_policy, params, states) -> float:
    """The trainers' rollout_loss of action_scale * clip(deterministic brax action, -1, 1)."""
    def apply(policy_params, observations):
        batch = observations.shape[0]
        actions, _ = make_policy(policy_params, deterministic=True)(observations.reshape(batch, -1),
                                                                    jax.random.PRNGKey(0))
        return action_scale * jnp.clip(actions, -1.0, 1.0).reshape(batch, *env.action_shape())

    problem = Problem(env, env.default_params, Controller(lambda key: None, apply))
    return float(jax.jit(lambda p: rollout_loss(problem, p, states))(params))


@pytest.mark.slow
def test_command_writes_a_plottable_run_evaluated_on_the_trainers_test_set(tmp_path, capsys):
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo
    from diffenvs.brax_adapter import BraxEnv
    from trainers.experiments.baseline import default_hyperparameters
    from trainers.experiments.plotting import plot_runs, runs_figure

    out = tmp_path / "ppo"
    args = ["cartpole", "--algo", "ppo", "--poles", "2", "--seed", "3", "--timesteps", "80", "--eval-every", "40",
            "--test-size", "16", "--out", str(out), *TINY_PPO]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "Failed to import" not in "\n".join(printed)
    evaluations = [line.split(":")[0] for line in printed if line.startswith("evaluation")]
    assert evaluations == ["evaluation 0", "evaluation 1", "evaluation 2"]      # each printed once
    assert printed[-2].startswith("diffenvs-baseline: 2 evaluations after training") and str(out) in printed[-2]
    assert printed[-1] == f"plot: {out / 'test_loss.png'}"
    (axes,) = runs_figure([out]).axes                  # the run's own plot: environment steps, legend "ppo"
    assert axes.get_xlabel() == "environment steps" and axes.get_title() == "cartpole, 2 poles"
    assert [line.get_label() for line in axes.get_lines()] == ["ppo"]
    config = rundir.read_config(out)
    assert config["task"] == "cartpole" and config["env_params"] == {"num_poles": 2}
    assert (config["strategy"], config["algo"], config["clip"]) == ("ppo", "ppo", "none")
    assert (config["seed"], config["num_test"], config["action_scale"]) == (3, 16, 40.0)
    assert config["diffenvs_version"] == diffenvs.__version__ and config["resumable"] is False
    assert config["hyperparameters"]["num_envs"] == 4
    header = (out / rundir.METRICS_FILE).read_text().splitlines()[0]
    assert tuple(header.split(",")) == BASELINE_COLUMNS
    rows = rundir.read_metrics(out)
    assert [row["epoch"] for row in rows] == list(range(len(rows))) and len(rows) == 3
    assert rows[0]["env_steps"] == 0 and rows[-1]["env_steps"] >= 80
    assert all(a["env_steps"] < b["env_steps"] and a["wall_seconds"] <= b["wall_seconds"]
               for a, b in zip(rows, rows[1:]))
    assert all(math.isfinite(row["test_loss"]) and math.isnan(row["train_loss"]) for row in rows)

    # the test states are the trainers' for this seed
    env = diffenvs.make("CartPole", num_poles=2)
    states = evaluation_states("cartpole", {"num_poles": 2}, 3, 16)
    independent = _independent_test_states(env, 3, 16)
    np.testing.assert_array_equal(np.asarray(states.physics), np.asarray(independent.physics))
    np.testing.assert_array_equal(np.asarray(states.time), 0)

    # epoch 0 is the trainers' loss of the untrained policy; brax returns it for num_timesteps=0
    hyper = default_hyperparameters("ppo", "cartpole")
    for item in TINY_PPO[1::2]:
        name, value = item.split("=")
        hyper[name] = json.loads(value)
    sizes = {name: tuple(hyper.pop(name)) for name in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes")}
    for name in ("eval_every", "num_timesteps"):
        hyper.pop(name)
    make_policy, initial, _ = ppo.train(
        BraxEnv("CartPole", num_poles=2), num_timesteps=0, episode_length=100, seed=3,
        network_factory=functools.partial(ppo_networks.make_ppo_networks, **sizes), **hyper)
    expected = _loss_of_policy(env, 40.0, make_policy, initial, independent)
    assert rows[0]["test_loss"] == pytest.approx(expected, rel=1e-5)

    # diffenvs-plot accepts the run directory
    figure = plot_runs([out], tmp_path / "plot.png")
    assert figure.exists() and figure.stat().st_size > 0

    # not resumable: an existing run is refused without --overwrite, before anything compiles
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(args)
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_final_evaluation_is_the_trainers_loss_of_the_returned_policy(tmp_path):
    result = train_baseline(
        "quantum", "apg", env_params={"num_steps": 16}, action_scale=4.0, seed=1, num_test=8, num_timesteps=128,
        eval_every=64, hyperparameters={"num_envs": 4, "hidden_layer_sizes": [16], "learning_rate": 1e-2},
        out=tmp_path / "apg", quiet=True)
    rows = result.metrics
    assert [row["env_steps"] for row in rows] == [0, 64, 128]
    written = rundir.read_metrics(tmp_path / "apg")
    assert [row["test_loss"] for row in written] == pytest.approx([row["test_loss"] for row in rows], rel=1e-12)
    env = diffenvs.make("QuantumControl", num_steps=16)
    states = _independent_test_states(env, 1, 8)
    expected = _loss_of_policy(env, 4.0, result.make_policy, result.params, states)
    assert rows[-1]["test_loss"] == pytest.approx(expected, rel=1e-5)
    assert rows[0]["test_loss"] != rows[-1]["test_loss"]   # the evaluation follows the training


@pytest.mark.slow
def test_sac_keeps_the_whole_run_in_its_replay_buffer(tmp_path):
    """brax's replay queue moves all its contents on every insertion once it is full (0.4-0.6 of the
    steps per second): by default it holds every step the run takes, brax's few steps past the budget
    included, and not much more."""
    hyper = {"num_envs": 4, "batch_size": 8, "grad_updates_per_step": 1, "min_replay_size": 8,
             "hidden_layer_sizes": [16]}
    result = train_baseline("cartpole", "sac", env_params={"num_poles": 1, "num_steps": 20}, seed=0, num_test=4,
                            num_timesteps=90, eval_every=30, hyperparameters=hyper, out=tmp_path / "sac", quiet=True)
    taken = max(row["env_steps"] for row in result.metrics)
    buffer = rundir.read_config(tmp_path / "sac")["hyperparameters"]["max_replay_size"]
    assert taken > 90                                          # brax rounds up to whole actor steps
    assert taken <= buffer <= 90 + (len(result.metrics) + 1) * hyper["num_envs"]


@pytest.mark.parametrize("args, message", [
    (["cartpole", "--algo", "dqn"], "argument --algo: invalid choice: 'dqn'"),
    (["cartpole", "--algo", "ppo", "--timesteps", "0"], "--timesteps must be an integer >= 1"),
    (["cartpole", "--algo", "ppo", "--minutes", "-1"], "--minutes must be"),
    (["cartpole", "--algo", "ppo", "--rc", "0.1"], "--rc applies to the guidance task"),
    (["cartpole", "--algo", "ppo", "--set", "bogus=1"], "unknown name"),
    (["cartpole", "--algo", "ppo", "--action-scale", "0"], "--action-scale must be"),
    (["cartpole", "--algo", "sac", "--eval-every", "0"], "--eval-every must be an integer >= 1"),
    (["cartpole", "--algo", "ppo", "--test-size", "0"], "--test-size must be an integer >= 1"),
    (["cartpole", "--algo", "sac", "--set", "max_replay_size=0"], "max_replay_size must be an integer >= 1"),
])
def test_bad_input_is_refused_before_training(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main([*args, "--out", str(tmp_path / "run"), "--quiet"])
    assert raised.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_api_validation():
    with pytest.raises(ValueError, match="algo must be one of"):
        train_baseline("cartpole", "a2c")
    with pytest.raises(ValueError, match="num_timesteps must be an integer >= 1"):
        train_baseline("cartpole", "ppo", num_timesteps=-5)
    with pytest.raises(ValueError, match="time_budget_seconds"):
        train_baseline("cartpole", "ppo", time_budget_seconds=0)
    with pytest.raises(ValueError, match="name must be one of"):
        train_baseline("pendulum", "ppo")
