"""The environment protocol: trainers on pytree states, early termination, registration, entry points,
the gradient check and the report of the first non-finite step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from diffenvs import registry
from trainers import NonFiniteError, Problem, from_flax, MLP, train
from trainers.rollout import first_nonfinite_step, rollout_loss, step_losses
from trainers.strategies import gated_fields, get_strategy

ROOT = Path(__file__).resolve().parents[1]


class Drifter:
    """A small environment with a dict state (two float leaves and an int leaf) whose episodes end early:
    x' = 0.9 x + a, v' = 0.5 v + sum(a); reward -(|x'|² + v'²); terminal once time >= stop, where
    stop (2..5) is drawn with the starting state. ``nan_from`` makes the reward's gradient NaN from that
    step on (its value stays finite)."""

    name = "Drifter"

    def __init__(self, num_steps: int = 6, nan_from: int | None = None):
        self.horizon, self.nan_from = num_steps, nan_from
        self.default_params = {"decay": jnp.asarray(0.9)}

    def initial(self, rng, params=None):
        key_x, key_stop = jax.random.split(rng)
        return {"x": jax.random.normal(key_x, (2,)), "v": jnp.ones((1,)),
                "time": jnp.zeros((), jnp.int32), "stop": jax.random.randint(key_stop, (), 2, 6)}

    def transition(self, state, action, rng=None, params=None):
        params = self.default_params if params is None else params
        action = jnp.reshape(action, (2,))
        return {"x": params["decay"] * state["x"] + action, "v": 0.5 * state["v"] + jnp.sum(action),
                "time": state["time"] + 1, "stop": state["stop"]}

    def reward(self, state, action, next_state, rng=None, params=None):
        cost = jnp.sum(next_state["x"] ** 2) + jnp.sum(next_state["v"] ** 2)
        if self.nan_from is not None:
            x = next_state["x"][0]
            cost = cost + jnp.sqrt(jnp.abs(x - x) + jnp.where(state["time"] >= self.nan_from, 0.0, 1.0))
        return -cost

    def observation(self, state, rng=None, params=None):
        return jnp.concatenate([state["x"], state["v"]])

    def terminal(self, state, rng=None, params=None):
        return state["time"] >= state["stop"]

    def num_steps(self, params=None):
        return self.horizon

    def action_shape(self, params=None):
        return (2,)

    def observation_shape(self, params=None):
        return (3,)


def _problem(env=None):
    env = env or Drifter()
    controller = from_flax(MLP(output_shape=(2,), hidden=(8,), zero_last_kernel=False), (3,))
    params = controller.init(jax.random.PRNGKey(1))
    states = jax.vmap(env.initial)(jax.random.split(jax.random.PRNGKey(2), 4))
    return Problem(env, env.default_params, controller), params, states


def _reference_loss(problem, params, states):
    """The batch loss by hand: each instance's reward summed over the steps before its stop."""
    env, total = problem.env, 0.0
    for index in range(states["x"].shape[0]):
        state = jax.tree.map(lambda x: x[index], states)
        for _ in range(int(state["stop"])):
            control = problem.controller.apply(params, env.observation(state)[None])[0]
            following = env.transition(state, control)
            total = total - env.reward(state, control, following)
            state = following
    return total / states["x"].shape[0]


@pytest.mark.slow
def test_rollouts_on_a_pytree_state_stop_at_termination_in_loss_and_gradient():
    problem, params, states = _problem()
    assert problem.masks_termination and not Problem(diffenvs.make("cartpole"), None, None).masks_termination
    np.testing.assert_allclose(rollout_loss(problem, params, states), _reference_loss(problem, params, states),
                               rtol=1e-5)
    gradient = jax.grad(lambda p: rollout_loss(problem, p, states))(params)
    expected = jax.grad(lambda p: _reference_loss(problem, p, states))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), gradient, expected)
    losses = step_losses(problem, params, states)
    stops = np.asarray(states["stop"])
    assert losses.shape == (6,) and float(losses[-1]) == 0.0 if stops.max() < 6 else True
    # the state is frozen after the end: a horizon of 6 or of 8 steps gives the same final state
    def final(horizon):
        longer = Problem(Drifter(num_steps=horizon), problem.env_params, problem.controller)
        def body(s, _):
            return longer.simulate(s, longer.control(params, s))[0], None
        return jax.lax.scan(body, states, None, length=horizon)[0]
    jax.tree.map(np.testing.assert_array_equal, final(6), final(8))


