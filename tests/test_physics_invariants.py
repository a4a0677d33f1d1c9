"""Invariants of the three environments, and cross-checks against the documented physics.

* jit and vmap give the same results as plain calls; seeding is reproducible;
* conservation laws and reference numbers of the reference setup (quantum norm, zero-control losses);
* the starting distributions (ranges and statistics);
* the episode return is minus the documented loss, computed here from the visited states;
* independent re-implementations of each simulator step, written from the equations of
  docs/physics.md, compared with the environments in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffenvs import guidance
from diffenvs.core import EnvState
from diffenvs.registry import make

NAMES = ["CartPole", "GuidanceByRepulsion", "QuantumControl"]
ACTION_SCALE = {"CartPole": 5.0, "GuidanceByRepulsion": 1.0, "QuantumControl": 5.0}


def random_actions(name: str, shape: tuple[int, ...], seed: int, scale: float | None = None) -> np.ndarray:
    scale = ACTION_SCALE[name] if scale is None else scale
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


_BATCHED_INITIAL: dict = {}


def initial_batch(env, count: int, seed: int) -> EnvState:
    """``count`` starting states (one compiled function per parameter set)."""
    key = (type(env), env.default_params)
    if key not in _BATCHED_INITIAL:
        _BATCHED_INITIAL[key] = jax.jit(jax.vmap(env.initial))
    return _BATCHED_INITIAL[key](jax.random.split(jax.random.PRNGKey(seed), count))


def zero_control_losses(env, states: EnvState) -> np.ndarray:
    actions = jnp.zeros((env.num_steps(), *env.action_shape()))
    return np.asarray(jax.jit(jax.vmap(lambda s: env.episode_loss(s, actions)))(states), np.float64)


# ----------------------------------------------------------------------------------------------
# reference implementations written from the spec
# ----------------------------------------------------------------------------------------------
def spec_cartpole_step(state: np.ndarray, force: float, dt: float = 0.01) -> np.ndarray:
    """Spec section 1: every pole uses the single-pole formula; semi-implicit Euler."""
    g, m, M, l = 9.8, 0.1, 1.1, 0.5
    ml = m * l
    x, x_dot = state[0]
    poles = state[1:]
    theta_acc = []
    cart_sum = 0.0
    for theta, theta_dot in poles:
        A = (force + ml * theta_dot**2 * math.sin(theta)) / M
        acc = (g * math.sin(theta) - math.cos(theta) * A) / (l * (4.0 / 3.0 - m * math.cos(theta)**2 / M))
        theta_acc.append(acc)
        cart_sum += theta_dot**2 * math.sin(theta) - acc * math.cos(theta)
    x_acc = (force + ml * cart_sum) / M
    new = np.empty_like(state)
    for k, ((theta, theta_dot), acc) in enumerate(zip(poles, theta_acc), start=1):
        new_theta_dot = theta_dot + dt * acc
        new[k] = (theta + dt * new_theta_dot, new_theta_dot)
    new_x_dot = x_dot + dt * x_acc
    new[0] = (x + dt * new_x_dot, new_x_dot)
    return new


def spec_eigenstate(n: int, num_points: int = 32) -> np.ndarray:
    j = np.arange(1, num_points + 1)
    phi = np.sin(np.pi * n * j / (num_points + 1))
    return phi / np.linalg.norm(phi)


def spec_quantum_step(psi: np.ndarray, u: float, dt: float = 0.0625, num_points: int = 32) -> np.ndarray:
    """Spec section 3: dense Crank-Nicolson solve (I + i dt/2 H) ψ' = (I - i dt/2 H) ψ."""
    dx = 2.0 / (num_points + 1)
    x = dx * np.arange(1, num_points + 1)
    laplace = (2 * np.eye(num_points) - np.eye(num_points, k=1) - np.eye(num_points, k=-1)) / dx**2
    hamiltonian = laplace + np.diag(u * x)
    identity = np.eye(num_points)
    return np.linalg.solve(identity + 0.5j * dt * hamiltonian, (identity - 0.5j * dt * hamiltonian) @ psi)


