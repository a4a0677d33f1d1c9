"""Parameter validation of the three environments.

Invalid parameters raise ValueError naming the parameter and the bad value, at construction (through
``make``, the params dataclasses, ``dataclasses.replace`` and environment overrides); unknown names
are rejected by ``make``; a control of the wrong shape is rejected by ``transition`` and ``reward``,
also under ``jax.jit`` (the check is on static shapes).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffenvs import CartPole, CartPoleParams, GuidanceByRepulsion, GuidanceParams, QuantumControl, QuantumParams
from diffenvs.registry import make

NAMES = ["CartPole", "GuidanceByRepulsion", "QuantumControl"]
PARAMS_TYPES = {"CartPole": CartPoleParams, "GuidanceByRepulsion": GuidanceParams,
                "QuantumControl": QuantumParams}
ENV_TYPES = {"CartPole": CartPole, "GuidanceByRepulsion": GuidanceByRepulsion, "QuantumControl": QuantumControl}

# (environment, parameter, bad value, text of the value expected in the message)
INVALID = [
    ("CartPole", "num_poles", 0, "0"),
    ("CartPole", "num_poles", -2, "-2"),
    ("CartPole", "num_poles", 1.5, "1.5"),
    ("CartPole", "num_steps", 0, "0"),
    ("CartPole", "horizon", 0.0, "0.0"),
    ("CartPole", "horizon", -1.25, "-1.25"),
    ("CartPole", "gravity", -9.8, "-9.8"),
    ("CartPole", "gravity", float("nan"), "nan"),
    ("CartPole", "pole_mass", 0.0, "0.0"),
    ("CartPole", "total_mass", -1.1, "-1.1"),
    ("CartPole", "half_length", 0.0, "0.0"),
    ("CartPole", "initial_angle_spread", -0.5, "-0.5"),
    ("CartPole", "loss_mode", "sometimes", "sometimes"),
    ("GuidanceByRepulsion", "num_drivers", 0, "0"),
    ("GuidanceByRepulsion", "num_evaders", 0, "0"),
    ("GuidanceByRepulsion", "num_evaders", -4, "-4"),
    ("GuidanceByRepulsion", "num_steps", 0, "0"),
    ("GuidanceByRepulsion", "horizon", -4.0, "-4.0"),
    ("GuidanceByRepulsion", "horizon", 0.0, "0.0"),
    ("GuidanceByRepulsion", "regularization", -1, "-1"),
    ("GuidanceByRepulsion", "regularization", -0.001, "-0.001"),
    ("GuidanceByRepulsion", "regularization", float("inf"), "inf"),
    ("GuidanceByRepulsion", "softening", 0.0, "0.0"),
    ("GuidanceByRepulsion", "flocking_distance", -0.5, "-0.5"),
    ("GuidanceByRepulsion", "center_mode", "median", "median"),
    ("GuidanceByRepulsion", "driver_radius_max", 2.5, "2.5"),
    ("GuidanceByRepulsion", "evader_center_radius_max", 0.5, "0.5"),
    ("QuantumControl", "target_state", 0, "0"),
    ("QuantumControl", "target_state", 33, "33"),
    ("QuantumControl", "target_state", -3, "-3"),
    ("QuantumControl", "num_steps", 0, "0"),
    ("QuantumControl", "dt", 0.0, "0.0"),
    ("QuantumControl", "dt", -0.0625, "-0.0625"),
    ("QuantumControl", "length", -2.0, "-2.0"),
    ("QuantumControl", "num_points", 0, "0"),
]


@pytest.mark.parametrize("name, field, value, text", INVALID,
                         ids=[f"{n}-{f}={v!r}" for n, f, v, _ in INVALID])
def test_invalid_parameter_raises_value_error_naming_it(name, field, value, text):
    with pytest.raises(ValueError) as info:
        make(name, **{field: value})
    message = str(info.value)
    assert field in message
    assert text in message
    # the params dataclass itself validates too
    with pytest.raises(ValueError, match=field):
        PARAMS_TYPES[name](**{field: value})


def test_quantum_target_state_bound_follows_num_points():
    make("QuantumControl", target_state=32)  # the highest eigenstate of the default grid is valid
    make("QuantumControl", num_points=16, target_state=16)
    with pytest.raises(ValueError) as info:
        make("QuantumControl", num_points=16, target_state=17)
    assert "target_state" in str(info.value) and "17" in str(info.value)


@pytest.mark.parametrize("name, params", [
    ("CartPole", {"num_poles": 4, "loss_mode": "continuous", "num_steps": 7}),
    ("GuidanceByRepulsion", {"regularization": 0.0, "num_drivers": 1, "num_evaders": 1}),
    ("QuantumControl", {"target_state": 5, "dt": 0.01}),
])
def test_valid_boundary_parameters_are_accepted(name, params):
    env = make(name, **params)
    for field, value in params.items():
        assert getattr(env.default_params, field) == value


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_names_are_rejected_by_make(name):
    with pytest.raises(ValueError) as info:
        make(name, not_a_parameter=1)
    assert "not_a_parameter" in str(info.value)
    # a near-miss of a real name is rejected too, not silently ignored
    with pytest.raises(ValueError, match="num_step"):
        make(name, num_step=10)


def test_unknown_environment_name_is_rejected():
    with pytest.raises(ValueError, match="Pendulum"):
        make("Pendulum")


WRONG_ACTIONS = {
    "CartPole": [np.zeros(2), np.zeros((3, 1))],
    "GuidanceByRepulsion": [np.zeros(2), np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(4)],
    "QuantumControl": [np.zeros(2), np.zeros((32,))],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_wrong_action_shape_raises_value_error(name):
    env = make(name)
    state = env.initial(jax.random.PRNGKey(0))
    good = jnp.zeros(env.action_shape())
    next_state = env.transition(state, good)
    jitted_transition = jax.jit(env.transition)
    jitted_reward = jax.jit(env.reward)
    for action in WRONG_ACTIONS[name]:
        shape_text = str(tuple(action.shape))
        with pytest.raises(ValueError, match="action") as info:
            env.transition(state, action)
        assert shape_text in str(info.value)
        with pytest.raises(ValueError, match="action"):
            jitted_transition(state, jnp.asarray(action))
        with pytest.raises(ValueError, match="action"):
            env.reward(state, action, next_state)
        with pytest.raises(ValueError, match="action"):
            jitted_reward(state, jnp.asarray(action), next_state)
        with pytest.raises(ValueError, match="action"):
            jax.vmap(env.transition)(jax.tree.map(lambda x: x[None], state), jnp.asarray(action)[None])
    # a wrong number of rollout steps' control shape is rejected as well
    with pytest.raises(ValueError, match="action"):
        env.rollout(state, jnp.zeros((3, *WRONG_ACTIONS[name][0].shape)))
    # the right shape passes under jit
    assert jitted_transition(state, good).physics.shape == env.physics_shape()


# the right number of entries in a wrong shape: refused like any other wrong shape
SAME_SIZE_WRONG_SHAPES = {
    "CartPole": [(1, 1), (1, 1, 1)],
    "GuidanceByRepulsion": [(1, 2, 2), (2, 2, 1), (4,)],
    "QuantumControl": [(1, 1), (1, 1, 1)],
}


@pytest.mark.parametrize("name", NAMES)
def test_actions_with_the_right_size_but_a_wrong_shape_are_rejected(name):
    env = make(name)
    state = env.initial(jax.random.PRNGKey(0))
    next_state = env.transition(state, jnp.zeros(env.action_shape()))
    for shape in SAME_SIZE_WRONG_SHAPES[name]:
        action = jnp.zeros(shape)
        assert action.size == math.prod(env.action_shape())
        for call in (lambda: env.transition(state, action), lambda: jax.jit(env.transition)(state, action),
                     lambda: env.reward(state, action, next_state),
                     lambda: env.transition_info(state, action, next_state)):
            with pytest.raises(ValueError, match="action must have shape") as info:
                call()
            assert str(shape) in str(info.value)


def test_unknown_task_names_list_the_three_tasks():
    with pytest.raises(ValueError) as info:
        make("cartpol")
    message = str(info.value)
    assert "['cartpole', 'guidance', 'quantum']" in message and "did you mean 'cartpole'" in message
    assert "diffenvs/GuidanceByRepulsion-v0" not in message and "QuantumControl" not in message


def test_scalar_force_is_accepted_for_single_entry_actions():
    env = make("CartPole")
    state = env.initial(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(env.transition(state, 2.0).physics),
                                  np.asarray(env.transition(state, jnp.array([2.0])).physics))


@pytest.mark.slow
@pytest.mark.parametrize("name, field, good, bad", [
    ("CartPole", "num_poles", 3, 0),
    ("CartPole", "horizon", 2.0, -1.0),
    ("GuidanceByRepulsion", "num_evaders", 7, 0),
    ("GuidanceByRepulsion", "regularization", 0.1, -1.0),
    ("QuantumControl", "target_state", 4, 33),
    ("QuantumControl", "dt", 0.03, 0.0),
])
def test_dataclasses_replace_works_and_validates(name, field, good, bad):
    env = make(name)
    params = dataclasses.replace(env.default_params, **{field: good})
    assert isinstance(params, PARAMS_TYPES[name])
    assert getattr(params, field) == good
    assert getattr(env.default_params, field) != good  # the original is unchanged (frozen)
    # the replaced parameters are used when passed to the methods
    state = env.initial(jax.random.PRNGKey(1), params)
    next_state = env.transition(state, jnp.zeros(env.action_shape(params)), params=params)
    assert next_state.physics.shape == env.physics_shape(params)
    # ... and by an environment built from them, also through overrides
    rebuilt = ENV_TYPES[name](params)
    assert rebuilt.default_params == params
    assert ENV_TYPES[name](**{field: good}).default_params == params
    with pytest.raises(ValueError) as info:
        dataclasses.replace(env.default_params, **{field: bad})
    assert field in str(info.value) and repr(bad) in str(info.value)
    with pytest.raises(ValueError, match=field):
        ENV_TYPES[name](params, **{field: bad})


def test_params_are_frozen_and_hashable():
    params = CartPoleParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.gravity = 1.0  # type: ignore[misc]
    assert hash(params) == hash(CartPoleParams())


def test_replaced_parameters_change_the_physics():
    """A parameter changed through replace really reaches the dynamics (dt = horizon / num_steps)."""
    env = make("CartPole")
    state = env.initial(jax.random.PRNGKey(2))
    slow = dataclasses.replace(env.default_params, horizon=0.5)
    fast_step = np.asarray(env.transition(state, jnp.zeros(1)).physics)
    slow_step = np.asarray(env.transition(state, jnp.zeros(1), params=slow).physics)
    physics = np.asarray(state.physics)
    # semi-implicit Euler: position change x' - x = dt·x_dot'; halving dt roughly halves it
    ratio = (slow_step[0, 0] - physics[0, 0]) / (fast_step[0, 0] - physics[0, 0])
    assert ratio == pytest.approx(0.5, rel=0.05)
    assert not math.isclose(slow_step[1, 0], fast_step[1, 0])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_open_loop_actions_of_the_wrong_length_or_shape_are_rejected(name):
    env = make(name, num_steps=6)
    state = env.initial(jax.random.PRNGKey(0))
    good = jnp.zeros((6, *env.action_shape()))
    assert jnp.isfinite(env.episode_loss(state, good))
    assert env.rollout(state, good[:2])[1].shape == (2,)  # a partial rollout is allowed
    for bad in (good[:5], jnp.zeros((7, *env.action_shape())), jnp.zeros((6, 3, 3))):
        with pytest.raises(ValueError, match=r"actions must have shape .*got shape"):
            env.episode_loss(state, bad)
    with pytest.raises(ValueError, match="1..num_steps"):
        env.rollout(state, jnp.zeros((7, *env.action_shape())))
