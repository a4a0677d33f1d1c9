"""Trained policies you can load (trainers.policy) and the one evaluator (trainers.evaluation): every kind of
run directory loads into a Policy whose actions drive the Gymnasium environment and whose test loss is the
one the run recorded."""

from __future__ import annotations

import json
import math
import shutil

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from trainers import Policy, TrainConfig, evaluate_policy, load_policy, rundir, train
from trainers.cli import eval_main
from trainers.engine import TrainState, run_test_states
from trainers.experiments.baseline import train_baseline
from trainers.experiments.sweep import SweepSpec, run_sweep
from trainers.policy import POLICY_FILE
from trainers.rollout import Problem, batch_of_one, rollout_loss

pytestmark = pytest.mark.usefixtures("fast_compilation")  # compilation dominates these tests

ENV_PARAMS = {"num_poles": 1, "num_steps": 20}
TINY = dict(task="cartpole", env_params=ENV_PARAMS, num_train=16, num_test=16, batch_size=8, epochs=2,
            checkpoint_every=1, seed=3)
RL_TINY = {
    "ppo": {"num_envs": 4, "batch_size": 4, "num_minibatches": 1, "unroll_length": 10, "num_updates_per_batch": 1,
            "policy_hidden_layer_sizes": [16], "value_hidden_layer_sizes": [16]},
    "sac": {"num_envs": 4, "batch_size": 8, "grad_updates_per_step": 1, "min_replay_size": 8,
            "max_replay_size": 1000, "hidden_layer_sizes": [16]},
    "apg": {"num_envs": 4, "hidden_layer_sizes": [16]},
}
RTOL = 1e-5     # the same loss through differently batched float32 programs


@pytest.fixture(scope="module")
def gradient_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient") / "run"
    return train(TrainConfig(**TINY), out=out, quiet=True)


@pytest.fixture(scope="module")
def rl_runs(tmp_path_factory):
    """One tiny run directory per RL algorithm (cart-pole of 20 steps, 3 evaluations) and its result."""
    root = tmp_path_factory.mktemp("rl")
    return {algo: train_baseline("cartpole", algo, env_params=ENV_PARAMS, seed=2, num_test=8, num_timesteps=80,
                                 eval_every=40, hyperparameters=hyper, out=root / algo, quiet=True)
            for algo, hyper in RL_TINY.items()}


def _last_test_loss(run_dir) -> float:
    return rundir.read_metrics(run_dir)[-1]["test_loss"]


def _same_tree(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                                  for x, y in zip(leaves_a, leaves_b))


# ----------------------------------------------------------------------------------- gradient runs

def test_a_training_run_loads_with_its_config_params_and_recorded_test_loss(gradient_run):
    with np.load(gradient_run.run_dir / rundir.CHECKPOINT_FILE, allow_pickle=False) as archive:   # plain npz
        assert int(archive["epoch"]) == TINY["epochs"]
        assert all(archive[name].dtype != object for name in archive.files)
    policy = load_policy(gradient_run.run_dir)
    assert isinstance(policy, Policy) and policy.kind == "gradient" and policy.task == "CartPole"
    assert policy.config == TrainConfig(**TINY) and policy.env_params == ENV_PARAMS
    assert (policy.epoch, policy.seed, policy.num_test, policy.action_scale) == (2, 3, 16, None)
    assert _same_tree(policy.params, gradient_run.params)             # the final params, exactly
    evaluation = evaluate_policy(policy, episodes=3, seed=5)
    assert evaluation.recorded_test_loss == _last_test_loss(gradient_run.run_dir)
    assert evaluation.test_loss == pytest.approx(evaluation.recorded_test_loss, rel=RTOL)
    assert evaluation.returns.shape == (3,) and evaluation.mean_return == pytest.approx(np.mean(evaluation.returns))
    assert evaluation.std_return == pytest.approx(np.std(evaluation.returns)) and evaluation.std_return > 0
    # fewer test states: the loss of the first ones, and no recorded value to compare with
    fewer = evaluate_policy(policy, num_test=4, episodes=0)
    assert math.isnan(fewer.recorded_test_loss) and math.isnan(fewer.mean_return) and fewer.returns.shape == (0,)
    assert fewer.test_loss != evaluation.test_loss
    for bad, message in ((dict(episodes=-1), "episodes must be an integer >= 0"),
                         (dict(num_test=0), "num_test must be an integer >= 1"),
                         (dict(seed=-2), "seed must be an integer >= 0")):
        with pytest.raises(ValueError, match=message):
            evaluate_policy(policy, **bad)


