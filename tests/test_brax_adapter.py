"""The brax adapter: brax's PPO and APG run on every environment, the episode return is minus the
trainers' loss, ``done``/``metrics`` follow brax's conventions, bad input is refused."""

from __future__ import annotations

import functools
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from diffenvs.brax_adapter import DEFAULT_ACTION_SCALE, BraxEnv, brax_env
from trainers.networks import MLP, Controller, from_flax
from trainers.rollout import Problem, instance_losses, rollout_loss
from trainers.training import initial_states

ENVIRONMENTS = ["CartPole", "GuidanceByRepulsion", "QuantumControl"]
SHORT_EPISODES = {"CartPole": 10, "GuidanceByRepulsion": 10, "QuantumControl": 8}


pytestmark = pytest.mark.usefixtures("fast_compilation")  # compilation dominates these tests


# The return-equals-loss tests use the x64 fixture: guidance amplifies float32 rounding in closed loop.


def _finite_tree(tree) -> bool:
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
    return bool(leaves) and all(np.all(np.isfinite(leaf)) for leaf in leaves if leaf.dtype.kind == "f")


def _policy_loss(env: BraxEnv, make_policy, params, count: int = 4) -> float:
    """rollout_loss of the deterministic brax policy (as a trainers controller) on a few states."""
    functional = env.functional_env

    def apply(policy_params, observations):
        actions, _ = make_policy(policy_params, deterministic=True)(
            observations.reshape(observations.shape[0], -1), jax.random.PRNGKey(0))
        return env.action_scale * jnp.clip(actions, -1, 1).reshape(observations.shape[0],
                                                                     *functional.action_shape())

    problem = Problem(functional, functional.default_params, Controller(lambda key: None, apply))
    states = initial_states(functional, jax.random.PRNGKey(1), count)
    return float(jax.jit(lambda p: rollout_loss(problem, p, states))(params))


@pytest.mark.slow
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_ppo_trains(name):
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    env = BraxEnv(name, num_steps=SHORT_EPISODES[name])
    steps = env.num_steps
    make_policy, params, _ = ppo.train(
        env, num_timesteps=4 * steps, episode_length=steps, num_envs=4, batch_size=4, num_minibatches=1,
        unroll_length=steps, num_updates_per_batch=1, num_evals=1, run_evals=False, seed=0,
        network_factory=functools.partial(ppo_networks.make_ppo_networks, policy_hidden_layer_sizes=(16,),
                                          value_hidden_layer_sizes=(16,)))
    assert _finite_tree(params)
    assert math.isfinite(_policy_loss(env, make_policy, params))


@pytest.mark.slow
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_apg_trains(name):
    from brax.training.agents.apg import networks as apg_networks
    from brax.training.agents.apg import train as apg

    env = BraxEnv(name, num_steps=SHORT_EPISODES[name])
    steps = env.num_steps
    make_policy, params, metrics = apg.train(
        env, episode_length=steps, policy_updates=1, num_envs=4, horizon_length=steps, num_evals=1,
        num_eval_envs=1, seed=0,
        network_factory=functools.partial(apg_networks.make_apg_networks, hidden_layer_sizes=(16,)))
    assert _finite_tree(params)
    assert math.isfinite(float(metrics["eval/episode_reward"]))
    assert math.isfinite(_policy_loss(env, make_policy, params))


def _brax_episode(env: BraxEnv, start, action_fn):
    """Run ``num_steps`` brax steps from the functional state ``start``; (rewards, dones, states)."""
    def body(state, t):
        next_state = env.step(state, action_fn(state.obs, t))
        return next_state, (next_state.reward, next_state.done)

    return jax.lax.scan(body, env.reset_to(start), jnp.arange(env.num_steps))