GUIDANCE_CONSTANTS = dict(eps=0.1, c_ev=15.0, c_fe=4.0, c_fl=0.2, d_fl=0.5, c_fd=1.0, c_sp=0.2)


def spec_guidance_derivative(state: np.ndarray, control: np.ndarray, num_drivers: int,
                             center: str = "sum") -> np.ndarray:
    """Spec section 2, one object at a time (quirks: C = sum of evader positions; f(d) as given)."""
    c = GUIDANCE_CONSTANTS
    num_objects = state.shape[0]
    drivers = range(num_drivers)
    evaders = range(num_drivers, num_objects)
    p, v = state[:, 0], state[:, 1]

    def dist(r):
        return c["eps"] + math.hypot(r[0], r[1])

    C = np.zeros(2)
    for l in evaders:
        C = C + p[l]
    if center == "mean":
        C = C / len(evaders)
    derivative = np.zeros_like(state)
    for k in drivers:
        r = p[k] - C
        r_perp = np.array([-r[1], r[0]])
        acc = control[k, 0] * r + control[k, 1] * r_perp - c["c_fd"] * v[k]
        for j in drivers:
            if j != k:
                acc = acc + c["c_sp"] * (p[k] - p[j]) / dist(p[k] - p[j])**2
        derivative[k] = (v[k], acc)
    for l in evaders:
        acc = np.zeros(2)
        for k in drivers:
            acc = acc + c["c_ev"] * (p[l] - p[k]) / dist(p[k] - p[l])**2
        acc = acc - c["c_fe"] * v[l]
        for i in evaders:
            if i != l:
                d_il = dist(p[i] - p[l])
                f = (c["d_fl"] / d_il - 1.0) / d_il
                acc = acc + c["c_fl"] * f * (p[i] - p[l])
        derivative[l] = (v[l], acc)
    return derivative


def spec_guidance_step(state, control, num_drivers, dt=4.0 / 60.0, center="sum"):
    return state + dt * spec_guidance_derivative(state, control, num_drivers, center)


# ----------------------------------------------------------------------------------------------
# jit, vmap, seeds
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, params", [("CartPole", {"num_poles": 2}), ("GuidanceByRepulsion", {}),
                                          ("QuantumControl", {})])
def test_jit_and_vmap_match_plain_calls(x32, name, params):
    env = make(name, **params)
    count = 2
    keys = jax.random.split(jax.random.PRNGKey(7), count)
    actions = jnp.asarray(random_actions(name, (count, *env.action_shape()), 8))
    sequences = jnp.asarray(random_actions(name, (count, env.num_steps(), *env.action_shape()), 9))

    def everything(key, action, sequence):
        state = env.initial(key)
        next_state = env.transition(state, action)
        reward = env.reward(state, action, next_state)
        final, losses = env.rollout(state, sequence)
        return state, next_state, reward, final, losses

    plain = [everything(keys[i], actions[i], sequences[i]) for i in range(count)]
    jitted_fn = jax.jit(everything)
    jitted = [jitted_fn(keys[i], actions[i], sequences[i]) for i in range(count)]
    jit_vmapped = jax.jit(jax.vmap(everything))(keys, actions, sequences)

    for i in range(count):
        for label, other in (("jit", jitted[i]), ("jit(vmap)", jax.tree.map(lambda x: x[i], jit_vmapped))):
            reference = jax.tree.leaves(plain[i])
            candidate = jax.tree.leaves(other)
            assert len(reference) == len(candidate)
            for a, b in zip(reference, candidate):
                assert a.shape == b.shape and a.dtype == b.dtype, label
                np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=2e-5,
                                           err_msg=f"{name} {label} instance {i}")
        # times: 0 after initial, 1 after one transition, num_steps after the rollout
        assert int(plain[i][0].time) == 0 and int(plain[i][1].time) == 1
        assert int(plain[i][3].time) == env.num_steps()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_seeding_is_reproducible(x32, name):
    env = make(name)
    a = env.initial(jax.random.PRNGKey(123))
    b = env.initial(jax.random.PRNGKey(123))
    c = env.initial(jax.random.PRNGKey(124))
    np.testing.assert_array_equal(np.asarray(a.physics), np.asarray(b.physics))
    assert not np.allclose(np.asarray(a.physics), np.asarray(c.physics))
    batch = np.asarray(initial_batch(env, 64, 5).physics)
    flat = batch.reshape(64, -1)
    # all 64 instances of a batch are distinct
    assert len({row.tobytes() for row in flat}) == 64
    np.testing.assert_array_equal(np.asarray(initial_batch(env, 64, 5).physics), batch)