def test_act_and_batch_agree_with_numpy_and_jax_inputs_and_under_jit(gradient_run):
    policy = load_policy(gradient_run.run_dir)
    env = policy.make_functional_env()
    observations = np.asarray(run_test_states(env, 0, 5).physics, np.float32)
    batch = policy(observations)
    assert isinstance(batch, np.ndarray) and batch.shape == (5, 1)      # numpy in, numpy out
    expected = policy.controller().apply(policy.params, jnp.asarray(observations))
    np.testing.assert_allclose(batch, np.asarray(expected), rtol=1e-6)  # gradient runs: actions are controls
    for index in range(5):
        single = policy.act(observations[index])
        assert isinstance(single, np.ndarray) and single.shape == (1,)
        np.testing.assert_allclose(single, batch[index], rtol=1e-6, atol=1e-7)
    assert isinstance(policy(jnp.asarray(observations)), jax.Array)     # jax in, jax out
    jitted = jax.jit(lambda o: policy(o) + policy.act(o[0]))
    np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(observations))), batch + batch[0], rtol=1e-6)
    assert np.any(batch != 0)                                           # a trained (not zero) controller
    assert policy.observation_shape == (2, 2)                          # one pole: (x, θ) x (position, velocity)
    with pytest.raises(ValueError, match=r"observation must have shape \(2, 2\), got shape \(3,\)"):
        policy.act(np.zeros(3))
    with pytest.raises(ValueError, match=r"observations must have shape \(batch, 2, 2\), got shape \(2, 2\)"):
        policy(np.zeros((2, 2)))


def _gym_return(policy: Policy, physics: np.ndarray) -> float:
    env = policy.make_env()
    observation, _ = env.reset(options={"state": physics})
    total, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
        total += reward
        done = terminated or truncated
    return total


def _rollout_loss_of_one(policy: Policy, state) -> float:
    env = policy.make_functional_env()
    problem = Problem(env, env.default_params, policy.controller())
    return float(rollout_loss(problem, policy.params, batch_of_one(state)))


@pytest.mark.parametrize("kind", ["gradient", pytest.param("ppo", marks=pytest.mark.slow)])
def test_make_env_is_the_environment_the_policy_was_trained_in(kind, gradient_run, request):
    # the RL runs (brax training) only for the slow case
    run = gradient_run if kind == "gradient" else request.getfixturevalue("rl_runs")[kind]
    policy = load_policy(run.run_dir)
    env = policy.make_env()
    assert env.unwrapped.functional_env.default_params.num_poles == 1 and env.unwrapped.functional_env.num_steps() == 20
    if kind == "gradient":                        # raw controls: an unbounded action space
        assert env.action_space.high[0] == np.inf and env.unwrapped.action_scale is None
    else:                                         # brax actions in [-1, 1], scaled by the run's action_scale
        assert env.action_space.high[0] == 1.0 and env.unwrapped.action_scale == 40.0
    states = run_test_states(policy.make_functional_env(), policy.seed, 2)
    for index in range(2):
        state = jax.tree.map(lambda leaf: leaf[index], states)
        gym_return = _gym_return(policy, np.asarray(state.physics))
        assert -gym_return == pytest.approx(_rollout_loss_of_one(policy, state), rel=1e-4)
    assert policy.make_env(num_poles=2).unwrapped.functional_env.default_params.num_poles == 2
    with pytest.raises(ValueError, match="action_scale: the policy's actions are for action_scale"):
        policy.make_env(action_scale=3.0)


@pytest.mark.slow
def test_a_wrong_action_scale_would_not_reproduce_the_loss(rl_runs):
    """The mapping matters: brax's actions in an unscaled environment give another return."""
    policy = load_policy(rl_runs["ppo"].run_dir)
    state = jax.tree.map(lambda leaf: leaf[0], run_test_states(policy.make_functional_env(), policy.seed, 1))
    env = gym.make("diffenvs/CartPole-v0", **ENV_PARAMS)                # action = control, no scale
    observation, _ = env.reset(options={"state": np.asarray(state.physics)})
    total = 0.0
    for _ in range(20):
        observation, reward, _, _, _ = env.step(policy.act(observation))
        total += reward
    assert abs(-total - _rollout_loss_of_one(policy, state)) > 1e-3


