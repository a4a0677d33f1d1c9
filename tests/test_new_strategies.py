"""The modern estimators: shac, ivw / alpha_order and hig (properties, training, sweep, resume)."""

import importlib
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffenvs.core import EnvState
from trainers import rundir
from trainers.config import TrainConfig
from trainers.engine import initial_states
from trainers.networks import Controller
from trainers.rollout import Problem, rollout_loss
from trainers.strategies import bptt, get_strategy, parse_strategy, truncated
from trainers.strategies.ivw import perturbation_directions
from trainers.strategies.shac import td_lambda_targets
from trainers.experiments.sweep import SweepSpec, run_sweep
from trainers.training import train

CONTINUOUS = {"num_poles": 1, "num_steps": 12, "loss_mode": "continuous"}


def _setup(env_params, batch=8, seed=0):
    """A problem, params with a nonzero output layer (the study's untrained MLP outputs 0) and a batch."""
    problem = TrainConfig(task="cartpole", env_params=env_params).make_problem()
    params = problem.controller.init(jax.random.PRNGKey(seed))
    noise = jax.random.split(jax.random.PRNGKey(seed + 1), len(jax.tree.leaves(params)))
    params = jax.tree.unflatten(jax.tree.structure(params), [
        leaf + 0.05 * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(noise, jax.tree.leaves(params))])
    states = initial_states(problem.env, jax.random.PRNGKey(seed + 2), batch)
    return problem, params, states


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tree)])


# ------------------------------------------------------------------------------------------------ shac

@pytest.mark.slow
@pytest.mark.usefixtures("fast_compilation")
def test_shac_is_bptt_with_one_window_and_truncated_bptt_with_a_zero_critic():
    problem, params, states = _setup(CONTINUOUS)
    key = jax.random.PRNGKey(3)
    true_gradient = _flat(bptt(problem, params, states, key).update)

    whole = get_strategy("shac", {"horizon": 12})
    state = whole.initial_state(problem, params, jax.random.PRNGKey(4))
    state["critic"] = jax.tree.map(lambda w: w + 0.3, state["critic"])        # a nonzero critic
    result, _ = jax.jit(lambda s: whole.apply(problem, params, states, key, s))(state)
    np.testing.assert_allclose(_flat(result.update), true_gradient, rtol=2e-4, atol=1e-7)
    assert float(result.loss) == pytest.approx(float(rollout_loss(problem, params, states)), rel=1e-6)

    windows = get_strategy("shac", {"horizon": 4})                               # 3 windows of 4 steps
    apply = jax.jit(lambda s: windows.apply(problem, params, states, key, s))
    zero = {**state, "critic": jax.tree.map(jnp.zeros_like, state["critic"])}
    result, _ = apply(zero)
    cut = _flat(truncated(4)(problem, params, states, key).update)
    np.testing.assert_allclose(_flat(result.update), cut / 3, rtol=2e-4, atol=1e-7)
    assert float(result.metrics["critic_value"]) == 0.0
    # the critic at the window ends enters the update
    result, _ = apply(state)
    assert not np.allclose(_flat(result.update), cut / 3, rtol=1e-2)


