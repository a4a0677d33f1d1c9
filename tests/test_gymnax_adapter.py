"""The gymnax adapter: gymnax 1.0's reset/step conventions (autoreset included), the same physics as
the functional environments, gymnax's own wrappers on top, spaces, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from gymnax.environments import environment  # noqa: E402
from gymnax.wrappers.purerl import FlattenObservationWrapper, LogWrapper  # noqa: E402

import diffenvs  # noqa: E402
from diffenvs.action_scale import DEFAULT_ACTION_SCALE  # noqa: E402
from diffenvs.gymnax_adapter import GymnaxEnv, GymnaxEnvParams, gymnax_env  # noqa: E402

SHORT = {"CartPole": {"num_poles": 2, "num_steps": 10}, "GuidanceByRepulsion": {"num_steps": 10},
         "QuantumControl": {"num_steps": 8}}

pytestmark = pytest.mark.usefixtures("fast_compilation")


def _random_actions(env: GymnaxEnv, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Actions in [-1.2, 1.2] (some clipped) of shape (*shape, num_actions)."""
    return jax.random.uniform(key, (*shape, env.num_actions), minval=-1.2, maxval=1.2)


def _scan_rollout(env: GymnaxEnv, params: GymnaxEnvParams, key: jax.Array, actions: jax.Array):
    """One instance: reset, then step through ``actions`` (steps, num_actions) with lax.scan."""
    reset_key, step_key = jax.random.split(key)
    obs, state = env.reset(reset_key, params)

    def body(carry, inputs):
        state = carry
        step_key, action = inputs
        obs, next_state, reward, terminated, truncated, info = env.step(step_key, state, action, params)
        return next_state, (obs, next_state, reward, terminated, truncated, info)

    keys = jax.random.split(step_key, actions.shape[0])
    return (obs, state), jax.lax.scan(body, state, (keys, actions))


@pytest.mark.parametrize("name", [pytest.param("CartPole", marks=pytest.mark.slow),   # the fast tier compiles
                                  pytest.param("GuidanceByRepulsion", marks=pytest.mark.slow),  # the cheapest
                                  "QuantumControl"])
def test_is_a_gymnax_environment_with_the_functional_physics(name):
    env, params = diffenvs.gymnax_env(name, **SHORT[name])
    functional = diffenvs.make(name, **SHORT[name])
    assert isinstance(env, environment.Environment) and env.name == name
    assert params.max_steps_in_episode == functional.num_steps()
    assert params.action_scale == DEFAULT_ACTION_SCALE[name] and params.env_params == functional.default_params
    steps, count = functional.num_steps() - 1, 16        # stop before the autoreset (tested below)
    keys = jax.random.split(jax.random.PRNGKey(0), count)
    actions = _random_actions(env, jax.random.PRNGKey(1), (count, steps))
    (first_obs, first_state), (_, (obs, states, rewards, terminated, truncated, info)) = jax.jit(
        jax.vmap(lambda k, a: _scan_rollout(env, params, k, a)))(keys, actions)

    # the functional environment stepped directly, with the scaled, clipped controls
    starts = jax.vmap(functional.initial)(jax.vmap(lambda k: jax.random.split(k)[0])(keys))
    controls = params.action_scale * jnp.clip(actions, -1, 1).reshape(count, steps, *functional.action_shape())
    _, losses = jax.vmap(functional.rollout)(starts, controls)
    expected_states = jax.vmap(lambda s, c: jax.lax.scan(
        lambda state, u: (functional.transition(state, u),) * 2, s, c)[1])(starts, controls)

    np.testing.assert_array_equal(np.asarray(first_state.physics), np.asarray(starts.physics))
    np.testing.assert_array_equal(np.asarray(first_obs), np.asarray(starts.physics))
    np.testing.assert_allclose(np.asarray(states.physics), np.asarray(expected_states.physics), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(states.time), np.asarray(expected_states.time))
    np.testing.assert_allclose(np.asarray(obs), np.asarray(expected_states.physics), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rewards), -np.asarray(losses), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(info["loss"]), np.asarray(losses), rtol=1e-5, atol=1e-6)
    assert not np.any(np.asarray(terminated)) and not np.any(np.asarray(truncated))
    # the scale matters: unscaled controls would give other states
    unscaled = jax.vmap(functional.rollout)(starts, jnp.clip(actions, -1, 1).reshape(controls.shape))[0]
    assert not np.allclose(np.asarray(unscaled.physics), np.asarray(states.physics[:, -1]), rtol=1e-3)


