"""Diagnostics: gradient norms against the horizon, the closed-loop Lyapunov exponent, the per-episode
gradient variance and the ``diffenvs-diagnose`` command, against explicit computations."""

from __future__ import annotations

import csv
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from diffenvs.core import EnvState, FunctionalEnv, params_dataclass, static_field
from trainers.experiments.diagnostics import (
    gradient_norm_by_horizon, horizon_gradients, lyapunov_exponent, main, per_episode_gradient_variance,
    per_episode_gradients, time_step,
)
from trainers.networks import Controller
from trainers.rollout import Problem, rollout_loss
from trainers.training import TrainConfig, initial_states

pytestmark = pytest.mark.usefixtures("fast_compilation")


def _setup(task: str, num_states: int, seed: int = 0, **env_params):
    problem = TrainConfig(task=task, env_params=env_params).make_problem()
    key = jax.random.PRNGKey(seed)
    params = jax.tree.map(lambda x: x.astype(jnp.result_type(float)), problem.controller.init(key))
    states = initial_states(problem.env, jax.random.fold_in(key, 1), num_states)
    return problem, params, states


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _perturbed(params, key, scale=0.3):
    """Parameters with noise on every leaf, so the MLP's zeroed last kernel no longer hides the network path."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
                              for leaf, k in zip(leaves, keys)])


# ------------------------------------------------------------------------------ gradient vs horizon

def _partial_sum_loss(problem: Problem, params, states: EnvState, horizon: int):
    """Reference: the batch loss of the first ``horizon`` steps, a plain Python loop over the steps."""
    total, current = 0.0, states
    for _ in range(horizon):
        controls = problem.control(params, current)
        current, loss = problem.simulate(current, controls)
        total = total + loss
    return total


@pytest.mark.slow
def test_horizon_gradients_are_the_gradients_of_the_first_steps_losses(x64):
    problem, params, states = _setup("guidance", 3, num_steps=4)
    params = _perturbed(params, jax.random.PRNGKey(5))
    horizons = (1, 4)
    losses, gradients = jax.jit(lambda p: horizon_gradients(problem, p, states, horizons))(params)
    norms = jax.jit(lambda p: gradient_norm_by_horizon(problem, p, states, horizons))(params)
    references = jax.jit(lambda p: [jax.value_and_grad(lambda q: _partial_sum_loss(problem, q, states, h))(p)
                                    for h in horizons])(params)
    for k, (loss, gradient) in enumerate(references):
        np.testing.assert_allclose(losses[k], loss, rtol=1e-10)
        np.testing.assert_allclose(_flat(jax.tree.map(lambda g: g[k], gradients)), _flat(gradient),
                                   rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(norms[k], np.linalg.norm(_flat(gradient)), rtol=1e-10)
    assert len(set(np.round(np.asarray(norms), 12))) == len(horizons)   # the horizons really differ


@pytest.mark.slow
def test_cartpole_final_loss_horizon_is_the_episode_stopped_there(x64):
    """With the FINAL loss, horizon H scores the state after H steps: the loss of an H-step episode of
    the same time step, not the (zero) sum of the first H step contributions."""
    problem, params, states = _setup("cartpole", 4, num_poles=2, num_steps=8)
    params = _perturbed(params, jax.random.PRNGKey(3))
    dt = time_step(problem)
    losses, gradients = jax.jit(lambda p: horizon_gradients(problem, p, states, (3, 8)))(params)
    for k, horizon in enumerate((3, 8)):
        short_params = dataclasses.replace(problem.env_params, num_steps=horizon, horizon=horizon * dt)
        short = Problem(problem.env, short_params, problem.controller)
        loss, gradient = jax.jit(jax.value_and_grad(lambda p: rollout_loss(short, p, states)))(params)
        np.testing.assert_allclose(losses[k], loss, rtol=1e-10)
        np.testing.assert_allclose(_flat(jax.tree.map(lambda g: g[k], gradients)), _flat(gradient),
                                   rtol=1e-8, atol=1e-14)
    assert np.linalg.norm(_flat(jax.tree.map(lambda g: g[0], gradients))) > 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("horizons", [(), (0, 2), (2, 9), (2.0,), (True,)])
def test_bad_horizons_are_refused(horizons):
    problem, params, states = _setup("cartpole", 2, num_steps=8)
    with pytest.raises(ValueError, match=r"horizons must be a non-empty sequence of integers in 1..num_steps = 1..8"):
        gradient_norm_by_horizon(problem, params, states, horizons)


# ----------------------------------------------------------------------------- Lyapunov exponent

@params_dataclass
class LinearParams:
    num_steps: int = static_field(400)
    dt: float = 0.5


class LinearSystem(FunctionalEnv[LinearParams]):
    """x' = A x + B c: with the linear controller c = K x the closed loop is x' = (A + B K) x."""

    name = "LinearSystem"
    params_type = LinearParams
    A = jnp.array([[1.0, 0.3], [0.0, 0.6]])
    B = jnp.array([[1.0], [0.0]])

    def initial_physics(self, key, params):
        return jax.random.normal(key, (2,))

    def step_physics(self, physics, action, params):
        return self.A @ physics + self.B @ action

    def step_loss(self, action, next_physics, next_time, params):
        return jnp.sum(next_physics ** 2)

    def action_shape(self, params=None):
        return (1,)

    def physics_shape(self, params=None):
        return (2,)


@pytest.mark.slow
def test_lyapunov_exponent_of_a_linear_closed_loop_is_the_log_spectral_radius():
    env = LinearSystem()
    gain = jnp.array([[0.1, 0.0]])      # A + B K = [[1.1, 0.3], [0, 0.6]]: eigenvalues 1.1 and 0.6
    controller = Controller(init=lambda key: {"K": gain}, apply=lambda p, obs: obs @ p["K"].T)
    problem = Problem(env, env.default_params, controller)
    states = initial_states(env, jax.random.PRNGKey(0), 5)
    closed = lyapunov_exponent(problem, controller.init(None), states, key=jax.random.PRNGKey(1))
    assert closed.shape == (5,)
    np.testing.assert_allclose(closed, math.log(1.1), atol=0.01)
    open_loop = lyapunov_exponent(problem, controller.init(None), states, through_network=False)
    np.testing.assert_allclose(open_loop, math.log(1.0), atol=0.01)   # A alone: eigenvalues 1.0 and 0.6
    assert time_step(problem) == 0.5


@pytest.mark.slow
def test_lyapunov_exponent_is_the_log_growth_of_the_explicit_jacobian_product(x64):
    problem, params, states = _setup("cartpole", 3, num_poles=2, num_steps=20)
    params = _perturbed(params, jax.random.PRNGKey(7))
    key, steps = jax.random.PRNGKey(2), 6
    estimate = jax.jit(lambda p: lyapunov_exponent(problem, p, states, steps, key=key))(params)
    simulator_only = jax.jit(lambda p: lyapunov_exponent(problem, p, states, steps, key=key,
                                                         through_network=False))(params)

    def closed_loop(flat_physics, time):
        state = EnvState(flat_physics.reshape(states.physics.shape[1:])[None], time[None])
        controls = problem.control(params, state)
        return problem.simulate(state, controls)[0].physics[0].ravel()

    tangents = jax.random.normal(key, states.physics.shape, states.physics.dtype)
    jacobian, step = jax.jit(jax.jacfwd(closed_loop)), jax.jit(closed_loop)
    for i in range(3):
        x, time = states.physics[i].ravel(), states.time[i]
        product = np.eye(x.size)
        for _ in range(steps):
            product = np.asarray(jacobian(x, time)) @ product
            x, time = step(x, time), time + 1
        v0 = np.ravel(tangents[i]) / np.linalg.norm(np.ravel(tangents[i]))
        np.testing.assert_allclose(estimate[i], np.log(np.linalg.norm(product @ v0)) / steps, rtol=1e-9)
        assert estimate[i] <= np.log(np.linalg.norm(product, 2)) / steps + 1e-12
    assert np.all(np.abs(np.asarray(estimate) - np.asarray(simulator_only)) > 1e-6)   # the network path counts


@pytest.mark.slow
def test_lyapunov_exponent_refuses_bad_steps():
    problem, params, states = _setup("cartpole", 2, num_steps=4)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        lyapunov_exponent(problem, params, states, 0)


# ------------------------------------------------------------------ per-episode gradient variance

@pytest.mark.slow
def test_per_episode_gradient_variance_is_the_trace_of_the_unbiased_covariance(x64):
    problem, params, states = _setup("cartpole", 4, num_steps=5)
    single = jax.jit(jax.grad(lambda p, one: rollout_loss(problem, p, one)))
    gradients = np.stack([_flat(single(params, jax.tree.map(lambda x: x[i:i + 1], states))) for i in range(4)])
    expected = np.sum(np.var(gradients, axis=0, ddof=1))
    assert expected > 0
    variance = jax.jit(lambda p: per_episode_gradient_variance(problem, p, states))(params)
    np.testing.assert_allclose(variance, expected, rtol=1e-9)
    per_episode = jax.jit(lambda p: per_episode_gradients(problem, p, states))(params)
    np.testing.assert_allclose(np.mean(np.stack([_flat(jax.tree.map(lambda g: g[i], per_episode))
                                                 for i in range(4)]), axis=0),
                               np.mean(gradients, axis=0), rtol=1e-9, atol=1e-15)
    batch = jax.jit(jax.grad(lambda p: rollout_loss(problem, p, states)))(params)
    np.testing.assert_allclose(np.mean(gradients, axis=0), _flat(batch), rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="at least 2 episodes"):
        per_episode_gradient_variance(problem, params, jax.tree.map(lambda x: x[:1], states))


# ----------------------------------------------------------------------------------- command line

@pytest.mark.slow
def test_command_writes_table_figure_and_csv(tmp_path, capsys):
    out = tmp_path / "diag"
    assert main(["--tasks", "cartpole", "--levels", "2", "--num-steps", "4", "--states", "2",
                 "--horizons", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| task | level | steps | ‖g‖ H=1 |" in text and "| CartPole | num_poles=2 | 4 |" in text
    assert (out / "diagnostics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "diagnostics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["level"], row["horizon"]) for row in rows] == [("2", h) for h in "124"]
    assert all(float(row["gradient_norm"]) > 0 and math.isfinite(float(row["lyapunov_mean_per_step"]))
               for row in rows)
    # the full horizon's norm is that of the episode's BPTT gradient at the seed's initial parameters
    problem = TrainConfig(task="cartpole", env_params={"num_poles": 2, "num_steps": 4}).make_problem()
    train_key, _, init_key, _ = jax.random.split(jax.random.PRNGKey(0), 4)
    states = jax.tree.map(lambda x: x[:2], initial_states(problem.env, train_key, 256))
    gradient = jax.grad(lambda p: rollout_loss(problem, p, states))(problem.controller.init(init_key))
    np.testing.assert_allclose(float(rows[-1]["gradient_norm"]), np.linalg.norm(_flat(gradient)), rtol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--states", "1"], "--states must be an integer in 2..256, got 1"),
    (["--tasks", "cartpole", "--levels", "7"], "level must be one of (1, 2, 3, 4) (num_poles) for CartPole, got 7"),
    (["--tasks", "cartpole", "guidance", "--levels", "2"], "--levels: with several tasks"),
    (["--tasks", "pendulum"], "--tasks: name must be one of ['cartpole', 'guidance', 'quantum']"),
    (["--horizons", "0"], "--horizons must be an integer >= 1, got 0"),
])
def test_command_refuses_bad_flags_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("diffenvs-diagnose: error: ") and message in error


@pytest.mark.slow
def test_a_run_directory_is_diagnosed_at_its_checkpoint(tmp_path, capsys):
    from trainers import train
    from trainers.experiments.diagnostics import diagnose_run

    config = TrainConfig(task="cartpole", env_params={"num_poles": 1, "num_steps": 4}, strategy="bptt",
                         num_train=8, num_test=4, batch_size=4, epochs=3, learning_rate=0.05, seed=3)
    result = train(config, out=tmp_path / "run", quiet=True)
    diagnosis = diagnose_run(tmp_path / "run", states=5, horizons=2)
    assert diagnosis["epoch"] == 3 and diagnosis["label"] == "num_poles=1 bptt epoch 3"
    problem = config.make_problem()
    train_key = jax.random.split(jax.random.PRNGKey(3), 4)[0]
    states = jax.tree.map(lambda x: x[:5], initial_states(problem.env, train_key, 8))
    gradient_norm = jax.jit(lambda p: jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(
        jax.grad(lambda q: rollout_loss(problem, q, states))(p)))))
    initial = problem.controller.init(jax.random.split(jax.random.PRNGKey(3), 4)[2])
    np.testing.assert_allclose(diagnosis["gradient_norms"][-1], gradient_norm(result.params), rtol=1e-5)
    assert not np.isclose(diagnosis["gradient_norms"][-1], gradient_norm(initial), rtol=1e-3)
    assert diagnosis["lyapunov"].shape == (5,)
    with pytest.raises(SystemExit):
        main(["--runs", str(tmp_path / "run"), "--levels", "2"])
    assert "--runs takes task, level, seed and episode length from the runs; drop --levels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--runs", str(tmp_path / "nothing")])
    assert f"run directory {tmp_path / 'nothing'} holds no config.json" in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.slow
def test_the_api_example_of_the_docs_runs():
    from pathlib import Path
    import re
    text = (Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    for old, new in {'study_preset("cartpole", 2)': 'study_preset("cartpole", 2, env_params={"num_steps": 8})',
                     "horizons=(1, 25, 50, 100)": "horizons=(1, 4, 8)",
                     "initial_states(problem.env, jax.random.PRNGKey(1), 16)":
                         "initial_states(problem.env, jax.random.PRNGKey(1), 3)"}.items():
        assert old in code, f"docs/diagnostics.md: {old!r} no longer occurs in the example"
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, "docs/diagnostics.md", "exec"), namespace)
    assert namespace["norms"].shape == (3,) and np.all(np.asarray(namespace["norms"]) > 0)
    assert namespace["exponents"].shape == (3,)
    np.testing.assert_allclose(namespace["per_second"], namespace["exponents"] / 0.125, rtol=1e-6)
    assert float(namespace["variance"]) > 0