def test_td_lambda_targets():
    losses = np.array([[1.0, 2.0], [3.0, 0.5], [0.25, 4.0]])
    values = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])              # V(x_{t+1}); the last ignored
    monte_carlo = np.cumsum(losses[::-1], axis=0)[::-1]
    np.testing.assert_allclose(td_lambda_targets(jnp.asarray(losses), jnp.asarray(values), 1.0), monte_carlo)
    one_step = losses + np.concatenate([values[:-1], np.zeros((1, 2))])
    np.testing.assert_allclose(td_lambda_targets(jnp.asarray(losses), jnp.asarray(values), 0.0), one_step)
    lam = 0.5
    expected = np.zeros_like(losses)
    expected[2] = losses[2]
    for t in (1, 0):
        expected[t] = losses[t] + (1 - lam) * values[t] + lam * expected[t + 1]
    np.testing.assert_allclose(td_lambda_targets(jnp.asarray(losses), jnp.asarray(values), lam), expected,
                               rtol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compilation")
def test_shac_critic_learns_the_remaining_loss_of_a_fixed_batch():
    problem, params, states = _setup(CONTINUOUS)
    strategy = get_strategy("shac", {"horizon": 4, "critic_learning_rate": 3e-3})
    state = strategy.initial_state(problem, params, jax.random.PRNGKey(4))
    assert float(state["value_scale"]) > 0
    apply = jax.jit(lambda s: strategy.apply(problem, params, states, jax.random.PRNGKey(0), s))
    losses = []
    for _ in range(6):
        result, state = apply(state)
        losses.append(float(result.metrics["critic_loss"]))
    assert losses[-1] < 0.3 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    # its prediction of the whole episode's loss approaches the batch loss (from 0)
    assert abs(float(result.metrics["critic_value"]) - float(result.loss)) < 0.5 * float(result.loss)


def test_shac_options_are_checked():
    assert parse_strategy("shac:horizon=16,lam=0.9") == ("shac", {"horizon": 16, "lam": 0.9})
    assert get_strategy("shac", {"horizon": 16, "critic_hidden": "32x16"}).name == \
        "shac(16,0.95,0.001,16,32x16)"
    for options, message in [({"horizon": 0}, "horizon must be an integer >= 1"),
                             ({"lam": 1.5}, "lam must be a number >= 0.0 and <= 1.0"),
                             ({"critic_hidden": "64xa"}, "critic_hidden must be widths"),
                             ({"critic_learning_rate": -1}, "critic_learning_rate must be a number > 0"),
                             ({"critic_iterations": 0}, "critic_iterations must be an integer >= 1")]:
        with pytest.raises(ValueError, match=message):
            get_strategy("shac", options)


# ----------------------------------------------------------------------------------------- ivw, alpha

@pytest.mark.slow
@pytest.mark.usefixtures("fast_compilation")
def test_ivw_is_the_inverse_variance_mixture_of_the_two_estimates():
    population, noise = 4, 0.05
    problem, params, states = _setup({"num_poles": 1, "num_steps": 6}, batch=4)
    key = jax.random.PRNGKey(7)
    single = lambda index: jax.tree.map(lambda x: x[index:index + 1], states)
    loss_of = jax.jit(lambda p, s: rollout_loss(problem, p, s))
    # by hand: per-episode bptt gradients and per-episode antithetic estimates
    gradient_of = jax.jit(jax.grad(lambda p, s: rollout_loss(problem, p, s)))
    first = np.stack([_flat(gradient_of(params, single(i))) for i in range(4)])
    directions = perturbation_directions(params, key, 4, population // 2)
    zeroth = []
    for i in range(4):
        estimate = 0.0
        for j in range(population // 2):
            direction = jax.tree.map(lambda d: d[i, j], directions)
            shifted = lambda sign: float(loss_of(jax.tree.map(
                lambda p, d: p + sign * noise * d, params, direction), single(i)))
            estimate = estimate + (shifted(1.0) - shifted(-1.0)) * _flat(direction) / (noise * population)
        zeroth.append(estimate)
    zeroth = np.stack(zeroth)
    var1, var0 = first.var(axis=0, ddof=1) / 4, zeroth.var(axis=0, ddof=1) / 4
    alpha = np.where(var1 + var0 > 0, var0 / np.where(var1 + var0 > 0, var1 + var0, 1.0), 1.0)
    expected = alpha * first.mean(axis=0) + (1 - alpha) * zeroth.mean(axis=0)

    result = get_strategy("ivw", {"population": population, "noise": noise})(problem, params, states, key)
    assert 0.0 < float(result.metrics["ivw_alpha"]) < 1.0
    np.testing.assert_allclose(float(result.metrics["ivw_alpha"]), alpha.mean(), rtol=1e-3)
    np.testing.assert_allclose(_flat(result.update), expected, rtol=2e-3, atol=1e-6)
    assert float(result.metrics["zo_nonzero"]) == 1.0

    true_gradient = _flat(bptt(problem, params, states, key).update)
    ones = get_strategy("alpha_order", {"alpha": 1, "population": population, "noise": noise})
    np.testing.assert_allclose(_flat(ones(problem, params, states, key).update), true_gradient, rtol=1e-4, atol=1e-8)
    zeros = get_strategy("alpha_order", {"alpha": 0, "population": population, "noise": noise})
    np.testing.assert_allclose(_flat(zeros(problem, params, states, key).update), zeroth.mean(axis=0),
                               rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"alpha_order: alpha must be a number in \[0, 1\]"):
        get_strategy("alpha_order", {"alpha": 2})
    with pytest.raises(ValueError, match="ivw: population must be an even integer >= 2"):
        get_strategy("ivw", {"population": 3})


# ------------------------------------------------------------------------------------------------- hig

@pytest.mark.slow
def test_hig_without_truncation_is_the_half_inverse_of_a_square_jacobian(x64):
    """Linear controller c = w · x on the one-pole cart-pole (4 state numbers): 2 steps x 2 episodes = 4
    controls and 4 params, so J (the observations of the rollout, stacked) is square."""
    env_params = {"num_poles": 1, "num_steps": 2, "loss_mode": "continuous"}
    base = TrainConfig(task="cartpole", env_params=env_params).make_problem()
    linear = Controller(init=lambda key: {"w": jnp.array([0.3, -0.2, 0.5, 0.1])},
                        apply=lambda params, observations: (observations.reshape(observations.shape[0], -1)
                                                            @ params["w"])[:, None])
    problem = Problem(base.env, base.env_params, linear)
    params = linear.init(None)
    states = initial_states(problem.env, jax.random.PRNGKey(0), 2)
    states = EnvState(states.physics.astype(jnp.float64), states.time)

    # the rollout by hand: J's rows are the observations, ∂L/∂c by central differences
    def loss_with(offsets):
        current, total = states, 0.0
        for t in range(2):
            controls = linear.apply(params, current.physics) + offsets[t][:, None]
            current, step = problem.simulate(current, controls)
            total = total + step
        return float(total)

    rows, current = [], states
    for t in range(2):
        rows.extend(np.asarray(current.physics).reshape(2, -1))
        current, _ = problem.simulate(current, linear.apply(params, current.physics))
    jacobian = np.array(rows)                                               # (4 controls, 4 params)
    assert np.linalg.cond(jacobian) < 1e6
    sensitivities = np.zeros(4)
    for index in range(4):
        step = np.zeros((2, 2))
        step.flat[index] = 1e-6
        sensitivities[index] = (loss_with(step) - loss_with(-step)) / 2e-6
    u, s, vt = np.linalg.svd(jacobian)
    expected = vt.T @ np.diag(s ** -0.5) @ u.T @ sensitivities

    result = get_strategy("hig", {"truncation": 0})(problem, params, states, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(result.update["w"]), expected, rtol=1e-6)
    assert float(result.metrics["hig_rank"]) == 4
    # Jᵀ ∂L/∂c is the bptt gradient
    np.testing.assert_allclose(np.asarray(bptt(problem, params, states, None).update["w"]),
                               jacobian.T @ sensitivities, rtol=1e-6)
    # truncation drops the singular values below truncation · max(s)
    threshold = float(np.sqrt(s[0] * s[-1]) / s[0])
    kept = s > threshold * s[0]
    truncated_expected = vt.T[:, kept] @ np.diag(s[kept] ** -0.5) @ u.T[kept] @ sensitivities
    result = get_strategy("hig", {"truncation": threshold})(problem, params, states, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(result.update["w"]), truncated_expected, rtol=1e-6)
    assert float(result.metrics["hig_rank"]) == kept.sum() < 4
    with pytest.raises(ValueError, match=r"hig: truncation must be a number in \[0, 1\)"):
        get_strategy("hig", {"truncation": 1.5})


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info
    return sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compilation")
def test_a_hig_epoch_decomposes_with_one_blas_thread_whichever_thread_runs_the_callback(monkeypatch):
    """numpy's multi-threaded OpenBLAS spins while its threads wait, which made hig's host step many times
    slower beside other busy processes (benchmarks/hig_under_load.py). OpenBLAS's thread count is
    process-wide, and threadpoolctl lets only the thread that limited it first change it, ignoring the
    others silently: here another thread holds that control at 2 threads while a real hig epoch runs,
    and jax's callback runs on the main thread or on one of its own."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    if not _blas_threads():
        pytest.skip("numpy's BLAS is not visible to threadpoolctl")
    hig_module = importlib.import_module("trainers.strategies.hig")   # the package's `hig` is the factory
    numpy_only, seen = hig_module._half_inverse_numpy, []

    def recording(jacobian, vector, truncation):
        seen.append((threading.current_thread().name, _blas_threads()))
        return numpy_only(jacobian, vector, truncation)

    monkeypatch.setattr(hig_module, "_half_inverse_numpy", recording)
    holding, release = threading.Event(), threading.Event()

    def hold_two_threads():
        limiter = ThreadpoolController().limit(limits=2, user_api="blas")
        holding.set()
        release.wait(timeout=600)
        limiter.restore_original_limits()

    holder = threading.Thread(target=hold_two_threads)
    holder.start()
    try:
        assert holding.wait(timeout=60) and _blas_threads() == [2]
        config = TrainConfig(task="cartpole", env_params={"num_poles": 1, "num_steps": 8, "loss_mode": "continuous"},
                             strategy="hig", num_train=16, num_test=16, batch_size=8, epochs=1)
        result = train(config, quiet=True)
        after = _blas_threads()
    finally:
        release.set()
        holder.join()
    assert len(seen) == 2 and all(threads == [1] for _, threads in seen), seen      # 2 updates, one thread
    assert after == [2]                                                             # the setting restored
    assert np.isfinite(result.metrics[-1]["hig_rank"]) and result.metrics[-1]["hig_rank"] >= 1
    with threadpool_limits(limits=1, user_api="blas"):   # no callback thread kept the control to itself
        assert _blas_threads() == [1]


# ------------------------------------------------------------------------------- training and sweeps

SWEEP_OPTIONS = dict(env_params={"num_steps": 8, "loss_mode": "continuous"}, num_train=16, num_test=16,
                     batch_size=8, epochs=3, checkpoint_every=2)
COLUMNS = {"shac": ("critic_loss", "critic_value"), "ivw": ("ivw_alpha", "zo_nonzero"),
           "alpha_order": ("ivw_alpha", "zo_nonzero"), "hig": ("hig_rank",)}


@pytest.mark.slow
@pytest.mark.usefixtures("fast_compilation")
def test_a_sweep_of_the_new_strategies_trains_lowers_the_loss_and_writes_their_columns(tmp_path):
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("shac:horizon=4", "ivw:population=4",
                                                                 "alpha_order:alpha=0.5,population=4", "hig"),
                     clips=("norm",), seeds=(0, 1), options={**SWEEP_OPTIONS, "learning_rate": 3e-3})
    result = run_sweep(spec, tmp_path, quiet=True)
    assert [status.status for status in result.runs] == ["trained"] * 8
    for status in result.runs:
        name = status.run.config.strategy
        header = (status.run.run_dir / rundir.METRICS_FILE).read_text().splitlines()[0].split(",")
        assert set(COLUMNS[name]) <= set(header), (name, header)
        rows = rundir.read_metrics(status.run.run_dir)
        assert len(rows) == SWEEP_OPTIONS["epochs"] + 1
        assert all(np.isfinite(rows[-1][column]) for column in COLUMNS[name])
        assert rows[-1]["test_loss"] < rows[0]["test_loss"], (status.run.name, [r["test_loss"] for r in rows])
        if name == "alpha_order":                   # the fixed weight of the first-order estimate is recorded
            assert all(row["ivw_alpha"] == 0.5 for row in rows[1:])


@pytest.mark.slow
def test_shac_resumes_exactly_after_a_kill_of_diffenvs_train(tmp_path):
    out = tmp_path / "run"
    arguments = ["cartpole", "--poles", "1", "--strategy", "shac:horizon=25", "--clip", "norm",
                 "--train-size", "16", "--test-size", "16", "--batch-size", "8", "--epochs", "25",
                 "--checkpoint-every", "1", "--seed", "3", "--quiet", "--no-plot", "--out", str(out)]
    environment = {**os.environ, "JAX_DISABLE_MOST_OPTIMIZATIONS":
                   str(jax.config.values["jax_disable_most_optimizations"])}
    # what the diffenvs-train console script runs
    command = [sys.executable, "-c", "import sys; from trainers.cli import train_main; sys.exit(train_main())"]
    process = subprocess.Popen(command + arguments, env=environment, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / rundir.CHECKPOINT_FILE).exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    with np.load(out / rundir.CHECKPOINT_FILE, allow_pickle=False) as saved:
        killed_at = int(saved["epoch"])
        assert any(saved[name].shape == (64, 1) for name in saved.files)      # the critic's output kernel
    assert killed_at < 25

    recorded = rundir.read_config(out)                     # the command line records the canonical task name
    assert recorded["strategy"] == "shac" and recorded["strategy_options"] == {"horizon": 25}
    config = TrainConfig(task=recorded["task"], env_params={"num_poles": 1}, strategy="shac",
                         strategy_options={"horizon": 25}, clip="norm", num_train=16, num_test=16, batch_size=8,
                         epochs=25, checkpoint_every=1, seed=3)
    resumed = train(config, out=out, quiet=True)
    uninterrupted = train(config, quiet=True)
    strip = lambda rows: [{k: repr(v) for k, v in row.items() if k != "epoch_seconds"} for row in rows]
    assert strip(rundir.read_metrics(out)) == strip(uninterrupted.metrics)
    assert strip(resumed.metrics) == strip(uninterrupted.metrics)
    assert len(uninterrupted.metrics) == 26 and np.isfinite(uninterrupted.metrics[-1]["critic_loss"])


def test_the_commands_take_the_new_strategies_by_name(capsys):
    from trainers.cli import train_main
    from trainers.experiments.comparison import run_comparison, run_name
    from trainers.experiments.sweep import _parse_strategy

    assert _parse_strategy("shac:horizon=16") == {"strategy": "shac", "strategy_options": {"horizon": 16}}
    assert _parse_strategy("hig") == {"strategy": "hig"}
    assert run_name("cartpole", 4, "shac:horizon=16", 0).startswith("cartpole-poles4-shac-norm-seed0-")
    with pytest.raises(ValueError, match=r"methods: 'nope' is not one of .* registered gradient strategy"):
        run_comparison("unused", cases=["cartpole:1"], methods=["ivw", "nope"])
    for bad, message in [("nope", "strategy must be one of"), ("shac:depth=2", "shac has no option 'depth'"),
                         ("shac:horizon=0", "shac: horizon must be an integer >= 1")]:
        with pytest.raises(SystemExit):
            train_main(["cartpole", "--strategy", bad, "--out", "unused"])
        assert message in capsys.readouterr().err