@pytest.mark.parametrize("name", ["CartPole", "QuantumControl"])
def test_autoreset_at_the_horizon(name):
    env, params = gymnax_env(name, **SHORT[name])
    horizon = params.max_steps_in_episode
    key = jax.random.PRNGKey(2)
    actions = _random_actions(env, jax.random.PRNGKey(3), (2 * horizon + 1,))
    (_, start), (_, (obs, states, rewards, terminated, truncated, info)) = jax.jit(
        lambda k, a: _scan_rollout(env, params, k, a))(key, actions)
    truncated, times = np.asarray(truncated), np.asarray(states.time)
    assert truncated.tolist() == [t % horizon == horizon - 1 for t in range(2 * horizon + 1)]
    assert not np.any(np.asarray(terminated))
    assert times.tolist() == [(t + 1) % horizon for t in range(2 * horizon + 1)]
    end = horizon - 1
    # the step that reaches the horizon returns the fresh state from gymnax's reset key ...
    step_keys = jax.random.split(jax.random.split(key)[1], actions.shape[0])
    fresh = env.functional_env.initial(jax.random.split(step_keys[end])[1])
    np.testing.assert_array_equal(np.asarray(states.physics[end]), np.asarray(fresh.physics))
    np.testing.assert_array_equal(np.asarray(obs[end]), np.asarray(fresh.physics))
    # ... while the reward and final_observation are those of the finished episode's last step
    functional = env.functional_env
    controls = params.action_scale * jnp.clip(actions[:horizon], -1, 1).reshape(horizon, *functional.action_shape())
    final, losses = functional.rollout(start, controls)
    np.testing.assert_allclose(np.asarray(info["final_observation"][end]), np.asarray(final.physics),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rewards[:horizon]), -np.asarray(losses), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(states.physics[end]), np.asarray(final.physics))


def test_max_steps_in_episode_truncates_earlier():
    env, params = gymnax_env("cartpole", max_steps_in_episode=3)
    assert params.max_steps_in_episode == 3 and env.functional_env.num_steps() == 100
    actions = jnp.zeros((7, 1))
    _, (_, (_, states, _, _, truncated, _)) = jax.jit(lambda k: _scan_rollout(env, params, k, actions))(
        jax.random.PRNGKey(0))
    assert np.asarray(truncated).tolist() == [False, False, True] * 2 + [False]
    assert np.asarray(states.time).tolist() == [1, 2, 0, 1, 2, 0, 1]


def test_gymnax_wrappers_log_returns_of_flattened_observations():
    env, params = gymnax_env("GuidanceByRepulsion", **SHORT["GuidanceByRepulsion"])
    wrapped = LogWrapper(FlattenObservationWrapper(env))
    horizon, count = params.max_steps_in_episode, 8
    assert wrapped.observation_space(params).shape == (24,)

    def run(key, actions):
        obs, state = wrapped.reset(key, params)

        def body(state, action):
            obs, state, reward, terminated, truncated, info = wrapped.step(jax.random.PRNGKey(0), state, action,
                                                                           params)
            return state, (obs, reward, info)
        return obs, jax.lax.scan(body, state, actions)[1]

    actions = _random_actions(env, jax.random.PRNGKey(4), (count, horizon + 2))
    first_obs, (obs, rewards, info) = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(5), count),
                                                             actions)
    assert first_obs.shape == (count, 24) and obs.shape == (count, horizon + 2, 24)
    assert info["final_observation"].shape == (count, horizon + 2, 24)
    returned = np.asarray(info["returned_episode"])
    assert returned[:, horizon - 1].all() and returned.sum() == count
    np.testing.assert_allclose(np.asarray(info["returned_episode_returns"][:, horizon - 1]),
                               np.asarray(rewards[:, :horizon].sum(axis=1)), rtol=1e-5)
    assert np.asarray(info["returned_episode_lengths"][:, -1]).tolist() == [horizon] * count
    assert np.asarray(info["returned_episode_valid"][:, -1]).all()


def test_spaces_contain_observations_actions_and_states():
    env, params = gymnax_env("guidance")
    assert env.num_actions == 4
    action_space, observation_space, state_space = (env.action_space(params), env.observation_space(params),
                                                    env.state_space(params))
    assert action_space.shape == (4,) and observation_space.shape == (6, 2, 2)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    action = action_space.sample(jax.random.PRNGKey(1))
    assert action.shape == (4,) and bool(action_space.contains(action))
    assert not bool(action_space.contains(action.at[0].set(1.5)))
    assert bool(observation_space.contains(obs)) and bool(state_space.contains(state))
    assert not bool(observation_space.contains(obs.at[0, 0, 0].set(jnp.nan)))
    obs, state, *_ = env.step(jax.random.PRNGKey(2), state, action, params)
    assert bool(observation_space.contains(obs)) and bool(state_space.contains(state))
    assert int(state.time) == 1
    assert state_space.spaces["time"].n == params.max_steps_in_episode + 1