# ----------------------------------------------------------------------------------------------
# conservation laws and reference numbers of the spec
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_quantum_norm_is_preserved_under_strong_random_controls(x32):
    env = make("QuantumControl")
    count = 32
    states = initial_batch(env, count, 11)
    controls = jnp.asarray(random_actions("QuantumControl", (count, 128, 1), 12, scale=10.0))

    def norms(state, sequence):
        def body(s, u):
            n = env.transition(s, u)
            return n, jnp.sqrt(jnp.sum(n.physics**2))
        return jax.lax.scan(body, state, sequence)[1]

    values = np.asarray(jax.jit(jax.vmap(norms))(states, controls))
    assert values.shape == (count, 128)
    assert states.physics.dtype == jnp.float32
    assert np.abs(values - 1.0).max() < 1e-5
    # the controls really moved the state (not a trivial evolution): fidelity to φ_1, φ_2 changed
    final, _ = jax.jit(jax.vmap(env.rollout))(states, controls)
    psi = np.asarray(final.physics[..., 0] + 1j * final.physics[..., 1])
    outside = 1.0 - np.abs(psi @ spec_eigenstate(1))**2 - np.abs(psi @ spec_eigenstate(2))**2
    assert outside.mean() > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("target", [3, 4, 5])
def test_quantum_zero_control_loss_is_128_for_targets_above_two(x32, target):
    env = make("QuantumControl", target_state=target)
    losses = zero_control_losses(env, initial_batch(env, 256, 20 + target))
    assert abs(losses.mean() - 128.0) < 1e-3
    assert np.abs(losses - 128.0).max() < 1e-3


@pytest.mark.slow
def test_quantum_zero_control_ground_state_target(x64):
    """For target 1 and zero control, |⟨φ_1, ψ_t⟩|² is constant, so L = 128 (1 - |⟨φ_1, ψ_0⟩|²)."""
    env = make("QuantumControl", target_state=1)
    states = initial_batch(env, 16, 31)
    losses = zero_control_losses(env, states)
    psi0 = np.asarray(states.physics[..., 0] + 1j * states.physics[..., 1])
    expected = 128.0 * (1.0 - np.abs(psi0 @ spec_eigenstate(1))**2)
    np.testing.assert_allclose(losses, expected, rtol=1e-9, atol=1e-9)
    assert expected.std() > 1.0  # the instances differ, so the check is not trivial


@pytest.mark.slow
@pytest.mark.parametrize("num_poles", [1, 3])
def test_cartpole_zero_force_loss_is_near_1_97(x32, num_poles):
    env = make("CartPole", num_poles=num_poles)
    losses = zero_control_losses(env, initial_batch(env, 2048, 40 + num_poles))
    assert abs(losses.mean() - 1.97) < 0.02
    assert losses.max() <= 2.0 + 1e-6
    assert losses.min() >= 0.0


@pytest.mark.slow
def test_guidance_zero_control_loss_is_near_5_24(x32):
    # The spec's 5.24 comes from a 256-state sample (standard error about 0.14); a 4096-state
    # mean is about 5.1, so the tolerance is 0.2.
    env = make("GuidanceByRepulsion", num_drivers=2, num_evaders=4)
    losses = zero_control_losses(env, initial_batch(env, 4096, 50))
    assert abs(losses.mean() - 5.24) < 0.2


