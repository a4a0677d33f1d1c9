"""Training: learning on the study protocol, resume, determinism, clipping, bad input, the CLI."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainers import rundir
from trainers.cli import plot_main, train_main
from trainers.networks import Controller, QuantumCNN, study_controller
from trainers.presets import hardest_level, study_preset
from trainers.strategies import Strategy, StrategyResult, bptt
from trainers.training import NonFiniteError, TrainConfig, ZeroUpdateWarning, train, warn_if_zero_update

TINY = dict(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, num_train=16, num_test=16,
            batch_size=8, epochs=6, checkpoint_every=2)


def _without_time(rows):
    """Rows without the wall time, with NaN made comparable."""
    return [{key: "nan" if value != value else value for key, value in row.items() if key != "epoch_seconds"}
            for row in rows]


def _same_params(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_combined_learns_the_one_pole_cartpole_and_one_step_does_not():
    """The study protocol on one pole: combined below 0.02 within 30 epochs, one_step above 0.5."""
    combined = train(study_preset("cartpole", 1, strategy="combined", epochs=30), quiet=True)
    one_step = train(study_preset("cartpole", 1, strategy="one_step", epochs=30), quiet=True)
    assert combined.metrics[0]["test_loss"] > 1.9          # untrained: poles hang
    assert min(row["test_loss"] for row in combined.metrics) < 0.02
    assert combined.metrics[-1]["test_loss"] < 0.02
    assert min(row["test_loss"] for row in one_step.metrics) > 0.5
    cosines = [row["cosine"] for row in combined.metrics[1:]]
    assert all(-1.0 <= c <= 1.0 for c in cosines)
    assert all(math.isnan(row["cosine"]) for row in one_step.metrics)


@pytest.mark.slow
def test_same_seed_same_metrics_and_different_seed_different():
    first = train(TrainConfig(**TINY), quiet=True)
    second = train(TrainConfig(**TINY), quiet=True)
    other = train(TrainConfig(**{**TINY, "seed": 1}), quiet=True)
    assert _without_time(first.metrics) == _without_time(second.metrics)
    assert _same_params(first.params, second.params)
    assert _without_time(first.metrics) != _without_time(other.metrics)


@pytest.mark.slow
def test_resume_after_an_interruption_is_bitwise_identical(tmp_path):
    config = TrainConfig(**TINY)
    reference = train(config, out=tmp_path / "reference", quiet=True)

    def interrupt(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out=tmp_path / "resumed", quiet=True, callback=interrupt)
    assert len(rundir.read_metrics(tmp_path / "resumed")) == 4         # epochs 0..3
    resumed = train(config, out=tmp_path / "resumed", quiet=True)
    assert _same_params(resumed.params, reference.params)
    assert _without_time(resumed.metrics) == _without_time(reference.metrics)
    assert _without_time(rundir.read_metrics(tmp_path / "resumed")) == _without_time(reference.metrics)
    # a finished run is not trained again
    again = train(config, out=tmp_path / "resumed", quiet=True)
    assert _same_params(again.params, reference.params)


def _train_in_subprocess(out, kill_at_epoch=None):
    """Train TINY into `out` in a fresh interpreter; SIGKILL itself after epoch `kill_at_epoch` is written.

    Every run of the test goes through the same fresh environment (no XLA_FLAGS inherited from
    other tests of this worker), so all of them run the same compiled program."""
    script = (
        "import os, signal\n"
        "from trainers.training import TrainConfig, train\n"
        f"config = TrainConfig(**{TINY!r})\n"
        "def kill(row):\n"
        f"    if row['epoch'] == {kill_at_epoch!r}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"train(config, out={str(out)!r}, quiet=True, callback=kill)\n")
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, env=environment)


def _checkpoint_arrays(run_dir):
    with np.load(run_dir / rundir.CHECKPOINT_FILE, allow_pickle=False) as saved:
        return {key: saved[key] for key in saved.files}


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(tmp_path):
    reference = _train_in_subprocess(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr.decode()
    killed = _train_in_subprocess(tmp_path / "killed", kill_at_epoch=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert len(rundir.read_metrics(tmp_path / "killed")) == 6          # epochs 0..5 written
    assert int(_checkpoint_arrays(tmp_path / "killed")["epoch"]) == 4  # epoch 5 was not checkpointed
    resumed = _train_in_subprocess(tmp_path / "killed")                # resumes from epoch 4
    assert resumed.returncode == 0, resumed.stderr.decode()
    expected, got = _checkpoint_arrays(tmp_path / "reference"), _checkpoint_arrays(tmp_path / "killed")
    assert int(got["epoch"]) == int(expected["epoch"])
    assert sorted(got) == sorted(expected)
    assert all(np.array_equal(got[key], expected[key]) for key in expected)
    assert (_without_time(rundir.read_metrics(tmp_path / "killed"))
            == _without_time(rundir.read_metrics(tmp_path / "reference")))


@pytest.mark.slow
def test_a_wall_time_budget_stops_with_a_checkpoint_and_the_run_continues_exactly(tmp_path):
    config = TrainConfig(**TINY)
    reference = train(config, out=tmp_path / "reference", quiet=True)
    out = tmp_path / "budget"
    stopped = train(config, out=out, quiet=True, minutes=1e-9)        # any epoch takes longer than that
    assert [row["epoch"] for row in stopped.metrics] == [0, 1]
    with np.load(out / rundir.CHECKPOINT_FILE, allow_pickle=False) as saved:
        assert int(saved["epoch"]) == 1                                   # checkpointed off the 2-epoch grid
    assert _same_params(stopped.params, train(config, epochs=1, quiet=True).params)
    again = train(config, out=out, quiet=True, minutes=1e-9)          # the budget is already spent
    assert [row["epoch"] for row in again.metrics] == [0, 1]
    finished = train(config, out=out, quiet=True)                      # no budget: on to config.epochs
    assert _same_params(finished.params, reference.params)
    assert _without_time(finished.metrics) == _without_time(reference.metrics)
    for minutes in (0, -1.0, math.inf, True):
        with pytest.raises(ValueError, match="minutes must be a finite number > 0"):
            train(config, quiet=True, minutes=minutes)


@pytest.mark.slow
def test_a_cut_short_metrics_line_is_dropped_on_resume(tmp_path):
    config = TrainConfig(**TINY)
    reference = train(config, out=tmp_path / "reference", quiet=True)
    def interrupt(row):
        if row["epoch"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, out=tmp_path / "run", quiet=True, callback=interrupt)
    with open(tmp_path / "run" / rundir.METRICS_FILE, "a") as handle:
        handle.write("5,0.1,0.")                                       # a write cut short
    resumed = train(config, out=tmp_path / "run", quiet=True)
    assert _same_params(resumed.params, reference.params)


@pytest.mark.slow
def test_a_different_configuration_in_the_run_directory_is_refused(tmp_path):
    train(TrainConfig(**TINY), out=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="different configuration.*learning_rate"):
        train(TrainConfig(**{**TINY, "learning_rate": 0.01}), out=tmp_path, quiet=True)
    result = train(TrainConfig(**{**TINY, "learning_rate": 0.01, "epochs": 1}), out=tmp_path, quiet=True,
                   overwrite=True)
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path)] == [0, 1]
    assert result.metrics[-1]["epoch"] == 1


@pytest.mark.slow          # the fast tier checks the checkpoint of tests/test_policy.py's run the same way
def test_checkpoints_are_plain_npz_without_pickles(tmp_path):
    train(TrainConfig(**TINY), out=tmp_path, quiet=True)
    with np.load(tmp_path / rundir.CHECKPOINT_FILE, allow_pickle=False) as archive:
        assert int(archive["epoch"]) == TINY["epochs"]
        assert all(archive[name].dtype != object for name in archive.files)


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["value", "norm"])
def test_clipping_bounds_the_update(clip):
    """With plain SGD at learning rate 1, one update moves the weights by the clipped update."""
    threshold = 1e-4
    config = TrainConfig(**{**TINY, "num_train": 8, "epochs": 1, "optimizer": "sgd", "learning_rate": 1.0,
                            "clip": clip, "clip_threshold": threshold, "strategy": "bptt"})
    env = config.make_env()
    controller = study_controller(env.name, env.physics_shape(), env.action_shape())
    initial = controller.init(jax.random.split(jax.random.PRNGKey(config.seed), 4)[2])
    result = train(config, quiet=True)
    step = np.concatenate([np.ravel(a - b) for a, b in zip(jax.tree.leaves(result.params),
                                                           jax.tree.leaves(initial))])
    assert result.metrics[1]["update_norm_squared"] > threshold**2          # the clip was active
    if clip == "value":
        assert np.max(np.abs(step)) <= threshold * (1 + 1e-5)
        assert np.max(np.abs(step)) >= threshold * (1 - 1e-5)
    else:
        np.testing.assert_allclose(np.linalg.norm(step), threshold, rtol=1e-3)


@pytest.mark.parametrize("overrides,message", [
    ({"strategy": "sideways"}, "strategy must be one of"),
    ({"optimizer": "adamw2"}, "optimizer must be one of"),
    ({"batch_size": 300}, "batch_size must be at most num_train"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
    ({"learning_rate": -1e-3}, "learning_rate must be a finite number > 0"),
    ({"clip": "both"}, "clip must be one of"),
    ({"task": "pendulum"}, "name must be one of"),
])
def test_bad_training_input_is_rejected_before_compiling(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_make_problem_builds_the_configured_task_with_the_given_or_the_study_controller():
    config = TrainConfig(task="cartpole", env_params={"num_poles": 3, "num_steps": 7})
    problem = config.make_problem()
    assert problem.num_steps == 7
    assert problem.env_params.num_poles == 3
    study = study_controller(problem.env.name, problem.env.physics_shape(), problem.env.action_shape())
    assert jax.tree.map(jnp.shape, problem.controller.init(jax.random.PRNGKey(0))) == \
        jax.tree.map(jnp.shape, study.init(jax.random.PRNGKey(0)))
    custom = Controller(init=lambda key: jnp.zeros(1), apply=lambda params, observations: observations[:, :1])
    assert config.make_problem(custom).controller is custom


@pytest.mark.slow
def test_non_finite_losses_stop_the_run_and_keep_the_checkpoint(tmp_path):
    """A controller that turns NaN after 6 updates (2 per epoch): epoch 3 fails, epoch 2 is kept."""
    config = TrainConfig(**{**TINY, "optimizer": "sgd", "learning_rate": 1.0, "checkpoint_every": 1})
    env = config.make_env()
    network = study_controller(env.name, env.physics_shape(), env.action_shape())

    def apply(params, observations):
        forces = network.apply(params["network"], observations)
        return jnp.where(params["clock"][0] > 5.5, jnp.nan, forces)

    controller = Controller(init=lambda key: {"network": network.init(key), "clock": jnp.zeros(1)},
                            apply=apply)

    def count_updates(problem, params, states, key):   # descending -1 moves the clock by +1
        loss, update, metrics = bptt(problem, params, states, key)
        zeros = jax.tree.map(jnp.zeros_like, update["network"])
        return StrategyResult(loss, {"network": zeros, "clock": -jnp.ones(1)}, metrics)

    config = dataclasses.replace(config, strategy=Strategy("count_updates", count_updates))
    with pytest.raises(NonFiniteError, match="epoch 3: non-finite"):
        train(config, out=tmp_path, quiet=True, controller=controller)
    with np.load(tmp_path / rundir.CHECKPOINT_FILE, allow_pickle=False) as saved:
        assert int(saved["epoch"]) == 2
        assert all(np.all(np.isfinite(saved[name])) for name in saved.files)
    assert rundir.read_config(tmp_path)["strategy"] == "custom:count_updates"
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path)] == [0, 1, 2]


def _spare_parameter_run(update_value: float, clip: str, tmp_path):
    """Train a cart-pole controller with an extra parameter the network never reads, whose update is
    ``update_value`` (the network's update is zero), SGD at rate 1: the loss stays finite whatever happens
    to the spare parameter."""
    config = TrainConfig(**{**TINY, "optimizer": "sgd", "learning_rate": 1.0, "clip": clip, "clip_threshold": 0.5,
                            "epochs": 3, "checkpoint_every": 1})
    env = config.make_env()
    network = study_controller(env.name, env.physics_shape(), env.action_shape())
    controller = Controller(init=lambda key: {"network": network.init(key), "spare": jnp.zeros(1)},
                            apply=lambda params, observations: network.apply(params["network"], observations))

    def spare_update(problem, params, states, key):
        loss, update, metrics = bptt(problem, params, states, key)
        zeros = jax.tree.map(jnp.zeros_like, update["network"])
        return StrategyResult(loss, {"network": zeros, "spare": jnp.full(1, update_value)}, metrics)

    config = dataclasses.replace(config, strategy=Strategy("spare_update", spare_update))
    return train(config, out=tmp_path, quiet=True, controller=controller)


@pytest.mark.slow
def test_an_overflowing_update_norm_with_a_finite_clipped_update_trains_on(tmp_path):
    """1e30 squared overflows float32: logged as inf, but clipped by value the step is 0.5 and training goes on."""
    result = _spare_parameter_run(1e30, "value", tmp_path)
    assert [row["epoch"] for row in result.metrics] == [0, 1, 2, 3]
    assert all(row["update_norm_squared"] == math.inf for row in result.metrics[1:])
    updates = 3 * TINY["num_train"] // TINY["batch_size"]
    assert float(result.params["spare"][0]) == pytest.approx(-0.5 * updates)


@pytest.mark.slow
def test_non_finite_parameters_stop_the_run_even_with_a_finite_loss(tmp_path):
    with pytest.raises(NonFiniteError, match="epoch 1: non-finite loss, parameters or optimizer state"):
        _spare_parameter_run(math.inf, "none", tmp_path)
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path)] == [0]


@pytest.mark.slow
def test_quantum_cnn_has_the_study_shapes():
    network = QuantumCNN(output_shape=(1,))
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 2)))["params"]
    shapes = {name: tuple(layer["kernel"].shape) for name, layer in params.items()}
    assert shapes == {"Conv_0": (3, 2, 1, 60), "Conv_1": (3, 60, 60), "Dense_0": (420, 1)}
    assert np.any(params["Dense_0"]["kernel"] != 0)                        # not zeroed for quantum
    assert network.apply({"params": params}, jnp.ones((5, 32, 2))).shape == (5, 1)


@pytest.mark.slow
def test_quantum_cnn_equals_flax_convolutions():
    """The slice-based StridedConv layers give flax nn.Conv's params and outputs (and gradients)."""
    import flax.linen as nn

    class ConvReference(nn.Module):
        @nn.compact
        def __call__(self, observations):
            glorot = nn.initializers.glorot_uniform()
            hidden = jnp.tanh(nn.Conv(60, (3, 2), strides=(2, 2), padding="VALID", kernel_init=glorot)(
                observations[..., None]))
            hidden = hidden.reshape(observations.shape[0], hidden.shape[1], 60)
            hidden = jnp.tanh(nn.Conv(60, (3,), strides=(2,), padding="VALID", kernel_init=glorot)(hidden))
            return nn.Dense(1, kernel_init=glorot)(hidden.reshape(observations.shape[0], -1))

    observations = jax.random.normal(jax.random.PRNGKey(3), (4, 32, 2))
    params = QuantumCNN().init(jax.random.PRNGKey(0), observations)
    reference_params = ConvReference().init(jax.random.PRNGKey(0), observations)
    jax.tree.map(np.testing.assert_array_equal, params, reference_params)   # same names, shapes, init
    perturbed = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    np.testing.assert_allclose(QuantumCNN().apply(perturbed, observations),
                               ConvReference().apply(perturbed, observations), rtol=1e-5, atol=1e-6)
    gradient = jax.grad(lambda p: jnp.sum(QuantumCNN().apply(p, observations) ** 2))(perturbed)
    reference = jax.grad(lambda p: jnp.sum(ConvReference().apply(p, observations) ** 2))(perturbed)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), gradient, reference)