def test_params_are_gymnax_style_and_replaceable():
    env, params = gymnax_env("CartPole", action_scale=2.5)
    assert params.action_scale == 2.5
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    step = jax.jit(env.step)
    half = step(jax.random.PRNGKey(1), state, jnp.array([1.0]), params)[1]
    clipped = step(jax.random.PRNGKey(1), state, jnp.array([3.0]), params.replace(action_scale=1.25))[1]
    reference = env.functional_env.transition(state, jnp.array([2.5]))
    np.testing.assert_allclose(np.asarray(half.physics), np.asarray(reference.physics), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(clipped.physics),
                               np.asarray(env.functional_env.transition(state, jnp.array([1.25])).physics),
                               rtol=1e-6)
    heavy = params.replace(env_params=params.env_params.__class__(gravity=20.0))
    assert not np.allclose(np.asarray(step(jax.random.PRNGKey(1), state, jnp.array([1.0]), heavy)[1].physics),
                           np.asarray(half.physics))
    # the scalar action of a one-entry action space
    np.testing.assert_array_equal(np.asarray(step(jax.random.PRNGKey(1), state, jnp.array(1.0), params)[1].physics),
                                  np.asarray(half.physics))


def test_reward_gradient_flows_through_the_step(x64):
    env, params = gymnax_env("QuantumControl", num_steps=4, action_scale=1.0)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    functional = env.functional_env

    def adapter_reward(action):
        return env.step(jax.random.PRNGKey(1), state, action, params)[2]

    def direct_reward(action):
        return functional.reward(state, action, functional.transition(state, action))

    action = jnp.array([0.3])
    through_adapter = jax.jit(jax.grad(adapter_reward))(action)       # jitted: a sixth of the eager time
    np.testing.assert_allclose(np.asarray(through_adapter), np.asarray(jax.jit(jax.grad(direct_reward))(action)),
                               rtol=1e-9)
    assert float(jnp.abs(through_adapter).sum()) > 0


@pytest.mark.parametrize("call, message", [
    (lambda: gymnax_env("CartPol"), r"name must be one of .* did you mean 'cartpole'"),
    (lambda: gymnax_env("CartPole", poles=2), r"unknown parameter\(s\) \['poles'\]"),
    (lambda: gymnax_env("CartPole", num_poles=0), "num_poles must be an integer > 0, got 0"),
    (lambda: gymnax_env("CartPole", action_scale=0.0), "action_scale must be a finite number > 0"),
    (lambda: gymnax_env("CartPole", action_scale="1"), "action_scale must be a finite number > 0"),
    (lambda: gymnax_env("CartPole", max_steps_in_episode=101), r"max_steps_in_episode must be an integer in "
                                                              r"1..num_steps = 1..100, got 101"),
    (lambda: gymnax_env("CartPole", max_steps_in_episode=2.0), "max_steps_in_episode must be an integer"),
    (lambda: gymnax_env(diffenvs.make("CartPole"), num_poles=2), "apply only to an environment given by name"),
    (lambda: gymnax_env(3), "env must be an environment name or a FunctionalEnv"),
])
def test_bad_arguments_give_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_bad_actions_and_params_give_one_line_errors():
    env, params = gymnax_env("guidance")
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    for wrong in [(2, 2), (3,), (), (1, 4)]:
        with pytest.raises(ValueError, match=rf"action must have shape \(4,\), got shape \{wrong!r}"[:-1]):
            env.step(jax.random.PRNGKey(1), state, jnp.zeros(wrong), params)
    cartpole, cartpole_params = gymnax_env("CartPole")
    _, start = cartpole.reset(jax.random.PRNGKey(0), cartpole_params)
    with pytest.raises(ValueError, match=r"action must have shape \(1,\) \(or a scalar\), got shape \(1, 1\)"):
        cartpole.step(jax.random.PRNGKey(1), start, jnp.zeros((1, 1)), cartpole_params)
    with pytest.raises(ValueError, match="params must be a GymnaxEnvParams"):
        env.step(jax.random.PRNGKey(1), state, jnp.zeros(4), params.env_params)


def test_the_package_exports_the_adapter():
    assert "gymnax_env" in diffenvs.__all__ and diffenvs.gymnax_env is gymnax_env and diffenvs.GymnaxEnv is GymnaxEnv


@pytest.mark.slow
def test_lazy_import_and_missing_gymnax():
    probe = ("import sys, diffenvs; print('gymnax' in sys.modules); "
             "env, params = diffenvs.gymnax_env('CartPole'); print('gymnax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    blocked = ("import sys; sys.modules['gymnax'] = None; import diffenvs\n"
               "try:\n    diffenvs.gymnax_env('CartPole')\n"
               "except ImportError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and 'pip install "diffenvs[gymnax]"' in lines[0]