# ----------------------------------------------------------------------------------------------
# starting distributions
# ----------------------------------------------------------------------------------------------
def test_cartpole_initial_distribution(x32):
    env = make("CartPole", num_poles=3)
    physics = np.asarray(initial_batch(env, 4096, 60).physics, np.float64)
    assert physics.shape == (4096, 4, 2)
    cart, angles, angular_velocities = physics[:, 0], physics[:, 1:, 0], physics[:, 1:, 1]
    for values in (cart[:, 0], cart[:, 1], angular_velocities.ravel()):  # U(-1, 1)
        assert values.min() >= -1.0 and values.max() <= 1.0
        assert values.min() < -0.95 and values.max() > 0.95
        assert abs(values.mean()) < 0.05
        assert values.var() == pytest.approx(1.0 / 3.0, abs=0.03)
    spread = math.pi / 6
    offsets = angles - math.pi  # U(-1, 1)·π/6
    assert offsets.min() >= -spread - 1e-6 and offsets.max() <= spread + 1e-6
    assert offsets.min() < -0.9 * spread and offsets.max() > 0.9 * spread  # both sides populated
    assert (offsets < 0).mean() == pytest.approx(0.5, abs=0.03)
    assert offsets.var() == pytest.approx(spread**2 / 3.0, rel=0.1)
    # every pole draws its own angle and velocity; cart position and velocity are independent
    assert abs(np.corrcoef(angles[:, 0], angles[:, 1])[0, 1]) < 0.08
    assert abs(np.corrcoef(angular_velocities[:, 0], angular_velocities[:, 2])[0, 1]) < 0.08
    assert abs(np.corrcoef(cart[:, 0], cart[:, 1])[0, 1]) < 0.08
    assert abs(np.corrcoef(cart[:, 0], angles[:, 0])[0, 1]) < 0.08
    assert abs(np.corrcoef(angles[:, 1], angular_velocities[:, 1])[0, 1]) < 0.08
    assert abs(np.corrcoef(cart[:, 1], angular_velocities[:, 0])[0, 1]) < 0.08


def test_guidance_initial_distribution(x32):
    env = make("GuidanceByRepulsion", num_drivers=2, num_evaders=4)
    physics = np.asarray(initial_batch(env, 4096, 70).physics, np.float64)
    assert physics.shape == (4096, 6, 2, 2)
    assert np.all(physics[:, :, 1] == 0.0)  # all velocities 0
    drivers, evaders = physics[:, :2, 0], physics[:, 2:, 0]
    # drivers: radius U(3, 4) (uniform in r, mean 3.5; uniform in area would give 3.524)
    radius = np.linalg.norm(drivers, axis=-1)
    assert radius.min() >= 3.0 - 1e-5 and radius.max() <= 4.0 + 1e-5
    assert radius.min() < 3.02 and radius.max() > 3.98
    assert radius.mean() == pytest.approx(3.5, abs=0.012)
    angle = np.arctan2(drivers[..., 1], drivers[..., 0])
    assert abs(np.cos(angle).mean()) < 0.04 and abs(np.sin(angle).mean()) < 0.04
    for quadrant in range(4):
        fraction = ((angle >= -np.pi + quadrant * np.pi / 2) & (angle < -np.pi / 2 + quadrant * np.pi / 2)).mean()
        assert fraction == pytest.approx(0.25, abs=0.03)
    assert abs(np.cos(angle[:, 0] - angle[:, 1]).mean()) < 0.04  # independent driver angles
    # evaders: common centre + U(-0.5, 0.5)² offsets, so they share a unit square
    extent = evaders.max(axis=1) - evaders.min(axis=1)
    assert extent.max() <= 1.0 + 1e-5
    assert extent.max() > 0.95
    # differences of two independent offsets are triangular on [-1, 1] with variance 1/6
    difference = evaders[:, 1] - evaders[:, 0]
    assert difference.var(axis=0) == pytest.approx([1 / 6, 1 / 6], abs=0.01)
    # the mean evader position m = centre + mean offset: E|m|² = E r² + 2·(1/12)/4 with
    # r ~ U(1, 2), E r² = 7/3 (uniform in area would give 2.5)
    mean_position = evaders.mean(axis=1)
    assert (mean_position**2).sum(axis=-1).mean() == pytest.approx(7 / 3 + 1 / 24, abs=0.05)
    m_radius = np.linalg.norm(mean_position, axis=-1)
    assert m_radius.min() >= 1.0 - 0.5 * math.sqrt(2) and m_radius.max() <= 2.0 + 0.5 * math.sqrt(2)
    m_angle = np.arctan2(mean_position[:, 1], mean_position[:, 0])
    assert abs(np.cos(m_angle).mean()) < 0.04 and abs(np.sin(m_angle).mean()) < 0.04
    assert abs(np.cos(m_angle - angle[:, 0]).mean()) < 0.04  # centre independent of the drivers