@pytest.mark.slow
def test_quantum_cnn_uses_the_given_convolution_class():
    """QuantumCNN(convolution=...) builds both convolutions from that StridedConv subclass (same params),
    and a subclass that sums one product per tap gives the same outputs as the one-product default."""
    from trainers.networks import StridedConv

    calls = []

    class PerTapProducts(StridedConv):
        def combine(self, slices, weights):
            calls.append(len(slices))
            return sum(tap_slice @ tap_weights for tap_slice, tap_weights in zip(slices, weights))

    observations = jax.random.normal(jax.random.PRNGKey(3), (4, 32, 2))
    params = QuantumCNN().init(jax.random.PRNGKey(0), observations)
    variant = QuantumCNN(convolution=PerTapProducts)
    jax.tree.map(np.testing.assert_array_equal, variant.init(jax.random.PRNGKey(0), observations), params)
    calls.clear()
    np.testing.assert_allclose(variant.apply(params, observations), QuantumCNN().apply(params, observations),
                               rtol=1e-5, atol=1e-6)
    assert calls == [3, 3]                                                   # both layers, 3 taps each


@pytest.mark.slow
def test_study_mlp_starts_with_zero_control():
    controller = study_controller("GuidanceByRepulsion", (6, 2, 2), (2, 2))
    params = controller.init(jax.random.PRNGKey(0))
    controls = controller.apply(params, jax.random.normal(jax.random.PRNGKey(1), (3, 6, 2, 2)))
    assert controls.shape == (3, 2, 2)
    np.testing.assert_array_equal(controls, 0.0)
    hidden = params["params"]["Dense_0"]
    assert hidden["kernel"].shape == (24, 100) and np.all(hidden["bias"] == 0)
    limit = math.sqrt(6 / (24 + 100))                                      # Glorot-uniform bound
    assert np.max(np.abs(hidden["kernel"])) <= limit and np.max(np.abs(hidden["kernel"])) > 0.9 * limit


