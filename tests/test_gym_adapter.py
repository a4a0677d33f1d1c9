"""Tests of the Gymnasium adapters: ``gym.make`` / ``gym.make_vec`` for every diffenvs environment.

The functional core (``diffenvs.make(name)``) is the reference: every observation, reward and info
term the adapters produce is checked against ``transition`` / ``reward`` / ``transition_info`` /
``episode_loss`` of the functional environment from the same state with the same control.
"""

from __future__ import annotations

import functools
import warnings

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import diffenvs
from diffenvs.core import EnvState

NAMES = ["CartPole", "GuidanceByRepulsion", "QuantumControl"]
IDS = {name: f"diffenvs/{name}-v0" for name in NAMES}

# Typical control magnitude for random actions (N for the cart, gains for the drivers, u for the well).
ACTION_SCALE = {"CartPole": 5.0, "GuidanceByRepulsion": 1.0, "QuantumControl": 5.0}

# Loss terms each environment reports in ``info``.
INFO_KEYS = {
    "CartPole": {"loss", "angle_loss"},
    "GuidanceByRepulsion": {"loss", "evader_loss", "control_loss"},
    "QuantumControl": {"loss", "fidelity", "norm"},
}

# A short episode length used where full-length episodes are not the point.
SHORT = 4

pytestmark = pytest.mark.usefixtures("fast_compilation")  # compilation dominates these tests

RTOL, ATOL = 1e-5, 1e-6          # one step, jitted adapter vs. un-jitted core, float32
SUM_RTOL, SUM_ATOL = 1e-4, 1e-5  # episode sums in float32

name_param = pytest.mark.parametrize("name", NAMES)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
# Every adapter instance jit-compiles its own step function, which dominates the run time, so tests
# that do not need a fresh instance share one per configuration (each test resets it first).
@functools.lru_cache(maxsize=None)
def _cached_env(name: str, items: tuple) -> gym.Env:
    return gym.make(IDS[name], **dict(items))


@functools.lru_cache(maxsize=None)
def _cached_vec(name: str, num_envs: int, items: tuple) -> gym.vector.VectorEnv:
    return gym.make_vec(IDS[name], num_envs=num_envs, **dict(items))


def shared_env(name: str, **kwargs) -> gym.Env:
    """``gym.make(IDS[name], **kwargs)``, shared between tests."""
    return _cached_env(name, tuple(sorted(kwargs.items())))