@pytest.mark.parametrize("weight", [1.0, 3.0])
def test_quantum_initial_distribution(x32, weight):
    env = make("QuantumControl", ground_state_weight=weight)
    physics = np.asarray(initial_batch(env, 4096, 80).physics, np.float64)
    assert physics.shape == (4096, 32, 2)
    psi = physics[..., 0] + 1j * physics[..., 1]
    np.testing.assert_allclose(np.linalg.norm(psi, axis=-1), 1.0, atol=1e-5)
    coefficients = psi @ np.stack([spec_eigenstate(n) for n in range(1, 33)]).T  # ⟨φ_n, ψ⟩
    assert np.abs(coefficients[:, 2:]).max() < 1e-5  # orthogonal to every eigenstate n >= 3
    c1, c2 = coefficients[:, 0], coefficients[:, 1]
    np.testing.assert_allclose(np.abs(c1)**2 + np.abs(c2)**2, 1.0, atol=2e-5)
    # weights: |c_1|² = w²a_1² / (w²a_1² + a_2²), a ~ N(0, 1), evaluated here by Monte Carlo
    a = np.random.default_rng(0).normal(size=(2, 200_000))
    share = weight**2 * a[0]**2 / (weight**2 * a[0]**2 + a[1]**2)
    assert (np.abs(c1)**2).mean() == pytest.approx(share.mean(), abs=0.02)
    assert (np.abs(c1)**2).var() == pytest.approx(share.var(), abs=0.01)
    # phases: uniform on [0, 2π), independently for both components (the first circular moments
    # vanish; real coefficients with random signs would give |mean e^{2iφ}| = 1)
    for phase in (np.angle(c1), np.angle(c2), np.angle(c2) - np.angle(c1)):
        for k in (1, 2, 3):
            assert abs(np.exp(1j * k * phase).mean()) < 0.05
    assert np.abs(c1.imag).max() > 0.5 and np.abs(c2.imag).max() > 0.5


# ----------------------------------------------------------------------------------------------
# return = -loss, and the loss of the spec computed from the visited states
# ----------------------------------------------------------------------------------------------
def spec_loss_from_trajectory(name, params, states, actions, loss_mode="final"):
    """The spec's loss of one instance from the visited states x_1..x_Nt and the controls."""
    states = np.asarray(states, np.float64)
    actions = np.asarray(actions, np.float64)
    if name == "CartPole":
        per_step = 1.0 - np.cos(states[:, 1:, 0]).mean(axis=1)
        return per_step[-1] if loss_mode == "final" else per_step.mean()
    if name == "GuidanceByRepulsion":
        evaders = states[:, params["num_drivers"]:, 0]
        return (evaders**2).mean() + params["regularization"] * (actions**2).mean()
    psi = states[..., 0] + 1j * states[..., 1]
    return (1.0 - np.abs(psi @ spec_eigenstate(params["target_state"]))**2).sum()