def test_presets_follow_the_study_protocol():
    config = study_preset("guidance", 0.001, strategy="bptt", clip="norm")
    assert config.env_params == {"regularization": 0.001}
    assert (config.num_train, config.num_test, config.batch_size, config.epochs) == (256, 256, 8, 1000)
    assert (config.optimizer, config.learning_rate, config.clip) == ("adam", 1e-3, "norm")
    with pytest.raises(ValueError, match="level must be one of"):
        study_preset("cartpole", 7)
    # the hardest levels of the study: 4 poles, rc 0.001, target state 5 (any spelling of the task)
    assert [hardest_level(task) for task in ("cartpole", "GuidanceByRepulsion", "quantum")] == [4, 0.001, 5]


@pytest.mark.slow
def test_command_line_trains_resumes_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["cartpole", "--poles", "2", "--strategy", "bptt", "--clip", "value", "--epochs", "2",
                 "--train-size", "16", "--test-size", "16", "--out", str(out), "--quiet"]
    assert train_main(arguments) == 0
    assert (out / "test_loss.png").stat().st_size > 1000
    config = rundir.read_config(out)
    assert config["env_params"] == {"num_poles": 2} and config["clip"] == "value"
    assert [row["epoch"] for row in rundir.read_metrics(out)] == [0, 1, 2]
    assert train_main(arguments + ["--resume"]) == 0                         # already complete
    figure = tmp_path / "figure.png"
    assert plot_main([str(out), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 1000
    with pytest.raises(SystemExit):
        train_main(["cartpole", "--rc", "0.1", "--out", str(tmp_path / "x")])   # --rc is for guidance
    with pytest.raises(SystemExit):
        train_main(["cartpole", "--epochs", "0", "--out", str(tmp_path / "y")])
    assert "epochs must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["cartpole", "--minutes", "0", "--out", str(tmp_path / "z")])
    assert "--minutes must be a finite number > 0, got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path / "missing")])


def test_command_line_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = capsys.readouterr().out
    for option in ("--poles", "--rc", "--target", "--strategy", "--clip", "--epochs", "--seed", "--out",
                   "--resume", "--quiet", "--optimizer", "--lr"):
        assert option in text


def _frozen(problem, params, states, key):
    """A strategy whose update is exactly zero (as es's is when every loss difference rounds to 0)."""
    loss, update, metrics = bptt(problem, params, states, key)
    return StrategyResult(loss, jax.tree.map(jnp.zeros_like, update), metrics)


@pytest.mark.slow
def test_an_update_that_is_exactly_zero_warns_and_a_working_strategy_does_not():
    with pytest.warns(ZeroUpdateWarning, match=r"strategy frozen was exactly zero in every batch of epoch 1"):
        result = train(TrainConfig(**{**TINY, "epochs": 2, "strategy": Strategy("frozen", _frozen)}), quiet=True)
    assert [row["update_norm_squared"] for row in result.metrics[1:]] == [0.0, 0.0]
    assert result.metrics[2]["test_loss"] == result.metrics[0]["test_loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroUpdateWarning)
        train(TrainConfig(**{**TINY, "epochs": 2, "strategy": "bptt"}), quiet=True)


def test_the_zero_update_warning_tells_an_es_user_what_to_change():
    row = {"epoch": 3, "update_norm_squared": 0.0}
    with pytest.warns(ZeroUpdateWarning, match=r"run-a: .*es\(32,0.02\).*epoch 3.*larger es_noise"):
        assert warn_if_zero_update(row, "run-a", "es(32,0.02)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroUpdateWarning)
        assert not warn_if_zero_update({**row, "update_norm_squared": 1e-30}, "run-a", "es(32,0.02)")


@pytest.mark.slow
def test_callback_rows_carry_no_nan_for_metrics_a_strategy_does_not_compute(tmp_path):
    import json

    def strict(text):                               # a JSON or TensorBoard logger refuses NaN
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a callback row"))

    seen = {}
    for spelling, fields in (("bptt", {}), ("es", {"es_population": 2}), ("combined", {})):
        rows = []
        config = TrainConfig(**{**TINY, "epochs": 2, "strategy": spelling, **fields})
        train(config, out=tmp_path / spelling, quiet=True, callback=rows.append)
        assert [row["epoch"] for row in rows] == [1, 2]
        seen[spelling] = [strict(json.dumps(row)) for row in rows]
        # metrics.csv keeps every column, the NaN of an uncomputed cosine included
        assert rundir.read_metrics(tmp_path / spelling)[1].keys() >= set(rundir.METRIC_COLUMNS)
    assert all("cosine" not in row for row in seen["bptt"] + seen["es"])
    assert math.isnan(rundir.read_metrics(tmp_path / "bptt")[1]["cosine"])
    assert all(abs(row["cosine"]) <= 1.0 + 1e-6 for row in seen["combined"])   # combined computes it (to rounding)
    assert {"train_loss", "test_loss", "batch_loss", "update_norm_squared", "epoch_seconds"} <= seen["bptt"][0].keys()
    assert "es_nonzero" in seen["es"][0]