# ---------------------------------------------------------------------------------------- RL runs

@pytest.mark.parametrize("algo", ["ppo", "sac", "apg"])
@pytest.mark.slow
def test_rl_runs_save_the_policy_of_their_last_evaluation(algo, rl_runs):
    result = rl_runs[algo]
    rows = rundir.read_metrics(result.run_dir)
    with np.load(result.run_dir / POLICY_FILE, allow_pickle=False) as saved:   # plain named arrays
        assert int(saved["epoch"]) == rows[-1]["epoch"] == len(rows) - 1 >= 1   # evaluations 0, 1, ...: the last
        names = set(saved.files) - {"epoch"}
        assert names and all(name.startswith(("normalizer/", "policy/")) for name in names)
        assert "normalizer/mean" in names and saved["normalizer/mean"].shape == (4,)
    config = rundir.read_config(result.run_dir)
    assert (config["observation_size"], config["action_size"]) == (4, 1)
    policy = load_policy(result.run_dir)
    assert policy.kind == algo and policy.epoch == rows[-1]["epoch"] and policy.action_scale == 40.0
    assert policy.config["algo"] == algo and policy.config["hyperparameters"]["num_envs"] == 4
    # the run ended normally, so brax returned its final params: the saved policy is them
    assert _same_tree(policy.params, (result.params[0], result.params[1]))
    evaluation = evaluate_policy(policy, episodes=2)
    assert evaluation.recorded_test_loss == rows[-1]["test_loss"]
    assert evaluation.test_loss == pytest.approx(rows[-1]["test_loss"], rel=RTOL)
    actions = policy(np.asarray(run_test_states(policy.make_functional_env(), 0, 6).physics))
    assert actions.shape == (6, 1) and np.all(np.abs(actions) <= 1.0)
    np.testing.assert_allclose(policy.act(np.asarray(run_test_states(policy.make_functional_env(), 0, 6).physics[2])),
                               actions[2], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_a_time_budget_run_saves_the_policy_of_its_last_evaluation(tmp_path):
    """brax's train is stopped by an exception at the budget and returns no params: the policy saved at
    the last evaluation is the one whose test loss is the last row."""
    result = train_baseline("cartpole", "apg", env_params=ENV_PARAMS, seed=1, num_test=8, eval_every=40,
                            time_budget_seconds=1e-3, hyperparameters=RL_TINY["apg"], out=tmp_path / "apg",
                            quiet=True)
    assert result.params is None                                       # stopped by the budget
    policy = load_policy(tmp_path / "apg")
    assert policy.epoch == result.metrics[-1]["epoch"] == len(result.metrics) - 1
    assert evaluate_policy(policy, episodes=0).test_loss == pytest.approx(result.metrics[-1]["test_loss"], rel=RTOL)


@pytest.mark.slow
def test_a_float64_run_loads_and_acts_in_float64(tmp_path):
    result = train(TrainConfig(**{**TINY, "epochs": 1}, precision="float64"), out=tmp_path / "run", quiet=True)
    policy = load_policy(tmp_path / "run")
    assert policy.precision == "float64"
    assert {np.asarray(leaf).dtype for leaf in jax.tree.leaves(policy.params)} == {np.dtype("float64")}
    assert _same_tree(policy.params, result.params)
    assert policy.act(np.zeros((2, 2), np.float32)).dtype == np.float64
    evaluation = evaluate_policy(policy, episodes=0)
    assert evaluation.test_loss == pytest.approx(_last_test_loss(tmp_path / "run"), rel=1e-12)


# ------------------------------------------------------------------------------------ sweep runs

@pytest.mark.slow
def test_a_sweep_run_loads_and_evaluates_to_its_recorded_test_loss(tmp_path):
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt",), clips=("norm",), seeds=(4,),
                     options={key: TINY[key] for key in ("num_train", "num_test", "batch_size", "epochs")}
                     | {"env_params": {"num_steps": 20}})
    result = run_sweep(spec, tmp_path, quiet=True)
    (status,) = result.runs
    policy = load_policy(status.run.run_dir)
    assert policy.kind == "gradient" and policy.config == status.run.config and policy.epoch == 2
    evaluation = evaluate_policy(policy, episodes=1)
    assert evaluation.test_loss == pytest.approx(_last_test_loss(status.run.run_dir), rel=RTOL)