RETURN_CASES = [
    ("CartPole", {"num_poles": 2, "loss_mode": "final"}),
    ("CartPole", {"num_poles": 2, "loss_mode": "continuous"}),
    ("GuidanceByRepulsion", {"num_drivers": 2, "num_evaders": 4, "regularization": 0.1}),
    ("QuantumControl", {"target_state": 3}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, params", RETURN_CASES,
                         ids=[f"{n}-{list(p.values())[-1]}" for n, p in RETURN_CASES])
def test_return_is_minus_the_spec_loss(x32, name, params):
    env = make(name, **params)
    state = env.initial(jax.random.PRNGKey(90))
    actions = random_actions(name, (env.num_steps(), *env.action_shape()), 91)
    rewards, visited = [], []
    for t, action in enumerate(actions):
        assert not bool(env.terminal(state))
        next_state = env.transition(state, action)
        rewards.append(float(env.reward(state, action, next_state)))
        visited.append(np.asarray(next_state.physics))
        state = next_state
    assert bool(env.terminal(state))
    episode_loss = float(env.episode_loss(env.initial(jax.random.PRNGKey(90)), jnp.asarray(actions)))
    assert -sum(rewards) == pytest.approx(episode_loss, rel=1e-5, abs=1e-6)
    expected = spec_loss_from_trajectory(name, params, np.stack(visited), actions,
                                         params.get("loss_mode", "final"))
    assert episode_loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert episode_loss > 0.0
    if params.get("loss_mode") == "final":
        # FINAL loss: only the last step is scored
        assert all(r == 0.0 for r in rewards[:-1])
        assert rewards[-1] != 0.0
    else:
        assert all(r != 0.0 for r in rewards)
    # rollout's per-step losses are minus the rewards
    _, losses = env.rollout(env.initial(jax.random.PRNGKey(90)), jnp.asarray(actions))
    np.testing.assert_allclose(np.asarray(losses), -np.asarray(rewards), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# independent cross-checks of the physics (float64)
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_poles", [1, 3])
def test_cartpole_step_matches_spec_equations(x64, num_poles):
    env = make("CartPole", num_poles=num_poles)
    steps = 25
    forces = random_actions("CartPole", (4, steps, 1), 100).astype(np.float64)
    rollout = jax.jit(env.rollout)
    for instance in range(4):
        state = env.initial(jax.random.PRNGKey(101 + instance))
        reference = np.asarray(state.physics, np.float64)
        one_step = np.asarray(jax.jit(env.transition)(state, forces[instance, 0]).physics)
        np.testing.assert_allclose(one_step, spec_cartpole_step(reference, forces[instance, 0, 0]),
                                   rtol=1e-12, atol=1e-12)
        for force in forces[instance, :, 0]:
            reference = spec_cartpole_step(reference, force)
        final, _ = rollout(state, jnp.asarray(forces[instance]))
        np.testing.assert_allclose(np.asarray(final.physics), reference, rtol=1e-10, atol=1e-10)


def test_cartpole_step_in_float32_matches_spec_equations(x32):
    env = make("CartPole", num_poles=1)
    state = env.initial(jax.random.PRNGKey(110))
    force = 3.7
    got = np.asarray(env.transition(state, jnp.array([force])).physics, np.float64)
    expected = spec_cartpole_step(np.asarray(state.physics, np.float64), force)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_cartpole_upright_equilibrium_and_symmetry(x64):
    """Upright at rest with no force is an equilibrium; mirroring state and force mirrors the step."""
    env = make("CartPole", num_poles=2)
    rest = EnvState(jnp.zeros((3, 2)), jnp.zeros((), jnp.int32))
    np.testing.assert_array_equal(np.asarray(env.transition(rest, jnp.zeros(1)).physics), 0.0)
    state = env.initial(jax.random.PRNGKey(111))
    force = jnp.array([2.5])
    step = jax.jit(env.transition)
    mirrored = step(state._replace(physics=-state.physics), -force).physics
    np.testing.assert_allclose(np.asarray(mirrored), -np.asarray(step(state, force).physics),
                               rtol=1e-12, atol=1e-12)


def test_quantum_step_matches_dense_crank_nicolson(x64):
    env = make("QuantumControl")
    rng = np.random.default_rng(120)
    step = jax.jit(env.transition)
    rollout = jax.jit(env.rollout)
    controls = rng.normal(size=(20, 1)) * 5.0
    # a generic wave function (all eigenstates present), normalised
    psi = rng.normal(size=32) + 1j * rng.normal(size=32)
    psi /= np.linalg.norm(psi)
    state = EnvState(jnp.asarray(np.stack([psi.real, psi.imag], axis=-1)), jnp.zeros((), jnp.int32))
    for u in (0.0, -7.5, 3.0):
        got = np.asarray(step(state, jnp.array([u])).physics)
        expected = spec_quantum_step(psi, u)
        np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], expected, rtol=1e-11, atol=1e-12)
        assert np.linalg.norm(expected) == pytest.approx(1.0, abs=1e-12)  # CN is unitary
    reference = psi
    for u in controls[:, 0]:
        reference = spec_quantum_step(reference, u)
    final, losses = rollout(state, jnp.asarray(controls))
    final = np.asarray(final.physics)
    np.testing.assert_allclose(final[:, 0] + 1j * final[:, 1], reference, rtol=1e-10, atol=1e-11)
    assert np.linalg.norm(final) == pytest.approx(1.0, abs=1e-12)