def shared_vec(name: str, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    """``gym.make_vec(IDS[name], num_envs=num_envs, **kwargs)``, shared between tests."""
    return _cached_vec(name, num_envs, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=None)
def _jitted_episode_loss(name: str, items: tuple):
    return jax.jit(diffenvs.make(name, **dict(items)).episode_loss)


def core_episode_loss(name: str, physics, actions, **params) -> float:
    """The functional core's ``episode_loss`` from ``physics`` at time 0."""
    loss = _jitted_episode_loss(name, tuple(sorted(params.items())))
    return float(loss(core_state(physics), jnp.asarray(actions, jnp.result_type(float))))


def random_actions(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * ACTION_SCALE[name]).astype(np.float32)


def start_physics(name: str, seed: int = 0, **params) -> np.ndarray:
    """A float64 state in the spec layout, from the starting distribution plus a tiny perturbation
    (so that its float32 rounding is not the identity and ``obs == arr.astype(float32)`` means
    something)."""
    core = diffenvs.make(name, **params)
    physics = np.asarray(core.initial(jax.random.PRNGKey(seed)).physics, np.float64)
    noise = np.random.default_rng(seed + 1000).uniform(-1e-3, 1e-3, physics.shape)
    return physics + noise


def core_state(physics, time: int = 0) -> EnvState:
    return EnvState(jnp.asarray(physics, jnp.result_type(float)), jnp.asarray(time, jnp.int32))


def core_step(name: str, physics, control, time: int = 0, **params):
    """(next observation as float32, reward, info) of the functional core for one transition."""
    core = diffenvs.make(name, **params)
    state = core_state(physics, time)
    control = jnp.asarray(control, jnp.result_type(float))
    next_state = core.transition(state, control)
    reward = core.reward(state, control, next_state)
    info = core.transition_info(state, control, next_state)
    return (np.asarray(next_state.physics, np.float32), float(reward),
            {key: float(value) for key, value in info.items()})


def assert_obs(env, obs, shape):
    assert isinstance(obs, np.ndarray)
    assert obs.dtype == np.float32
    assert obs.shape == shape
    assert obs in env.observation_space


# ----------------------------------------------------------------------------------------------
# registration and parameter pass-through
# ----------------------------------------------------------------------------------------------
@name_param
def test_ids_registered_with_both_entry_points(name):
    assert diffenvs.GYM_IDS[name] == IDS[name]
    spec = gym.spec(IDS[name])
    assert spec.entry_point == "diffenvs.gym_adapter:GymEnv"
    assert spec.vector_entry_point == "diffenvs.gym_adapter:GymVectorEnv"
    env = gym.make(IDS[name])
    assert isinstance(env.unwrapped, diffenvs.GymEnv)
    assert type(env.unwrapped.functional_env) is diffenvs.ENVIRONMENTS[name]
    diffenvs.register_environments()  # idempotent
    assert gym.spec(IDS[name]) is spec


@pytest.mark.slow
def test_make_passes_num_poles():
    env = gym.make(IDS["CartPole"], num_poles=3)
    assert env.unwrapped.functional_env.default_params.num_poles == 3
    assert env.observation_space.shape == (4, 2)
    assert env.action_space.shape == (1,)
    obs, _ = env.reset(seed=0)
    assert_obs(env, obs, (4, 2))
    obs, *_ = env.step(np.zeros(1, np.float32))
    assert_obs(env, obs, (4, 2))


@pytest.mark.slow
def test_make_passes_agent_counts():
    env = gym.make(IDS["GuidanceByRepulsion"], num_drivers=3, num_evaders=5)
    assert env.observation_space.shape == (8, 2, 2)
    assert env.action_space.shape == (3, 2)
    obs, _ = env.reset(seed=0)
    assert_obs(env, obs, (8, 2, 2))
    obs, *_ = env.step(np.ones((3, 2), np.float32))
    assert_obs(env, obs, (8, 2, 2))


@pytest.mark.slow
def test_make_passes_num_points_and_num_steps():
    env = gym.make(IDS["QuantumControl"], num_points=16, num_steps=3)
    assert env.observation_space.shape == (16, 2)
    env.reset(seed=0)
    truncations = [env.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert truncations == [False, False, True]


@pytest.mark.slow
def test_make_target_state_changes_reward():
    """Starting in eigenstate 3 with a small control: target 3 is nearly reached (reward ~ 0),
    target 4 is nearly orthogonal (reward ~ -1); both match the core with the same parameter."""
    from diffenvs.quantum import eigenstate
    physics = np.zeros((32, 2))
    physics[:, 0] = np.asarray(eigenstate(3, 32))
    action = np.array([0.1], np.float32)
    rewards = {}
    for target in (3, 4):
        env = gym.make(IDS["QuantumControl"], target_state=target)
        env.reset(options={"state": physics})
        _, reward, _, _, info = env.step(action)
        _, core_reward, core_info = core_step("QuantumControl", physics, action, target_state=target)
        np.testing.assert_allclose(reward, core_reward, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(info["fidelity"], core_info["fidelity"], rtol=RTOL, atol=ATOL)
        rewards[target] = reward
    assert rewards[3] > -0.1
    assert rewards[4] < -0.9


FLOAT_PARAMS = [
    ("CartPole", "gravity", 3.0),
    ("CartPole", "half_length", 0.2),
    ("GuidanceByRepulsion", "horizon", 8.0),
    ("GuidanceByRepulsion", "evader_repulsion", 30.0),
    ("QuantumControl", "dt", 0.2),
    ("QuantumControl", "length", 1.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, param, value", FLOAT_PARAMS)
def test_make_float_param_changes_dynamics(name, param, value):
    physics = start_physics(name)
    core = diffenvs.make(name)
    action = random_actions(name, core.action_shape(), seed=1)
    default_obs, *_ = core_step(name, physics, action)
    env = gym.make(IDS[name], **{param: value})
    assert getattr(env.unwrapped.functional_env.default_params, param) == value
    env.reset(options={"state": physics})
    obs, reward, *_ = env.step(action)
    expected_obs, expected_reward, _ = core_step(name, physics, action, **{param: value})
    np.testing.assert_allclose(obs, expected_obs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reward, expected_reward, rtol=RTOL, atol=ATOL)
    assert np.max(np.abs(obs - default_obs)) > 1e-4, f"{param}={value} did not change the dynamics"


@name_param
def test_make_unknown_parameter_raises(name):
    with pytest.raises(ValueError, match="not_a_parameter"):
        gym.make(IDS[name], not_a_parameter=1.0)
    with pytest.raises(ValueError, match="not_a_parameter"):
        gym.make_vec(IDS[name], num_envs=2, not_a_parameter=1.0)


@name_param
def test_make_invalid_parameter_value_raises(name):
    with pytest.raises(ValueError, match="num_steps"):
        gym.make(IDS[name], num_steps=0)


# ----------------------------------------------------------------------------------------------
# observations, reset
# ----------------------------------------------------------------------------------------------
@name_param
def test_observation_float32_in_space_and_spec_layout(name):
    env = shared_env(name)
    shape = env.unwrapped.functional_env.physics_shape()
    assert env.observation_space.shape == shape
    assert env.observation_space.dtype == np.float32
    assert env.action_space.dtype == np.float32
    obs, info = env.reset(seed=3)
    assert info == {}
    assert_obs(env, obs, shape)
    # the observation is the physical state drawn by the core's starting distribution
    core = diffenvs.make(name)
    if name == "CartPole":
        assert np.all(np.abs(obs[1:, 0] - np.pi) <= np.pi / 6 + 1e-6)    # poles hang, ±30°
        assert np.all(np.abs(obs[0]) <= 1.0) and np.all(np.abs(obs[1:, 1]) <= 1.0)
    elif name == "GuidanceByRepulsion":
        assert np.all(obs[:, 1] == 0.0)                                  # velocities start at 0
        radius = np.linalg.norm(obs[:2, 0], axis=-1)
        assert np.all((radius >= 3.0 - 1e-5) & (radius <= 4.0 + 1e-5))  # drivers at radius 3..4
    else:
        np.testing.assert_allclose(np.sum(obs**2), 1.0, rtol=1e-5)      # unit-norm wave function
    action = random_actions(name, core.action_shape())
    obs, reward, terminated, truncated, info = env.step(action)
    assert_obs(env, obs, shape)
    assert isinstance(reward, float)
    assert terminated is False and truncated is False


@name_param
def test_reset_seed_determinism(name):
    env = shared_env(name)
    first, _ = env.reset(seed=7)
    env.step(random_actions(name, env.action_space.shape))
    second, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first, second)
    other, _ = env.reset(seed=8)
    assert not np.array_equal(first, other)
    # a fresh instance with the same seed agrees as well
    again, _ = gym.make(IDS[name]).reset(seed=7)
    np.testing.assert_array_equal(first, again)
    # unseeded resets continue the seeded generator: they differ from each other
    a, _ = env.reset()
    b, _ = env.reset()
    assert not np.array_equal(a, b)


@pytest.mark.slow
@name_param
def test_reset_options_state_then_step_matches_core(name):
    physics = start_physics(name, seed=2)
    env = shared_env(name)
    obs, _ = env.reset(seed=0, options={"state": physics})
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs, physics.astype(np.float32))
    action = random_actions(name, env.action_space.shape, seed=3)
    obs, reward, terminated, truncated, info = env.step(action)
    expected_obs, expected_reward, expected_info = core_step(name, physics, action)
    np.testing.assert_allclose(obs, expected_obs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reward, expected_reward, rtol=RTOL, atol=ATOL)
    assert set(info) == set(expected_info)
    for key in info:
        np.testing.assert_allclose(info[key], expected_info[key], rtol=RTOL, atol=ATOL)
    assert terminated is False and truncated is False


@name_param
def test_reset_options_state_resets_time(name):
    """Resetting from a state mid-episode restarts the step count: num_steps more steps to truncate."""
    env = shared_env(name, num_steps=SHORT)
    env.reset(seed=0)
    action = random_actions(name, env.action_space.shape)
    for _ in range(SHORT - 1):
        env.step(action)
    env.reset(options={"state": start_physics(name, num_steps=SHORT)})
    truncations = [env.step(action)[3] for _ in range(SHORT)]
    assert truncations == [False] * (SHORT - 1) + [True]


@name_param
def test_reset_options_wrong_state_raises(name):
    env = shared_env(name)
    shape = env.observation_space.shape
    with pytest.raises(ValueError, match="state"):
        env.reset(options={"state": np.zeros((shape[0] + 1,) + shape[1:])})
    with pytest.raises(ValueError, match="state"):
        env.reset(options={"state": np.zeros(shape).reshape(-1)})
    bad = np.zeros(shape)
    bad.flat[0] = np.nan
    with pytest.raises(ValueError, match="state"):
        env.reset(options={"state": bad})


# ----------------------------------------------------------------------------------------------
# info, episode return, truncation
# ----------------------------------------------------------------------------------------------
@name_param
def test_info_carries_loss_terms(name):
    env = shared_env(name, num_steps=SHORT)
    env.reset(seed=1)
    action = random_actions(name, env.action_space.shape)
    for _ in range(SHORT):
        _, reward, _, _, info = env.step(action)
        assert set(info) == INFO_KEYS[name]
        assert all(isinstance(value, float) for value in info.values())
        np.testing.assert_allclose(info["loss"], -reward, rtol=RTOL, atol=ATOL)
    if name == "QuantumControl":
        np.testing.assert_allclose(info["norm"], 1.0, rtol=1e-4)
        np.testing.assert_allclose(info["loss"], 1.0 - info["fidelity"], rtol=RTOL, atol=ATOL)


EPISODE_CASES = [(name, {}) for name in NAMES] + [("CartPole", {"loss_mode": "continuous"})]


@pytest.mark.parametrize("name, extra", EPISODE_CASES,
                         ids=[name + ("-continuous" if extra else "") for name, extra in EPISODE_CASES])
def test_episode_return_is_minus_episode_loss(name, extra):
    """Full-length episodes (the default num_steps of each environment)."""
    params = dict(extra)
    core = diffenvs.make(name, **params)
    horizon = core.num_steps()
    physics = start_physics(name, seed=4, **params)
    actions = random_actions(name, (horizon, *core.action_shape()), seed=5)

    env = shared_env(name, **params)
    env.reset(options={"state": physics})
    rewards, step_count = [], 0
    while True:
        _, reward, terminated, truncated, _ = env.step(actions[step_count])
        step_count += 1
        rewards.append(reward)
        assert terminated is False
        if truncated:
            break
        assert step_count < horizon, "the episode did not truncate after num_steps steps"
    assert step_count == horizon

    expected_loss = core_episode_loss(name, physics, actions, **params)
    np.testing.assert_allclose(sum(rewards), -expected_loss, rtol=SUM_RTOL, atol=SUM_ATOL)
    _, per_step = core.rollout(core_state(physics), jnp.asarray(actions))
    np.testing.assert_allclose(rewards, -np.asarray(per_step), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# action_scale
# ----------------------------------------------------------------------------------------------
@name_param
def test_default_action_space_is_unbounded(name):
    env = shared_env(name)
    assert np.all(np.isneginf(env.action_space.low)) and np.all(np.isposinf(env.action_space.high))


@pytest.mark.slow
@name_param
def test_action_scale_bounds_and_scales_the_control(name):
    scale = 3.0
    env = shared_env(name, action_scale=scale)
    shape = diffenvs.make(name).action_shape()
    assert env.action_space.shape == shape
    assert env.action_space.dtype == np.float32
    np.testing.assert_array_equal(env.action_space.low, -np.ones(shape, np.float32))
    np.testing.assert_array_equal(env.action_space.high, np.ones(shape, np.float32))

    physics = start_physics(name, seed=6)
    # a mix of in-range and out-of-range entries: the control is scale * clip(action, -1, 1)
    action = random_actions(name, shape, seed=7) / ACTION_SCALE[name] * 1.5
    action.flat[0] = 2.5
    control = scale * np.clip(action, -1.0, 1.0)
    env.reset(options={"state": physics})
    obs, reward, _, _, info = env.step(action)
    expected_obs, expected_reward, expected_info = core_step(name, physics, control)
    np.testing.assert_allclose(obs, expected_obs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(reward, expected_reward, rtol=RTOL, atol=ATOL)
    # and it is not the unscaled, unclipped action
    unscaled_obs, *_ = core_step(name, physics, action)
    assert np.max(np.abs(obs - unscaled_obs)) > 1e-6


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
@name_param
def test_action_scale_invalid_raises(name, scale):
    with pytest.raises(ValueError, match="action_scale"):
        gym.make(IDS[name], action_scale=scale)
    with pytest.raises(ValueError, match="action_scale"):
        gym.make_vec(IDS[name], num_envs=2, action_scale=scale)


# ----------------------------------------------------------------------------------------------
# bad input through the Gymnasium API
# ----------------------------------------------------------------------------------------------
@name_param
def test_step_bad_action_raises(name):
    env = shared_env(name)
    env.reset(seed=0)
    shape = env.action_space.shape
    wrong_shapes = [np.zeros((*shape, 2), np.float32), np.zeros((2, *shape), np.float32)]
    if int(np.prod(shape)) > 1:
        wrong_shapes.append(np.zeros(shape, np.float32).reshape(-1)[:-1])
        wrong_shapes.append(0.0)
    for action in wrong_shapes:
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    for bad in (np.nan, np.inf, -np.inf):
        action = np.zeros(shape, np.float32)
        action.flat[-1] = bad
        with pytest.raises(ValueError, match="action"):
            env.step(action)
    # the failed steps left the environment usable and at time 0
    obs, reward, terminated, truncated, _ = env.step(np.zeros(shape, np.float32))
    assert np.all(np.isfinite(obs)) and np.isfinite(reward)


@name_param
def test_step_bad_action_with_action_scale_raises(name):
    env = shared_env(name, action_scale=3.0)
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, np.float32)
    action.flat[0] = np.nan  # clipping must not hide a NaN
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.slow
@name_param
def test_step_refuses_the_right_size_in_a_wrong_shape(name):
    env = shared_env(name)
    env.reset(seed=0)
    shape = env.action_space.shape
    for wrong in ((1, *shape), (*shape, 1), (int(np.prod(shape)),) if len(shape) > 1 else (1, 1, *shape)):
        with pytest.raises(ValueError, match="action must have shape") as info:
            env.step(np.zeros(wrong, np.float32))
        assert str(wrong) in str(info.value)
    envs = shared_vec(name, N)
    envs.reset(seed=0)
    shape = envs.action_space.shape
    for wrong in ((*shape, 1), (1, *shape), (int(np.prod(shape)),)):
        with pytest.raises(ValueError, match="action must have shape"):
            envs.step(np.zeros(wrong, np.float32))


def test_scalar_action_accepted_for_one_entry():
    env = shared_env("CartPole")
    physics = start_physics("CartPole")
    env.reset(options={"state": physics})
    obs_scalar, *_ = env.step(2.0)
    env.reset(options={"state": physics})
    obs_array, *_ = env.step(np.array([2.0], np.float32))
    np.testing.assert_array_equal(obs_scalar, obs_array)


@name_param
def test_step_before_reset_raises(name):
    env = diffenvs.GymEnv(name)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(env.action_space.shape, np.float32))


def test_invalid_render_mode_raises():
    with pytest.raises(ValueError, match="render_mode"):
        diffenvs.GymEnv("CartPole", render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        diffenvs.GymVectorEnv("CartPole", num_envs=2, render_mode="human")


# ----------------------------------------------------------------------------------------------
# Gymnasium's environment checker and rendering
# ----------------------------------------------------------------------------------------------
def _run_check_env(env) -> list[str]:
    """check_env with warnings recorded (not raised); returns the warning messages."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    for message in messages:
        print("check_env warning:", message)
    return messages


@name_param
def test_check_env_without_render(name):
    """The API checks that do not depend on the rendering module."""
    env = shared_env(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    for message in sorted({f"{w.category.__name__}: {w.message}" for w in caught}):
        print("check_env warning:", message)


@name_param
def test_check_env_with_rgb_array(name):
    env = shared_env(name, render_mode="rgb_array")
    _run_check_env(env.unwrapped)


@name_param
def test_check_env_with_action_scale(name):
    env = shared_env(name, action_scale=3.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    for message in messages:
        print("check_env warning:", message)
    # the bounded interface raises none of the checker's action-space complaints
    assert not [message for message in messages if "action space" in message]


def assert_frame(frame):
    assert isinstance(frame, np.ndarray)
    assert frame.dtype == np.uint8
    assert frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] > 0 and frame.shape[1] > 0


@name_param
def test_render_rgb_array(name):
    env = shared_env(name, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert_frame(first)
    for _ in range(5):
        env.step(random_actions(name, env.action_space.shape))
    later = env.render()
    assert_frame(later)
    assert later.shape == first.shape


@name_param
def test_render_without_mode_returns_none(name):
    env = diffenvs.GymEnv(name)
    env.reset(seed=0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert env.render() is None


# ----------------------------------------------------------------------------------------------
# vector environment
# ----------------------------------------------------------------------------------------------
N = 3


@pytest.mark.slow
@name_param
def test_make_vec_uses_vector_entry_point(name):
    envs = shared_vec(name, N)
    assert isinstance(envs, diffenvs.GymVectorEnv)
    assert not isinstance(envs, gym.vector.SyncVectorEnv)
    assert envs.num_envs == N
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    core = diffenvs.make(name)
    assert envs.single_observation_space.shape == core.physics_shape()
    assert envs.single_action_space.shape == core.action_shape()
    assert envs.observation_space.shape == (N, *core.physics_shape())
    assert envs.action_space.shape == (N, *core.action_shape())
    assert envs.observation_space.dtype == np.float32 and envs.action_space.dtype == np.float32
    obs, info = envs.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (N, *core.physics_shape())
    assert obs in envs.observation_space
    # the N instances start from different states
    assert not np.array_equal(obs[0], obs[1])
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert obs.dtype == np.float32 and obs in envs.observation_space
    assert reward.shape == (N,) and terminated.shape == (N,) and truncated.shape == (N,)
    assert terminated.dtype == bool and truncated.dtype == bool
    assert set(info) == INFO_KEYS[name] | {f"_{key}" for key in INFO_KEYS[name]}
    for key in INFO_KEYS[name]:
        assert info[key].shape == (N,)
        assert info[f"_{key}"].dtype == bool and np.all(info[f"_{key}"])


@pytest.mark.slow
def test_make_vec_passes_params():
    envs = gym.make_vec(IDS["CartPole"], num_envs=N, num_poles=3)
    assert envs.single_observation_space.shape == (4, 2)
    assert envs.observation_space.shape == (N, 4, 2)
    assert envs.reset(seed=0)[0].shape == (N, 4, 2)

    envs = gym.make_vec(IDS["GuidanceByRepulsion"], num_envs=N, num_drivers=3, num_evaders=5)
    assert envs.observation_space.shape == (N, 8, 2, 2)
    assert envs.action_space.shape == (N, 3, 2)
    envs.reset(seed=0)
    obs, *_ = envs.step(np.zeros((N, 3, 2), np.float32))
    assert obs.shape == (N, 8, 2, 2)

    envs = gym.make_vec(IDS["QuantumControl"], num_envs=N, target_state=4, dt=0.2)
    params = envs.functional_env.default_params
    assert params.target_state == 4 and params.dt == 0.2

    envs = gym.make_vec(IDS["CartPole"], num_envs=N, action_scale=2.0)
    np.testing.assert_array_equal(envs.action_space.low, -np.ones((N, 1), np.float32))
    np.testing.assert_array_equal(envs.action_space.high, np.ones((N, 1), np.float32))
    assert envs.action_scale == 2.0


def test_make_vec_max_episode_steps_not_silently_ignored():
    """``gym.make(id, max_episode_steps=k)`` truncates after k steps (TimeLimit); ``gym.make_vec`` with
    the same argument must either do the same or refuse it, not run to num_steps."""
    single = gym.make(IDS["CartPole"], max_episode_steps=3)
    single.reset(seed=0)
    assert [single.step(np.zeros(1, np.float32))[3] for _ in range(3)] == [False, False, True]
    try:
        envs = gym.make_vec(IDS["CartPole"], num_envs=2, max_episode_steps=3)
    except ValueError:
        return
    envs.reset(seed=0)
    truncations = [bool(np.all(envs.step(np.zeros((2, 1), np.float32))[3])) for _ in range(3)]
    assert truncations == [False, False, True]


def test_make_vec_invalid_num_envs_raises():
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(IDS["CartPole"], num_envs=0)


def batch_physics(name: str, count: int = N, **params) -> np.ndarray:
    return np.stack([start_physics(name, seed=10 + i, **params) for i in range(count)])


@pytest.mark.slow
@pytest.mark.parametrize("params, action_scale", [({}, None), ({"alt": True}, 2.0)],
                         ids=["default", "params-action_scale"])
@name_param
def test_vector_step_matches_core(name, params, action_scale):
    alt = {"CartPole": {"num_poles": 2, "gravity": 5.0},
           "GuidanceByRepulsion": {"num_drivers": 3, "num_evaders": 2, "horizon": 6.0},
           "QuantumControl": {"num_points": 12, "target_state": 2, "dt": 0.1}}[name]
    params = alt if params else {}
    envs = shared_vec(name, N, action_scale=action_scale, **params)
    batch = batch_physics(name, **params)
    obs, _ = envs.reset(seed=0, options={"state": batch})
    np.testing.assert_array_equal(obs, batch.astype(np.float32))
    actions = random_actions(name, envs.action_space.shape, seed=11)
    if action_scale is not None:
        actions = actions / ACTION_SCALE[name] * 1.5
    controls = actions if action_scale is None else action_scale * np.clip(actions, -1, 1)
    obs, reward, terminated, truncated, info = envs.step(actions)
    for i in range(N):
        expected_obs, expected_reward, expected_info = core_step(name, batch[i], controls[i], **params)
        np.testing.assert_allclose(obs[i], expected_obs, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(reward[i], expected_reward, rtol=RTOL, atol=ATOL)
        for key, value in expected_info.items():
            np.testing.assert_allclose(info[key][i], value, rtol=RTOL, atol=ATOL)
    assert not np.any(terminated) and not np.any(truncated)


@pytest.mark.slow
@name_param
def test_vector_autoreset_next_step(name):
    envs = shared_vec(name, N, num_steps=SHORT)
    batch = batch_physics(name, num_steps=SHORT)
    envs.reset(seed=0, options={"state": batch})
    actions = random_actions(name, (3 * SHORT, *envs.action_space.shape), seed=12)

    # first episode: truncated for all at exactly step num_steps, never terminated
    returns = np.zeros(N)
    for t in range(SHORT):
        obs, reward, terminated, truncated, info = envs.step(actions[t])
        returns += reward
        assert not np.any(terminated)
        assert np.all(truncated) if t == SHORT - 1 else not np.any(truncated), t
        assert np.all(info["_loss"])
    last_obs = obs
    for i in range(N):
        expected = core_episode_loss(name, batch[i], actions[:SHORT, i], num_steps=SHORT)
        np.testing.assert_allclose(returns[i], -expected, rtol=SUM_RTOL, atol=SUM_ATOL)

    # the autoreset step: fresh states, reward 0, both flags False, info masked out
    obs, reward, terminated, truncated, info = envs.step(actions[SHORT])
    assert obs.dtype == np.float32 and obs in envs.observation_space
    for i in range(N):
        assert not np.allclose(obs[i], last_obs[i])
    assert not np.array_equal(obs[0], obs[1])
    np.testing.assert_array_equal(reward, np.zeros(N))
    assert not np.any(terminated) and not np.any(truncated)
    assert not np.any(info["_loss"])
    if name == "GuidanceByRepulsion":
        assert np.all(obs[:, :, 1] == 0.0)  # a start state, not a stepped one
    if name == "QuantumControl":
        np.testing.assert_allclose(np.sum(obs**2, axis=(1, 2)), np.ones(N), rtol=1e-5)
    reset_obs = obs

    # second episode: num_steps more steps, starting at time 0 from the reset observations
    returns = np.zeros(N)
    for t in range(SHORT):
        obs, reward, terminated, truncated, info = envs.step(actions[SHORT + 1 + t])
        returns += reward
        assert not np.any(terminated)
        assert np.all(truncated) if t == SHORT - 1 else not np.any(truncated), t
        assert np.all(info["_loss"])
    for i in range(N):
        second = actions[SHORT + 1:2 * SHORT + 1, i]
        expected = core_episode_loss(name, reset_obs[i], second, num_steps=SHORT)
        np.testing.assert_allclose(returns[i], -expected, rtol=SUM_RTOL, atol=SUM_ATOL)

    # and the next step resets again
    obs, reward, terminated, truncated, _ = envs.step(actions[2 * SHORT + 1])
    np.testing.assert_array_equal(reward, np.zeros(N))
    assert not np.any(truncated)


@pytest.mark.slow
@name_param
def test_vector_reset_clears_pending_autoreset(name):
    """reset() after the truncating step starts a full new episode (no autoreset on the next step)."""
    envs = shared_vec(name, N, num_steps=SHORT)
    envs.reset(seed=0)
    action = np.zeros(envs.action_space.shape, np.float32)
    for _ in range(SHORT - 1):
        envs.step(action)
    assert np.all(envs.step(action)[3])
    batch = batch_physics(name, num_steps=SHORT)
    envs.reset(options={"state": batch})
    obs, reward, _, truncated, _ = envs.step(action)
    for i in range(N):
        expected_obs, expected_reward, _ = core_step(name, batch[i], action[i], num_steps=SHORT)
        np.testing.assert_allclose(obs[i], expected_obs, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(reward[i], expected_reward, rtol=RTOL, atol=ATOL)
    assert not np.any(truncated)


def _vector_rollout(envs, seed, actions):
    obs, _ = envs.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, _ = envs.step(action)
        trace += [obs, reward, terminated, truncated]
    return trace


@pytest.mark.slow
@name_param
def test_vector_seed_determinism(name):
    actions = random_actions(name, (2 * SHORT + 2, N, *diffenvs.make(name).action_shape()), seed=13)
    first = _vector_rollout(gym.make_vec(IDS[name], num_envs=N, num_steps=SHORT), 5, actions)
    envs = shared_vec(name, N, num_steps=SHORT)
    second = _vector_rollout(envs, 5, actions)
    for a, b in zip(first, second):       # includes the autoreset states
        np.testing.assert_array_equal(a, b)
    third = _vector_rollout(envs, 5, actions)  # re-seeding the same instance
    for a, b in zip(first, third):
        np.testing.assert_array_equal(a, b)
    other, _ = envs.reset(seed=6)
    assert not np.array_equal(first[0], other)


@name_param
def test_vector_bad_input_raises(name):
    fresh = diffenvs.GymVectorEnv(name, num_envs=N)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step(np.zeros(fresh.action_space.shape, np.float32))
    envs = shared_vec(name, N)
    shape = envs.action_space.shape
    envs.reset(seed=0)
    for action in (np.zeros(shape[1:], np.float32), np.zeros((N + 1, *shape[1:]), np.float32),
                   np.zeros((*shape, 2), np.float32)):
        with pytest.raises(ValueError, match="action"):
            envs.step(action)
    for bad in (np.nan, np.inf):
        action = np.zeros(shape, np.float32)
        action[1].flat[0] = bad
        with pytest.raises(ValueError, match="action"):
            envs.step(action)
    state_shape = envs.observation_space.shape
    with pytest.raises(ValueError, match="state"):
        envs.reset(options={"state": np.zeros(state_shape[1:])})
    with pytest.raises(ValueError, match="state"):
        envs.reset(options={"state": np.zeros((N + 1, *state_shape[1:]))})
    # still usable
    obs, *_ = envs.step(np.zeros(shape, np.float32))
    assert np.all(np.isfinite(obs))


@name_param
def test_vector_render(name):
    envs = shared_vec(name, N, render_mode="rgb_array")
    assert envs.render_mode == "rgb_array"
    envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == N
    for frame in frames:
        assert_frame(frame)
    envs.step(random_actions(name, envs.action_space.shape))
    assert len(envs.render()) == N
    # the frames are of the individual instances (which start from different states)
    assert not np.array_equal(frames[0], frames[1])


def test_vector_render_without_mode_returns_none():
    envs = gym.make_vec(IDS["CartPole"], num_envs=2)
    envs.reset(seed=0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert envs.render() is None


@pytest.mark.slow
@name_param
def test_vector_matches_sync_vector_env_of_single_envs(name):
    """Our vectorised env and Gymnasium's SyncVectorEnv of our single envs agree from the same start
    states with the same actions, through a whole episode and the autoreset step."""
    params = {"num_steps": SHORT}
    n = N
    ours = shared_vec(name, n, **params)
    sync = gym.make_vec(IDS[name], num_envs=n, vectorization_mode="sync", **params)
    assert isinstance(sync, gym.vector.SyncVectorEnv)
    assert sync.metadata["autoreset_mode"] == ours.metadata["autoreset_mode"]
    assert sync.single_observation_space == ours.single_observation_space
    assert sync.single_action_space == ours.single_action_space
    assert sync.observation_space == ours.observation_space
    assert sync.action_space == ours.action_space

    batch = batch_physics(name, n, **params)
    ours_obs, _ = ours.reset(options={"state": batch})
    sync.reset(seed=0)
    sync_obs = np.stack([env.reset(options={"state": batch[i]})[0] for i, env in enumerate(sync.envs)])
    np.testing.assert_array_equal(ours_obs, sync_obs)

    actions = random_actions(name, (SHORT + 1, *ours.action_space.shape), seed=14)
    for t in range(SHORT + 1):
        o_obs, o_rew, o_term, o_trunc, o_info = ours.step(actions[t])
        s_obs, s_rew, s_term, s_trunc, s_info = sync.step(actions[t])
        np.testing.assert_allclose(o_rew, s_rew, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(o_term, s_term)
        np.testing.assert_array_equal(o_trunc, s_trunc)
        if t < SHORT:  # the autoreset step draws fresh states from different generators
            np.testing.assert_allclose(o_obs, s_obs, rtol=RTOL, atol=ATOL)
            for key in INFO_KEYS[name]:
                np.testing.assert_array_equal(o_info[f"_{key}"], s_info[f"_{key}"])
                np.testing.assert_allclose(o_info[key], s_info[key], rtol=RTOL, atol=ATOL)
        else:
            np.testing.assert_array_equal(o_rew, np.zeros(n))
            assert not np.any(o_trunc)
            for key in INFO_KEYS[name]:
                assert not np.any(o_info[f"_{key}"])
                assert not np.any(s_info.get(f"_{key}", np.zeros(n, bool)))