# ---------------------------------------------------------------------------- older checkpoints

def test_an_old_anonymous_checkpoint_still_loads_and_resumes(gradient_run, tmp_path):
    """Checkpoints written before arrays were named hold leaf_0000, leaf_0001, ... in flattening order."""
    old = tmp_path / "old"
    shutil.copytree(gradient_run.run_dir, old)
    with np.load(old / rundir.CHECKPOINT_FILE, allow_pickle=False) as named:
        epoch = int(named["epoch"])
        config = TrainConfig(**TINY)
        problem = config.make_problem()
        params = problem.controller.init(jax.random.PRNGKey(0))
        template = TrainState(params, config.make_optimizer().init(params), jax.random.PRNGKey(0))
        leaves = [named[name] for name in rundir.array_names(template)]
    np.savez(old / rundir.CHECKPOINT_FILE, epoch=np.asarray(epoch, np.int64),
             **{f"leaf_{index:04d}": leaf for index, leaf in enumerate(leaves)})
    with np.load(old / rundir.CHECKPOINT_FILE) as written:
        assert all(name == "epoch" or name.startswith("leaf_") for name in written.files)
    assert _same_tree(load_policy(old).params, gradient_run.params)
    # and training continues from it exactly as from the named checkpoint
    new = tmp_path / "new"
    shutil.copytree(gradient_run.run_dir, new)
    from_old = train(config, out=old, quiet=True, epochs=3)
    from_new = train(config, out=new, quiet=True, epochs=3)
    assert _same_tree(from_old.params, from_new.params)
    with np.load(old / rundir.CHECKPOINT_FILE) as rewritten:          # rewritten in the named format
        assert "params/params/Dense_0/kernel" in rewritten.files


# ------------------------------------------------------------------------------------- bad input

def _one_line_error(run_dir, *fragments):
    with pytest.raises(rundir.RunDirError) as caught:
        load_policy(run_dir)
    message = str(caught.value)
    assert "\n" not in message and str(run_dir) in message
    for fragment in fragments:
        assert fragment in message, message


def test_damaged_and_foreign_directories_are_one_line_errors(gradient_run, tmp_path):
    _one_line_error(tmp_path / "missing", "is not a directory")
    (tmp_path / "file").write_text("x")
    _one_line_error(tmp_path / "file", "is not a directory")
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", "is not a run directory", "no config.json")
    for name, change, fragment in (
            ("garbage-config", lambda d: (d / rundir.CONFIG_FILE).write_text("{"), "is damaged (not valid JSON"),
            ("unknown-key", lambda d: (d / rundir.CONFIG_FILE).write_text(json.dumps(
                {**rundir.read_config(d), "colour": "red"})), "unknown key(s) ['colour']"),
            ("custom", lambda d: (d / rundir.CONFIG_FILE).write_text(json.dumps(
                {**rundir.read_config(d), "controller": "custom"})), "custom controller"),
            ("no-checkpoint", lambda d: (d / rundir.CHECKPOINT_FILE).unlink(), "holds no checkpoint.npz"),
            ("garbage-checkpoint", lambda d: (d / rundir.CHECKPOINT_FILE).write_bytes(b"garbage"),
             "is damaged (not a valid .npz archive)"),
            ("other-network", lambda d: (d / rundir.CONFIG_FILE).write_text(json.dumps(
                {**rundir.read_config(d), "env_params": {"num_poles": 2, "num_steps": 20}})),
             "does not match this configuration")):
        broken = tmp_path / name
        shutil.copytree(gradient_run.run_dir, broken)
        change(broken)
        _one_line_error(broken, fragment)


@pytest.mark.slow
def test_an_rl_run_without_its_policy_file_is_a_one_line_error(rl_runs, tmp_path):
    rl = tmp_path / "rl-without-policy"
    shutil.copytree(rl_runs["sac"].run_dir, rl)
    (rl / POLICY_FILE).unlink()
    _one_line_error(rl, "holds no policy.npz")