def test_quantum_eigenstates_are_stationary_under_zero_control(x64):
    """φ_n is an eigenvector of the discrete H: one zero-control step only multiplies it by the phase
    (1 - i dt E_n / 2) / (1 + i dt E_n / 2), E_n = (2 - 2 cos(π n / 33)) / dx²."""
    env = make("QuantumControl")
    step = jax.jit(env.transition)
    dt, dx = 0.0625, 2.0 / 33.0
    for n in (1, 2, 5, 17):
        phi = spec_eigenstate(n)
        state = EnvState(jnp.asarray(np.stack([phi, np.zeros(32)], axis=-1)), jnp.zeros((), jnp.int32))
        got = np.asarray(step(state, jnp.zeros(1)).physics)
        energy = (2.0 - 2.0 * math.cos(math.pi * n / 33.0)) / dx**2
        factor = (1 - 0.5j * dt * energy) / (1 + 0.5j * dt * energy)
        np.testing.assert_allclose(got[:, 0] + 1j * got[:, 1], factor * phi, rtol=1e-10, atol=1e-12)


def guidance_test_states(num_drivers: int, num_evaders: int, rng: np.random.Generator, count: int):
    """Random states: positions spread over a few units (some evaders close together, so both
    signs of the flocking term occur), random velocities."""
    states = []
    for _ in range(count):
        state = np.zeros((num_drivers + num_evaders, 2, 2))
        state[:num_drivers, 0] = rng.uniform(-4, 4, size=(num_drivers, 2))
        centre = rng.uniform(-2, 2, size=2)
        state[num_drivers:, 0] = centre + rng.normal(size=(num_evaders, 2)) * rng.choice([0.1, 0.5])
        state[:, 1] = rng.normal(size=(num_drivers + num_evaders, 2))
        states.append(state)
    return states


@pytest.mark.slow
@pytest.mark.parametrize("num_drivers, num_evaders, center", [(2, 4, "sum"), (3, 5, "sum"), (1, 1, "sum"),
                                                              (2, 4, "mean")])