@pytest.mark.slow
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_return_is_minus_the_loss_open_loop(name, x64):
    env = BraxEnv(name)
    functional = env.functional_env
    states = initial_states(functional, jax.random.PRNGKey(3), 3)
    actions = jax.random.uniform(jax.random.PRNGKey(4), (3, env.num_steps, env.action_size),
                                 minval=-1.0, maxval=1.0)

    def brax_return(start, episode_actions):
        _, (rewards, _) = _brax_episode(env, start, lambda obs, t: episode_actions[t])
        return rewards.sum()

    def loss(start, episode_actions):
        controls = env.action_scale * episode_actions.reshape(env.num_steps, *functional.action_shape())
        return functional.episode_loss(start, controls)

    returns = jax.jit(jax.vmap(brax_return))(states, actions)
    losses = jax.jit(jax.vmap(loss))(states, actions)
    np.testing.assert_allclose(np.asarray(returns), -np.asarray(losses), rtol=1e-5, atol=1e-6)
    # the scale matters: unscaled controls give different losses (the test would notice a lost scale)
    unscaled = jax.jit(jax.vmap(lambda s, a: functional.episode_loss(
        s, a.reshape(env.num_steps, *functional.action_shape()))))(states, actions)
    assert not np.allclose(np.asarray(unscaled), np.asarray(losses), rtol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_return_is_minus_the_trainers_loss_with_a_controller(name, x64):
    env = BraxEnv(name)
    functional = env.functional_env
    network = from_flax(MLP(output_shape=(env.action_size,), hidden=(16,), zero_last_kernel=False),
                        functional.physics_shape())
    params = network.init(jax.random.PRNGKey(5))
    policy = lambda obs: jnp.tanh(network.apply(params, obs[None]))[0]   # actions in [-1, 1]
    controller = Controller(init=network.init, apply=lambda p, obs: env.action_scale * jnp.tanh(
        network.apply(p, obs)).reshape(obs.shape[0], *functional.action_shape()))
    problem = Problem(functional, functional.default_params, controller)
    states = initial_states(functional, jax.random.PRNGKey(6), 3)

    def brax_return(start):
        _, (rewards, _) = _brax_episode(env, start, lambda obs, t: policy(obs))
        return rewards.sum()

    returns = jax.jit(jax.vmap(brax_return))(states)
    losses = jax.jit(lambda p: instance_losses(problem, p, states))(params)
    assert returns.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(returns), -np.asarray(losses), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(-returns.mean()), float(jax.jit(
        lambda p: rollout_loss(problem, p, states))(params)), rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_done_and_metrics(name):
    env = brax_env(name)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert state.done.dtype == state.reward.dtype and float(state.done) == 0.0
    assert state.obs.shape == (env.observation_size,)
    assert all(float(value) == 0.0 for value in state.metrics.values())
    assert "loss" in state.metrics
    stepped = jax.jit(env.step)(state, jnp.zeros(env.action_size))
    assert jax.tree.structure(stepped) == jax.tree.structure(state)
    assert set(stepped.metrics) == set(state.metrics)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(stepped)):
        assert (before.shape, before.dtype) == (after.shape, after.dtype)
    np.testing.assert_allclose(float(stepped.metrics["loss"]), -float(stepped.reward), rtol=1e-6)
    start = env.functional_env.initial(jax.random.PRNGKey(1))
    _, (_, dones) = jax.jit(lambda s: _brax_episode(env, s, lambda obs, t: jnp.zeros(env.action_size)))(start)
    dones = np.asarray(dones)
    assert dones.dtype.kind == "f"
    np.testing.assert_array_equal(dones[:-1], 0.0)
    assert dones[-1] == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "10", True, [1.0]])
def test_bad_action_scale(bad):
    with pytest.raises(ValueError, match="action_scale"):
        BraxEnv("CartPole", action_scale=bad)


def test_action_scale_default_and_custom():
    assert BraxEnv("guidance").action_scale == DEFAULT_ACTION_SCALE["GuidanceByRepulsion"]
    env = BraxEnv("diffenvs/CartPole-v0", action_scale=2.5, num_poles=2)
    assert env.action_scale == 2.5 and env.observation_size == 6
    np.testing.assert_allclose(np.asarray(env.control(jnp.array([3.0]))), [2.5])
    np.testing.assert_allclose(np.asarray(env.control(jnp.array([-0.5]))), [-1.25])
    # actions outside [-1, 1] are clipped: stepping with 3 is stepping with 1
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    clipped, saturated = step(state, jnp.array([3.0])), step(state, jnp.array([1.0]))
    np.testing.assert_array_equal(np.asarray(clipped.obs), np.asarray(saturated.obs))
    assert not np.array_equal(np.asarray(clipped.obs), np.asarray(step(state, jnp.array([0.5])).obs))


@pytest.mark.slow
def test_bad_action_shape_and_params():
    env = BraxEnv("GuidanceByRepulsion")
    state = env.reset(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"action must have shape \(4,\)"):
        env.step(state, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"action must have shape"):
        env.step(state, jnp.zeros((2, 2)))
    cartpole = BraxEnv("CartPole")
    start = cartpole.reset(jax.random.PRNGKey(0))
    for wrong in ((1, 1), (1, 1, 1), ()):                 # one entry, but not the flat (action_size,)
        with pytest.raises(ValueError, match=r"action must have shape \(1,\)"):
            cartpole.step(start, jnp.zeros(wrong))
    with pytest.raises(ValueError, match="params"):
        BraxEnv(diffenvs.make("CartPole"), num_poles=2)
    with pytest.raises(ValueError, match="unknown parameter"):
        BraxEnv("CartPole", poles=2)


@pytest.mark.slow
def test_lazy_export():
    assert "brax_env" in diffenvs.__all__ and "BraxEnv" in diffenvs.__all__
    assert diffenvs.BraxEnv is BraxEnv and diffenvs.brax_env is brax_env
    probe = ("import sys, diffenvs; print('brax' in sys.modules); "
             "env = diffenvs.brax_env('CartPole'); print('brax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == ["False", "True"]                       # brax's "Failed to import warp" notices are dropped
    assert "Failed to import" not in result.stdout + result.stderr
