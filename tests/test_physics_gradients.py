"""Gradients of the three environments against central finite differences, in float64.

Every environment must be differentiable through ``transition``, through whole rollouts
(``episode_loss``) and with respect to its float parameters (pytree leaves of the params
dataclasses). Reverse-mode gradients from ``jax.grad`` are compared with central finite differences
of step ``H`` in float64, where both agree to about 1e-9 relative; a broken derivative (a
stop_gradient, a non-differentiable solver, a parameter treated as a constant) fails by orders of
magnitude. The dtype tests check that the state dtype follows JAX's x64 flag.

Compilation dominates the run time, so every check compiles two functions per case: the gradient
(``jax.grad`` with respect to parameters, physics and controls at once) and a vmapped evaluation of
all finite-difference perturbations in one batch. The results are cached per case and shared by the
tests that inspect them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffenvs.core import EnvState
from diffenvs.registry import make

H = 1e-6            # finite-difference step (relative to max(1, |value|) for parameters)
RTOL = 1e-5         # relative tolerance of gradient vs. finite differences
ATOL_REL = 1e-6     # absolute tolerance, relative to the largest component of the compared group

# Typical random control magnitude per environment (force in N, gains, potential amplitude u).
ACTION_SCALE = {"CartPole": 5.0, "GuidanceByRepulsion": 1.0, "QuantumControl": 5.0}

# id -> (environment name, make() parameters) for the single-step tests.
STEP_CASES = {
    "cartpole-1": ("CartPole", {"num_poles": 1}),
    "cartpole-3": ("CartPole", {"num_poles": 3}),
    "guidance": ("GuidanceByRepulsion", {}),
    "guidance-mean-3x5": ("GuidanceByRepulsion", {"center_mode": "mean", "num_drivers": 3,
                                                  "num_evaders": 5}),
    "quantum": ("QuantumControl", {}),
}

ROLLOUT_STEPS = 15
# Short-episode parameters keeping each environment's time step of the spec, so that the loss of a
# ROLLOUT_STEPS-step episode is defined (the cart-pole FINAL loss is scored at step num_steps).
SHORT = {
    "CartPole": {"num_steps": ROLLOUT_STEPS, "horizon": ROLLOUT_STEPS * 0.01},
    "GuidanceByRepulsion": {"num_steps": ROLLOUT_STEPS, "horizon": ROLLOUT_STEPS / 15.0},
    "QuantumControl": {"num_steps": ROLLOUT_STEPS},
}
ROLLOUT_CASES = {
    "cartpole-1-final": ("CartPole", {"num_poles": 1}),
    "cartpole-2-continuous": ("CartPole", {"num_poles": 2, "loss_mode": "continuous"}),
    "guidance": ("GuidanceByRepulsion", {"regularization": 0.1}),
    "quantum-target4": ("QuantumControl", {"target_state": 4}),
}

# Float parameters that must influence one step / a whole episode (non-zero derivative).
DYNAMIC_PARAMETERS = {
    "CartPole": ["horizon", "gravity", "pole_mass", "total_mass", "half_length"],
    "GuidanceByRepulsion": ["horizon", "softening", "evader_repulsion", "evader_friction",
                            "flocking_strength", "flocking_distance", "driver_friction",
                            "driver_separation"],
    "QuantumControl": ["dt", "length"],
}
# ... and those that must influence the starting state.
INITIAL_PARAMETERS = {
    "CartPole": ["initial_cart_range", "initial_angular_velocity_range", "initial_angle_spread"],
    "GuidanceByRepulsion": ["driver_radius_min", "driver_radius_max", "evader_center_radius_min",
                            "evader_center_radius_max", "evader_spread"],
    "QuantumControl": ["ground_state_weight"],
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def random_actions(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape) * ACTION_SCALE[name]


def float_fields(params) -> list[str]:
    return [f.name for f in dataclasses.fields(params) if not f.metadata.get("static", False)]


def generic_state(env, name: str, seed: int) -> EnvState:
    """A starting state made less special: random velocities for guidance (which starts at rest),
    a wave function spread over all eigenstates for quantum (which starts in span(φ_1, φ_2))."""
    state = env.initial(jax.random.PRNGKey(seed))
    physics = np.array(state.physics, dtype=np.float64)
    rng = np.random.default_rng(seed + 1000)
    if name == "GuidanceByRepulsion":
        physics[:, 1] = rng.normal(size=physics[:, 1].shape) * 0.5
    elif name == "QuantumControl":
        physics = physics + 0.3 * rng.normal(size=physics.shape)
        physics /= np.linalg.norm(physics)
    return state._replace(physics=jnp.asarray(physics))


def gradient_and_finite_differences(fn, params, physics, control):
    """Reverse-mode gradient of the scalar ``fn(params, physics, control)`` and central finite
    differences for every physics entry, every control entry and every float parameter.

    Returns {"physics": (grad, fd), "control": (grad, fd), "params": {field: (grad, fd)}, "value"}.
    """
    physics = jnp.asarray(physics)
    control = jnp.asarray(control)
    grad_params, grad_physics, grad_control = jax.jit(jax.grad(fn, argnums=(0, 1, 2)))(
        params, physics, control)

    fields = float_fields(params)
    base = {field: float(getattr(params, field)) for field in fields}
    steps = {field: H * max(1.0, abs(value)) for field, value in base.items()}
    n_physics, n_control, n_fields = physics.size, control.size, len(fields)
    rows = 1 + 2 * (n_physics + n_control + n_fields)
    batch_physics = np.tile(np.asarray(physics, np.float64).reshape(1, -1), (rows, 1))
    batch_control = np.tile(np.asarray(control, np.float64).reshape(1, -1), (rows, 1))
    batch_params = {field: np.full(rows, value) for field, value in base.items()}
    row = 1
    for i in range(n_physics):
        batch_physics[row, i] += H
        batch_physics[row + 1, i] -= H
        row += 2
    for i in range(n_control):
        batch_control[row, i] += H
        batch_control[row + 1, i] -= H
        row += 2
    for field in fields:
        batch_params[field][row] += steps[field]
        batch_params[field][row + 1] -= steps[field]
        row += 2
    stacked_params = dataclasses.replace(params, **{k: jnp.asarray(v) for k, v in batch_params.items()})
    values = np.asarray(jax.jit(jax.vmap(fn))(
        stacked_params, jnp.asarray(batch_physics.reshape(rows, *physics.shape)),
        jnp.asarray(batch_control.reshape(rows, *control.shape))), dtype=np.float64)
    differences = (values[1::2] - values[2::2])
    fd_physics = (differences[:n_physics] / (2 * H)).reshape(physics.shape)
    fd_control = (differences[n_physics:n_physics + n_control] / (2 * H)).reshape(control.shape)
    fd_params = {field: differences[n_physics + n_control + k] / (2 * steps[field])
                 for k, field in enumerate(fields)}
    return {
        "value": values[0],
        "steps": steps,
        "dtypes": (grad_physics.dtype, grad_control.dtype),
        "physics": (np.asarray(grad_physics, np.float64), fd_physics),
        "control": (np.asarray(grad_control, np.float64), fd_control),
        "params": {field: (float(getattr(grad_params, field)), fd_params[field]) for field in fields},
    }


def rounding_noise(value: float, step: float = H) -> float:
    """Bound on the rounding error of a central difference of a float64 function of size |value|."""
    return 10 * np.finfo(np.float64).eps * max(1.0, abs(value)) / step


def assert_gradient_close(gradient, reference, what: str, value: float = 0.0) -> None:
    gradient = np.asarray(gradient, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert gradient.shape == reference.shape, what
    scale = np.abs(reference).max()
    assert scale > 1e-6, f"{what}: the finite-difference gradient is trivially zero"
    atol = ATOL_REL * scale + rounding_noise(value)
    assert atol < 1e-3 * scale, f"{what}: tolerance too loose to be meaningful"
    np.testing.assert_allclose(gradient, reference, rtol=RTOL, atol=atol, err_msg=what)


def assert_parameter_gradients_close(result, name: str, required: list[str], what: str) -> None:
    pairs = result["params"]
    assert set(required) <= set(pairs), f"{what}: missing float parameters"
    scale = max(abs(fd) for _, fd in pairs.values())
    for field, (gradient, reference) in pairs.items():
        atol = ATOL_REL * scale + rounding_noise(result["value"], result["steps"][field])
        assert gradient == pytest.approx(reference, rel=RTOL, abs=atol), \
            f"{what}: d/d {field}"
    for field in required:
        assert abs(pairs[field][1]) > 1e-7, f"{what}: no dependence on {field}"
        assert abs(pairs[field][0]) > 1e-7, f"{what}: gradient with respect to {field} is zero"


@functools.lru_cache(maxsize=None)
def transition_results(case_id: str, x64_enabled: bool):
    assert x64_enabled
    name, params = STEP_CASES[case_id]
    env = make(name, **params)
    state = generic_state(env, name, seed=3)
    action = random_actions(name, env.action_shape(), 4)
    cotangent = jnp.asarray(np.random.default_rng(5).normal(size=env.physics_shape()))

    def contracted(p, physics, act):
        next_state = env.transition(EnvState(physics, state.time), act, params=p)
        return jnp.sum(cotangent * next_state.physics)

    return gradient_and_finite_differences(contracted, env.default_params, state.physics, action)


@functools.lru_cache(maxsize=None)
def rollout_results(case_id: str, x64_enabled: bool):
    assert x64_enabled
    name, params = ROLLOUT_CASES[case_id]
    env = make(name, **{**SHORT[name], **params})
    assert env.num_steps() == ROLLOUT_STEPS
    state = env.initial(jax.random.PRNGKey(11))
    actions = random_actions(name, (ROLLOUT_STEPS, *env.action_shape()), 12)

    def loss(p, physics, acts):
        return env.episode_loss(EnvState(physics, state.time), acts, p)

    return gradient_and_finite_differences(loss, env.default_params, state.physics, actions)


# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["CartPole", "GuidanceByRepulsion", "QuantumControl"])
def test_states_are_float64_in_x64_mode(x64, name):
    env = make(name)
    state = env.initial(jax.random.PRNGKey(0))
    assert state.physics.dtype == jnp.float64
    assert state.physics.shape == env.physics_shape()
    action = jnp.asarray(random_actions(name, env.action_shape(), 1))
    assert action.dtype == jnp.float64
    # A float32 action does not lower the state's precision.
    next_state, reward, (final, losses) = jax.jit(
        lambda s, a, acts: (env.transition(s, a), env.reward(s, a, env.transition(s, a)),
                            env.rollout(s, acts)))(state, action.astype(jnp.float32),
                                                   jnp.zeros((3, *env.action_shape())))
    assert next_state.physics.dtype == jnp.float64
    assert reward.dtype == jnp.float64
    assert final.physics.dtype == jnp.float64
    assert losses.dtype == jnp.float64
    # The values really carry float64 precision (they are not float32 numbers stored as float64).
    physics = np.asarray(next_state.physics)
    assert np.any(physics != physics.astype(np.float32).astype(np.float64))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["CartPole", "GuidanceByRepulsion", "QuantumControl"])
def test_states_are_float32_by_default(x32, name):
    env = make(name)
    state = env.initial(jax.random.PRNGKey(0))
    assert state.physics.dtype == jnp.float32
    assert state.time.dtype == jnp.int32
    # A NumPy float64 action (what users naturally pass) must not promote the state.
    action = random_actions(name, env.action_shape(), 1)
    next_state, reward, (final, losses) = jax.jit(
        lambda s, a, acts: (env.transition(s, a), env.reward(s, a, env.transition(s, a)),
                            env.rollout(s, acts)))(state, action, np.zeros((3, *env.action_shape())))
    assert next_state.physics.dtype == jnp.float32
    assert reward.dtype == jnp.float32
    assert final.physics.dtype == jnp.float32
    assert losses.dtype == jnp.float32


# ----------------------------------------------------------------------------------------------
# one step
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STEP_CASES))
def test_transition_gradient_wrt_physics(x64, case_id):
    result = transition_results(case_id, jax.config.read("jax_enable_x64"))
    assert result["dtypes"][0] == jnp.float64
    assert_gradient_close(*result["physics"], f"{case_id}: d step / d physics", result["value"])


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(STEP_CASES))
def test_transition_gradient_wrt_action(x64, case_id):
    result = transition_results(case_id, jax.config.read("jax_enable_x64"))
    assert result["dtypes"][1] == jnp.float64
    assert_gradient_close(*result["control"], f"{case_id}: d step / d action", result["value"])


@pytest.mark.parametrize("case_id", list(STEP_CASES))
def test_transition_gradient_wrt_parameters(x64, case_id):
    name = STEP_CASES[case_id][0]
    result = transition_results(case_id, jax.config.read("jax_enable_x64"))
    assert_parameter_gradients_close(result, name, DYNAMIC_PARAMETERS[name], case_id)


@pytest.mark.parametrize("case_id", ["cartpole-3", "guidance", "quantum"])
def test_transition_jvp_matches_vjp(x64, case_id):
    """Forward and reverse mode agree: <v, J u> by jvp equals <Jᵀ v, u> by vjp."""
    name, params = STEP_CASES[case_id]
    env = make(name, **params)
    state = generic_state(env, name, seed=6)
    action = jnp.asarray(random_actions(name, env.action_shape(), 7))
    rng = np.random.default_rng(8)
    u_physics = jnp.asarray(rng.normal(size=env.physics_shape()))
    u_action = jnp.asarray(rng.normal(size=env.action_shape()))
    v = jnp.asarray(rng.normal(size=env.physics_shape()))

    def step(physics, act):
        return env.transition(state._replace(physics=physics), act).physics

    @jax.jit
    def both(physics, act):
        _, tangent = jax.jvp(step, (physics, act), (u_physics, u_action))
        _, pullback = jax.vjp(step, physics, act)
        cot_physics, cot_action = pullback(v)
        return jnp.sum(v * tangent), jnp.sum(cot_physics * u_physics) + jnp.sum(cot_action * u_action)

    forward, reverse = (float(x) for x in both(state.physics, action))
    assert forward == pytest.approx(reverse, rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# whole episodes
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(ROLLOUT_CASES))
def test_episode_loss_gradient_wrt_initial_physics(x64, case_id):
    result = rollout_results(case_id, jax.config.read("jax_enable_x64"))
    assert result["value"] > 0.0
    assert result["dtypes"][0] == jnp.float64
    assert_gradient_close(*result["physics"], f"{case_id}: d loss / d initial physics",
                          result["value"])


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(ROLLOUT_CASES))
def test_episode_loss_gradient_wrt_actions(x64, case_id):
    result = rollout_results(case_id, jax.config.read("jax_enable_x64"))
    gradient, reference = result["control"]
    assert_gradient_close(gradient, reference, f"{case_id}: d loss / d actions", result["value"])
    # Every control of the episode influences the loss (also with the FINAL cart-pole loss).
    assert np.all(np.abs(gradient).reshape(ROLLOUT_STEPS, -1).max(axis=1) > 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(ROLLOUT_CASES))
def test_episode_loss_gradient_wrt_parameters(x64, case_id):
    name = ROLLOUT_CASES[case_id][0]
    result = rollout_results(case_id, jax.config.read("jax_enable_x64"))
    required = list(DYNAMIC_PARAMETERS[name])
    if name == "GuidanceByRepulsion":
        required.append("regularization")  # enters the loss, not the dynamics
    assert_parameter_gradients_close(result, name, required, case_id)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["CartPole", "GuidanceByRepulsion", "QuantumControl"])
def test_initial_state_parameter_gradients(x64, name):
    """The starting distribution is reparameterised: d initial(key, params) / d params is exact."""
    env = make(name)
    params = env.default_params
    key = jax.random.PRNGKey(31)
    cotangent = jnp.asarray(np.random.default_rng(32).normal(size=env.physics_shape()))

    def contracted(p, physics, control):
        del physics, control
        return jnp.sum(cotangent * env.initial(key, p).physics)

    result = gradient_and_finite_differences(contracted, params, jnp.zeros(()), jnp.zeros(()))
    assert_parameter_gradients_close(result, name, INITIAL_PARAMETERS[name], f"{name} initial")