def test_guidance_step_matches_spec_equations(x64, num_drivers, num_evaders, center):
    env = make("GuidanceByRepulsion", num_drivers=num_drivers, num_evaders=num_evaders, center_mode=center)
    rng = np.random.default_rng(130 + num_drivers + num_evaders)
    step = jax.jit(env.transition)
    derivative = jax.jit(lambda s, c: guidance.derivative(s, c, env.default_params))
    states = guidance_test_states(num_drivers, num_evaders, rng, 6)
    states.append(np.asarray(env.initial(jax.random.PRNGKey(131)).physics))  # a starting state
    for state in states:
        control = rng.normal(size=(num_drivers, 2))
        expected = spec_guidance_derivative(state, control, num_drivers, center)
        np.testing.assert_allclose(np.asarray(derivative(jnp.asarray(state), jnp.asarray(control))),
                                   expected, rtol=1e-12, atol=1e-12)
        got = step(EnvState(jnp.asarray(state), jnp.zeros((), jnp.int32)), jnp.asarray(control))
        np.testing.assert_allclose(np.asarray(got.physics),
                                   spec_guidance_step(state, control, num_drivers, center=center),
                                   rtol=1e-12, atol=1e-12)


def test_guidance_rollout_matches_spec_equations(x64):
    env = make("GuidanceByRepulsion")
    state = env.initial(jax.random.PRNGKey(140))
    controls = np.random.default_rng(141).normal(size=(60, 2, 2))
    reference = np.asarray(state.physics)
    visited = []
    for control in controls:
        reference = spec_guidance_step(reference, control, 2)
        visited.append(reference)
    final, losses = jax.jit(env.rollout)(state, jnp.asarray(controls))
    np.testing.assert_allclose(np.asarray(final.physics), reference, rtol=1e-9, atol=1e-9)
    expected_loss = spec_loss_from_trajectory("GuidanceByRepulsion",
                                              {"num_drivers": 2, "regularization": 0.01},
                                              np.stack(visited), controls)
    assert float(losses.sum()) == pytest.approx(expected_loss, rel=1e-10)


def test_guidance_flocking_quirk_and_centre_quirk(x64):
    """Spec quirks 2 and 3, checked directly: two evaders attract when closer than ‖r‖ = 0.4 and
    repel beyond; drivers steer about the SUM of the evader positions."""
    env = make("GuidanceByRepulsion", num_drivers=1, num_evaders=2)
    derivative = jax.jit(lambda s, c: guidance.derivative(s, c, env.default_params))
    far = 1e12  # the driver is far away: its repulsion (∝ 1/distance) is negligible
    for separation, sign in ((0.2, +1.0), (0.39, +1.0), (0.41, -1.0), (1.0, -1.0)):
        state = np.zeros((3, 2, 2))
        state[0, 0] = (far, 0.0)
        state[1, 0] = (0.0, 5.0)
        state[2, 0] = (separation, 5.0)
        acc = np.asarray(derivative(jnp.asarray(state), jnp.zeros((1, 2))))[:, 1]
        # evader 1 accelerates toward evader 2 (+x) when attracted; the pair's accelerations are opposite
        assert np.sign(acc[1, 0]) == sign, separation
        assert acc[1, 0] == pytest.approx(-acc[2, 0], rel=1e-6)
        d = 0.1 + separation
        assert acc[1, 0] == pytest.approx(0.2 * (0.5 / d - 1.0) / d * separation, rel=1e-6, abs=1e-12)
    # centre: evaders at (1, 0) and (2, 1) give C = (3, 1); a unit radial gain pulls the driver at
    # (0, 0) with acceleration 1·(p_d - C) = (-3, -1) (tangential gain 0, driver at rest)
    state = np.zeros((3, 2, 2))
    state[1, 0] = (1.0, 0.0)
    state[2, 0] = (2.0, 1.0)
    acc = np.asarray(derivative(jnp.asarray(state), jnp.array([[1.0, 0.0]])))[0, 1]
    np.testing.assert_allclose(acc, [-3.0, -1.0], rtol=1e-12)
    tangential = np.asarray(derivative(jnp.asarray(state), jnp.array([[0.0, 1.0]])))[0, 1]
    np.testing.assert_allclose(tangential, [1.0, -3.0], rtol=1e-12)  # r^⊥ = (-r_y, r_x)