@pytest.mark.slow
def test_gated_fields_and_every_strategy_family_work_on_the_pytree_state():
    problem, params, states = _problem()
    loss, gradients = gated_fields(problem, params, states, jnp.array([[1.0, 1.0], [0.0, 1.0]]))
    np.testing.assert_allclose(loss, rollout_loss(problem, params, states), rtol=1e-6)
    for field, name in ((0, "bptt"), (1, "modified")):
        expected = get_strategy(name)(problem, params, states, jax.random.PRNGKey(0)).update
        jax.tree.map(lambda g, e: np.testing.assert_allclose(g[field], e, rtol=1e-4, atol=1e-7), gradients, expected)
    _, truncated = gated_fields(problem, params, states, jnp.array([[1.0, 1.0]]), 2)
    expected = get_strategy("truncated", {"every": 2})(problem, params, states, jax.random.PRNGKey(0)).update
    jax.tree.map(lambda g, e: np.testing.assert_allclose(g[0], e, rtol=1e-4, atol=1e-7), truncated, expected)
    for name, options in (("es", {}), ("ivw", {}), ("alpha_order", {}), ("hig", {}), ("combined", {}),
                          ("shac", {"horizon": 2})):
        strategy = get_strategy(name, options)
        state = strategy.initial_state(problem, params, jax.random.PRNGKey(3))
        result, _ = strategy.apply(problem, params, states, jax.random.PRNGKey(4), state)
        np.testing.assert_allclose(result.loss, rollout_loss(problem, params, states), rtol=1e-5)
        assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(result.update)), name
        assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree.leaves(result.update)), name


@pytest.mark.slow
def test_diagnostics_run_on_the_pytree_state():
    from trainers.experiments.diagnostics import gradient_norm_by_horizon, lyapunov_exponent
    from trainers.rollout import per_episode_gradient_variance
    problem, params, states = _problem()
    norms = gradient_norm_by_horizon(problem, params, states, (1, 3, 6))
    assert norms.shape == (3,) and bool(jnp.all(jnp.isfinite(norms))) and bool(jnp.all(norms > 0))
    exponents = lyapunov_exponent(problem, params, states)
    # without the network x decays by 0.9 and v by 0.5 per step: the exponent of the tangent v_0 (drawn as
    # normal(PRNGKey(0), (batch, 3)), split over the float leaves in order, v then x) over the steps
    # before each episode's end
    open_loop = lyapunov_exponent(problem, params, states, through_network=False)
    drawn = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (4, 3)), np.float64)
    for index, stop in enumerate(np.asarray(states["stop"])):
        pushed = drawn[index] * np.array([0.5, 0.9, 0.9]) ** stop
        np.testing.assert_allclose(open_loop[index], np.log(np.linalg.norm(pushed) / np.linalg.norm(drawn[index]))
                                   / stop, rtol=1e-5)
    assert exponents.shape == (4,) and bool(jnp.all(jnp.isfinite(exponents)))
    assert float(per_episode_gradient_variance(problem, params, states)) > 0