def test_train_config_from_dict_round_trips_and_names_unknown_keys():
    configs = [TrainConfig(), TrainConfig(**TINY),
               TrainConfig(task="guidance", strategy="truncated", truncate_every=5, clip="norm", precision="float64",
                           gradient_variance=True),
               TrainConfig(task="quantum", strategy="es", es_population=8, learning_rate=0.01),
               TrainConfig(strategy="shac", strategy_options={"horizon": 16})]
    for config in configs:
        record = json.loads(json.dumps({**config.to_dict(), "controller": "study", "diffenvs_version": "0.1.0"}))
        assert TrainConfig.from_dict(record) == config
    older = {"task": "cartpole", "env_params": {"num_poles": 2}, "strategy": "combined", "epochs": 5}  # fewer keys
    assert TrainConfig.from_dict(older) == TrainConfig(env_params={"num_poles": 2}, epochs=5)
    with pytest.raises(ValueError, match=r"^record: unknown key\(s\) \['algo', 'colour'\]"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "colour": 1, "algo": "ppo"})
    with pytest.raises(ValueError, match="strategy 'custom:mine' was a Strategy object"):
        TrainConfig.from_dict({"strategy": "custom:mine"})
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        TrainConfig.from_dict({"learning_rate": -1.0})


# ------------------------------------------------------------------------------------ diffenvs-eval

@pytest.mark.slow
def test_eval_command_prints_the_table_and_json(gradient_run, rl_runs, capsys):
    runs = [str(gradient_run.run_dir), str(rl_runs["ppo"].run_dir)]
    assert eval_main([*runs, "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "kind", "epoch", "test", "loss", "recorded", "return", "(mean", "±", "std)"]
    assert len(lines) == 3 and lines[1].split()[:3] == [runs[0], "gradient", "2"]
    assert lines[2].split()[:3] == [runs[1], "ppo", "2"] and "(2 episodes)" in lines[2]
    recorded = _last_test_loss(gradient_run.run_dir)
    assert lines[1].split()[4] == f"{recorded:.6g}"
    assert eval_main([*runs, "--episodes", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [result["kind"] for result in results] == ["gradient", "ppo"]
    for result, run in zip(results, runs):
        evaluation = evaluate_policy(load_policy(run), episodes=2)
        assert result["test_loss"] == pytest.approx(evaluation.test_loss, rel=1e-6)
        assert result["recorded_test_loss"] == _last_test_loss(run)
        assert result["mean_return"] == pytest.approx(evaluation.mean_return, rel=1e-6)
        assert result["std_return"] == pytest.approx(evaluation.std_return, rel=1e-5, abs=1e-7)


def test_eval_command_writes_an_animation_with_one_frame_per_state(gradient_run, tmp_path, capsys):
    import imageio.v2 as imageio
    path = tmp_path / "policy.gif"
    assert eval_main([str(gradient_run.run_dir), "--episodes", "0", "--animation", str(path),
                      "--animation-episodes", "2"]) == 0
    assert f"animation: {path} (42 frames)" in capsys.readouterr().out     # 2 episodes x (20 steps + 1)
    frames = imageio.mimread(path)
    assert len(frames) == 42 and frames[0].shape[2] in (3, 4)
    assert not np.array_equal(frames[0], frames[20])                   # the cart-pole moved


@pytest.mark.parametrize("arguments, message", [
    (["--episodes", "-1"], "--episodes must be an integer >= 0, got -1"),
    (["--animation", "movie.avi"], "--animation must be a path ending in .gif or .mp4"),
    (["--animation-episodes", "0"], "--animation-episodes must be an integer >= 1"),
    (["--test-size", "0"], "--test-size must be an integer >= 1"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_eval_command_refuses_bad_input_in_one_line(arguments, message, gradient_run, capsys):
    with pytest.raises(SystemExit) as raised:
        eval_main([str(gradient_run.run_dir), *arguments])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "usage" not in error


def test_eval_command_names_a_bad_run_directory_and_a_missing_mp4_writer(gradient_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        eval_main([str(tmp_path / "nowhere")])
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nowhere is not a directory" in error
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit):
            eval_main([str(gradient_run.run_dir), "--episodes", "0", "--animation", str(tmp_path / "a.mp4")])
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "MP4 needs imageio's ffmpeg plugin" in error
        assert not (tmp_path / "a.mp4").exists()