def test_register_names_and_one_line_errors(monkeypatch):
    monkeypatch.setattr(registry, "REGISTERED", {})
    assert diffenvs.register("drifter-test", Drifter) is Drifter
    env = diffenvs.make("drifter-test", num_steps=4)
    assert isinstance(env, Drifter) and env.num_steps() == 4
    cases = [(("cartpole", Drifter), "built-in"), (("CartPole", Drifter), "built-in"),
             (("gymnax:mine", Drifter), "reserved prefix"), (("brax:mine", Drifter), "reserved prefix"),
             (("drifter-test", Drifter), "already registered"), (("other", 3), "factory must be callable"),
             (("", Drifter), "non-empty")]
    for (name, factory), message in cases:
        with pytest.raises(ValueError, match=message) as info:
            diffenvs.register(name, factory)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="parameters .* for 'drifter-test'"):
        diffenvs.make("drifter-test", wrong=1)
    diffenvs.register("not-an-env", lambda: object())
    with pytest.raises(ValueError, match="ControlEnv protocol.*no attribute 'name'"):
        diffenvs.make("not-an-env")
    with pytest.raises(ValueError, match="drifter-test"):          # the registered names are listed
        diffenvs.make("drifter-tset")


def test_external_prefixes_import_their_adapter_lazily_with_a_one_line_error(monkeypatch):
    monkeypatch.setitem(registry.EXTERNAL_PREFIXES, "brax:", ("diffenvs.external.no_such_adapter", "make_brax_env"))
    with pytest.raises(ValueError) as info:
        diffenvs.make("brax:inverted_double_pendulum")
    assert "brax adapter (diffenvs.external.no_such_adapter.make_brax_env) cannot be imported" in str(info.value)
    assert registry.canonical_name("gymnax:Pendulum-v1") == "gymnax:Pendulum-v1"


@pytest.mark.slow
def test_a_registered_environment_trains_under_its_name_and_resumes(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "REGISTERED", {})
    diffenvs.register("drifter-train", Drifter)
    options = dict(task="drifter-train", strategy="combined", epochs=2, num_train=16, num_test=8, quiet=True)
    whole = train(**options, out=tmp_path / "a")
    train(**{**options, "epochs": 1}, out=tmp_path / "b")
    resumed = train(**options, out=tmp_path / "b")
    assert [row["test_loss"] for row in whole.metrics] == [row["test_loss"] for row in resumed.metrics]
    assert whole.metrics[-1]["test_loss"] != whole.metrics[0]["test_loss"]


@pytest.mark.slow
def test_a_nan_gradient_names_the_environment_and_the_first_bad_step(monkeypatch):
    problem, params, states = _problem(Drifter(nan_from=1))
    states = {**states, "stop": jnp.full_like(states["stop"], 5)}
    assert first_nonfinite_step(problem, params, states) == 1
    assert first_nonfinite_step(*_problem()) is None
    monkeypatch.setattr(registry, "REGISTERED", {})
    diffenvs.register("drifter-nan", lambda: Drifter(nan_from=1))
    with pytest.raises(NonFiniteError) as info:
        train(task="drifter-nan", strategy="bptt", epochs=2, num_train=8, num_test=8, quiet=True)
    message = str(info.value)
    assert message.startswith("Drifter: epoch 1:") and "\n" not in message
    assert "first non-finite step loss or gradient is at step 1 (of 6) of training batch 0" in message


def test_check_gradients_passes_a_correct_environment_and_catches_a_wrong_derivative():
    assert diffenvs.check_gradients(Drifter(), steps=4).passed

    @jax.custom_vjp
    def wrong_square(x):
        return x ** 2

    wrong_square.defvjp(lambda x: (x ** 2, x), lambda x, g: (3.0 * x * g,))     # 3x instead of 2x

    class Wrong(Drifter):
        def reward(self, state, action, next_state, rng=None, params=None):
            return -jnp.sum(wrong_square(next_state["x"]))

    with pytest.raises(diffenvs.GradientCheckError, match="Drifter: the rollout's derivative disagrees"):
        diffenvs.check_gradients(Wrong(), steps=4)
    assert not diffenvs.check_gradients(Wrong(), steps=4, raise_on_failure=False).passed
    with pytest.raises(ValueError, match="steps must be at most the environment's num_steps = 6"):
        diffenvs.check_gradients(Drifter(), steps=7)


ENTRY_MODULE = '''
import jax.numpy as jnp
from trainers.strategies import Strategy, StrategyResult, bptt


def make_env(num_steps=5):
    from test_protocol_env import Drifter
    return Drifter(num_steps=num_steps)


def _scaled(problem, params, states, key):
    result = bptt(problem, params, states, key)
    return StrategyResult(result.loss, result.update, {"scaled": jnp.asarray(2.0, result.loss.dtype)})


halved = Strategy("halved", _scaled, "bptt with a metric", metric_names=("scaled",))
'''


@pytest.mark.slow
def test_entry_points_register_environments_and_strategies_for_the_command_line(tmp_path):
    (tmp_path / "test_protocol_env.py").write_text(Path(__file__).read_text())
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent(ENTRY_MODULE))
    info = tmp_path / "my_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[diffenvs.environments]\ndrifter-ep = my_plugin:make_env\n\n"
                                           "[diffenvs.strategies]\nhalved = my_plugin:halved\n")
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), environment.get("PYTHONPATH", "")])
    out = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from trainers.cli import train_main; sys.exit(train_main())",
               "drifter-ep", "--strategy", "halved", "--epochs", "1", "--train-size", "8", "--test-size", "8",
               "--env-param", "num_steps=4", "--out", str(out), "--quiet", "--no-plot"]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["env_params"] == {"num_steps": 4}
    header, row = (out / "metrics.csv").read_text().splitlines()[:3:2]
    assert "scaled" in header.split(",") and row.split(",")[header.split(",").index("scaled")] == "2.0"


PLUGIN_MODULE = '''
import diffenvs
from trainers import TaskPreset, add_task_preset
from test_protocol_env_cli import Drifter

diffenvs.register("drifter-cli", Drifter)
add_task_preset("drifter-cli", TaskPreset(horizon=4, batch_size=4, num_train=8, num_test=4, epochs=2), replace=True)
'''


@pytest.mark.slow
def test_sweep_diagnose_and_compare_reach_a_registered_task_through_import(monkeypatch, tmp_path, capsys):
    from trainers.cli import sweep_main
    from trainers.experiments.comparison import main as compare_main
    from trainers.experiments.diagnostics import main as diagnose_main
    from trainers.presets import TASK_PRESETS
    (tmp_path / "test_protocol_env_cli.py").write_text(Path(__file__).read_text())
    (tmp_path / "drifter_plugin.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "REGISTERED", {})
    monkeypatch.delitem(TASK_PRESETS, "drifter-cli", raising=False)
    assert sweep_main([str(tmp_path / "sweep"), "--import", "drifter_plugin", "--tasks", "drifter-cli",
                       "--strategies", "bptt", "combined", "--clips", "none", "--quiet"]) == 0
    runs = sorted(path.name for path in (tmp_path / "sweep").iterdir())
    assert len(runs) == 2 and all(name.startswith("drifter-cli-") for name in runs)
    config = json.loads((tmp_path / "sweep" / runs[0] / "config.json").read_text())
    assert config["env_params"] == {"num_steps": 4} and config["num_train"] == 8 and config["epochs"] == 2
    assert diagnose_main(["--import", "drifter_plugin", "--tasks", "drifter-cli", "--states", "4", "--horizons", "2",
                          "--out", str(tmp_path / "diagnose")]) == 0
    assert "drifter-cli" in (tmp_path / "diagnose" / "diagnostics.md").read_text()
    assert compare_main([str(tmp_path / "compare"), "--import", "drifter_plugin", "--cases", "drifter-cli",
                         "--methods", "bptt", "--minutes", "0.02", "--quiet"]) == 0
    from trainers.experiments.comparison import run_name as comparison_run_name
    assert comparison_run_name("drifter-cli", None, "bptt", 0).startswith("drifter-cli-bptt-")
    assert (tmp_path / "compare" / comparison_run_name("drifter-cli", None, "bptt", 0) / "metrics.csv").exists()
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path / "compare"), "--cases", "drifter-cli", "--methods", "ppo"])
    assert "RL methods" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep_main([str(tmp_path / "sweep"), "--import", "no_such_module_here", "--tasks", "drifter-cli"])
    assert "--import: cannot import module 'no_such_module_here'" in capsys.readouterr().err
