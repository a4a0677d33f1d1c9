"""External differentiable environments (gymnax, brax) behind the functional-environment protocol:
gradients of an open-loop loss against central finite differences (float64), jit/vmap parity, the
library's own step's reward, termination, and one-line errors.

The whole module runs in float64 (x64) with most XLA optimisations off (brax's compilation dominates).
Finite differences: central, step 1e-6 on actions of order 0.1..1; float64 rounding and the O(h^2)
truncation error stay below 1e-8 relative, so the gradients must agree to a relative tolerance of 1e-6.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from diffenvs.external import make_brax_env, make_gymnax_env  # noqa: E402
from diffenvs.external.gymnax import TRANSITION_GRADIENT_ENV_IDS, GymnaxState  # noqa: E402

pytestmark = pytest.mark.usefixtures("x64_module", "fast_compilation")

RELATIVE_TOLERANCE = 1e-6
STEP = 1e-6



def open_loop_loss(env, start, actions):
    """Minus the sum of the rewards of the open-loop action sequence (the trainers' per-step loss)."""
    def body(state, action):
        next_state = env.transition(state, action)
        return next_state, -env.reward(state, action, next_state)
    return jax.lax.scan(body, start, actions)[1].sum()


def central_differences(loss, actions, directions):
    """(loss(a + h d) - loss(a - h d)) / 2h for each direction d (one vmapped call)."""
    points = jnp.concatenate([actions + STEP * directions, actions - STEP * directions])
    values = jax.jit(jax.vmap(loss))(points)
    count = directions.shape[0]
    return (values[:count] - values[count:]) / (2 * STEP)


# (env id, overrides, action amplitude): amplitudes inside the clipping bounds (no kinks); the fast tier
# checks one classic-control and one misc environment
@pytest.mark.parametrize("env_id, overrides, amplitude", [
    pytest.param("Pendulum-v1", {}, 1.0, id="Pendulum-v1"),
    pytest.param("MountainCarContinuous-v0", {}, 0.5, id="MountainCarContinuous-v0", marks=pytest.mark.slow),
    pytest.param("Reacher-misc", {}, 1.0, id="Reacher-misc"),
    pytest.param("Swimmer-misc", {}, 1.0, id="Swimmer-misc", marks=pytest.mark.slow),
    pytest.param("PointRobot-misc", {"dense_reward": True}, 0.05, id="PointRobot-misc", marks=pytest.mark.slow)])
def test_gymnax_gradient_matches_finite_differences(env_id, overrides, amplitude):
    env = make_gymnax_env(env_id, num_steps=5, **overrides)
    start = env.initial(jax.random.PRNGKey(0))
    actions = amplitude * jax.random.uniform(jax.random.PRNGKey(1), (5, *env.action_shape()), minval=-0.9,
                                             maxval=0.9)
    assert actions.dtype == jnp.float64
    loss = lambda a: open_loop_loss(env, start, a)
    gradient = jax.jit(jax.grad(loss))(actions)
    size = actions.size
    directions = jnp.eye(size).reshape(size, *actions.shape)          # every coordinate
    finite = central_differences(loss, actions, directions)
    assert float(jnp.abs(gradient).max()) > 1e-4                         # a gradient that says something
    np.testing.assert_allclose(np.asarray(gradient).reshape(-1), np.asarray(finite),
                               rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * float(jnp.abs(gradient).max()))


def test_without_transition_gradients_the_gradient_would_vanish():
    """The wrapper switches gymnax's transition gradients on: gymnax's default stops them."""
    import gymnax
    plain, params = gymnax.make("Pendulum-v1")
    env = make_gymnax_env("Pendulum-v1", num_steps=3)
    start = env.initial(jax.random.PRNGKey(0))

    def plain_loss(actions):
        state, total = start.env_state, 0.0
        for action in actions:
            _, state, reward, _, _ = plain.step_env(jax.random.PRNGKey(0), state, action, params)
            total = total - reward
        return total

    actions = 0.5 * jnp.ones((3, 1))
    direct = 0.001 * 2 * 0.5                            # d(0.001 u^2)/du: the action's own cost only
    assert float(jax.jit(jax.grad(plain_loss))(actions)[0, 0]) == pytest.approx(direct, rel=1e-12)
    assert abs(float(jax.jit(jax.grad(lambda a: open_loop_loss(env, start, a)))(actions)[0, 0]) - direct) > 1e-2


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "PointRobot-misc"])
def test_gymnax_reward_and_observation_are_the_librarys_own(env_id):
    import gymnax
    own, own_params = gymnax.make(env_id)
    env = make_gymnax_env(env_id, num_steps=4)
    state = env.initial(jax.random.PRNGKey(2))
    own_obs, own_state = own.reset_env(jax.random.split(jax.random.PRNGKey(2))[0], own_params)
    np.testing.assert_array_equal(np.asarray(env.observation(state)), np.asarray(own_obs))
    actions = jax.random.uniform(jax.random.PRNGKey(3), (4, *env.action_shape()), minval=-1, maxval=1)
    for action in actions:
        step_key = jax.random.split(state.key)[1]                        # the documented key schedule
        own_obs, own_state, own_reward, own_terminated, _ = own.step_env(step_key, own_state, action, own_params)
        next_state = env.transition(state, action)
        assert float(env.reward(state, action, next_state)) == float(own_reward)
        np.testing.assert_array_equal(np.asarray(env.observation(next_state)), np.asarray(own_obs))
        assert bool(next_state.terminated) == bool(own_terminated)
        state = next_state
    assert int(state.env_state.time) == 4


def test_gymnax_jit_and_vmap_parity():
    env = make_gymnax_env("Reacher-misc", num_steps=6)
    starts = jax.vmap(env.initial)(jax.random.split(jax.random.PRNGKey(4), 4))
    actions = jax.random.uniform(jax.random.PRNGKey(5), (4, 6, 2), minval=-1, maxval=1)
    batched = jax.jit(jax.vmap(lambda s, a: open_loop_loss(env, s, a)))(starts, actions)
    for index in range(4):
        start = jax.tree.map(lambda leaf: leaf[index], starts)
        single = open_loop_loss(env, start, actions[index])                 # not jitted
        np.testing.assert_allclose(float(batched[index]), float(single), rtol=1e-12)
    assert len(set(np.asarray(batched).round(8).tolist())) == 4


def test_gymnax_termination_and_horizon():
    env = make_gymnax_env("MountainCarContinuous-v0", num_steps=3)
    state = env.initial(jax.random.PRNGKey(6))
    flags = []
    for _ in range(3):
        state = env.transition(state, jnp.zeros(1))
        flags.append(bool(env.terminal(state)))
    assert flags == [False, False, True] and not bool(state.terminated)    # the horizon
    near_goal = state._replace(env_state=state.env_state.replace(position=jnp.array(0.44), velocity=jnp.array(0.06),
                                                                 time=jnp.array(0)))
    reached = env.transition(near_goal, jnp.ones(1))
    assert bool(reached.terminated) and bool(env.terminal(reached))        # gymnax's own termination
    assert float(env.reward(near_goal, jnp.ones(1), reached)) == pytest.approx(100 - 0.1)


def test_gymnax_key_is_carried_and_rng_overrides_it():
    env = make_gymnax_env("PointRobot-misc", goal_radius=10.0)           # the goal is always reached:
    state = env.initial(jax.random.PRNGKey(7))                           # the robot is placed anew
    first, again = env.transition(state, jnp.zeros(2)), env.transition(state, jnp.zeros(2))
    np.testing.assert_array_equal(np.asarray(env.observation(first)), np.asarray(env.observation(again)))
    second = env.transition(first, jnp.zeros(2))
    assert not np.array_equal(np.asarray(first.env_state.pos), np.asarray(second.env_state.pos))
    other = env.transition(state, jnp.zeros(2), rng=jax.random.PRNGKey(8))
    assert not np.array_equal(np.asarray(other.env_state.pos), np.asarray(first.env_state.pos))


def test_gymnax_protocol_shapes_params_and_names():
    env = make_gymnax_env("Pendulum-v1", max_torque=1.0)
    assert env.name == "gymnax:Pendulum-v1" and env.num_steps() == 200
    assert env.action_shape() == (1,) and env.observation_shape() == (3,)
    assert env.default_params.max_torque == 1.0
    assert make_gymnax_env("Reacher-misc", num_steps=7).default_params.max_steps_in_episode == 7
    state = env.initial(jax.random.PRNGKey(0))
    assert isinstance(state, GymnaxState) and env.observation(state).shape == (3,)
    # actions in the environment's units, clipped by gymnax's Pendulum to its max_torque
    np.testing.assert_array_equal(np.asarray(env.observation(env.transition(state, jnp.array([5.0])))),
                                  np.asarray(env.observation(env.transition(state, jnp.array([1.0])))))
    # the terminal and reward signatures of the protocol
    assert env.terminal(state).dtype == jnp.bool_ and env.reward(state, jnp.zeros(1), state).shape == ()


def test_transition_gradient_ids_are_gymnax_own_list():
    from gymnax import registration
    supported = [env_id for env_id, factory in registration._registry.items()
                 if getattr(factory, "_supports_transition_gradients", False)]
    assert sorted(supported) == sorted(TRANSITION_GRADIENT_ENV_IDS)


@pytest.mark.parametrize("call, message", [
    (lambda: make_gymnax_env("Pendulum-v0"), r"env_id must be a registered gymnax environment id .*Pendulum-v1"),
    (lambda: make_gymnax_env("CartPole-v1"), r"'CartPole-v1' cannot give transition gradients.*the ones that can: "
                                             r"\['Pendulum-v1'"),
    (lambda: make_gymnax_env("Pendulum-v1", torque=1.0), r"unknown parameter\(s\) \['torque'\].*allowed: "),
    (lambda: make_gymnax_env("Pendulum-v1", num_steps=0), "num_steps must be an integer > 0, got 0"),
    (lambda: make_gymnax_env("Pendulum-v1", num_steps=2.5), "num_steps must be an integer"),
    (lambda: make_gymnax_env("Pendulum-v1", num_steps=5, max_steps_in_episode=6), "disagree"),
    (lambda: make_gymnax_env("Pendulum-v1").transition(make_gymnax_env("Pendulum-v1").initial(
        jax.random.PRNGKey(0)), jnp.zeros(2)), r"action must have shape \(1,\) \(or a scalar\), got shape \(2,\)"),
    (lambda: make_brax_env("cheetah"), r"name must be a brax environment, one of \[.*'halfcheetah'.*got 'cheetah'"),
    (lambda: make_brax_env("ant", pipeline="warp"), r"pipeline must be one of \['generalized', 'positional', "
                                                    r"'spring', 'mjx'\] or None .*got 'warp'"),
    (lambda: make_brax_env("inverted_pendulum", no_such_argument=1), r"bad parameter\(s\) \['no_such_argument'\]"),
    (lambda: make_brax_env("inverted_pendulum", num_steps=0), "num_steps must be an integer > 0, got 0"),
])
def test_bad_arguments_give_one_line_errors(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_importing_the_package_imports_neither_library():
    probe = "import sys, diffenvs.external; print('gymnax' in sys.modules, 'brax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


# --- brax: one environment, compiled once per program (brax's compilation takes most of the time) ----

BRAX_STEPS = 3


@pytest.fixture(scope="module")
def brax_case():
    """inverted_double_pendulum (reward: alive bonus minus distance and velocity penalties) on the
    generalized pipeline, with the three programs the tests share: the batched starts, the batched
    loss and gradient, and one step of the adapter beside brax's own step."""
    from brax import envs
    env = make_brax_env("inverted_double_pendulum", pipeline="generalized", num_steps=BRAX_STEPS)
    own = envs.get_environment("inverted_double_pendulum", backend="generalized")
    starts = jax.jit(jax.vmap(env.initial))(jax.random.split(jax.random.PRNGKey(0), 2))
    loss = lambda start, actions: open_loop_loss(env, start, actions)

    @jax.jit
    def both_steps(state, action):
        next_state = env.transition(state, action)
        return next_state, env.reward(state, action, next_state), env.terminal(next_state), own.step(state, action)

    return {"env": env, "starts": starts, "both_steps": both_steps,
            "batched_value_and_grad": jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=1)))}


def _index(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


@pytest.mark.slow
def test_brax_gradient_matches_finite_differences_and_jit_vmap_parity(brax_case):
    env, starts = brax_case["env"], brax_case["starts"]
    assert env.action_shape() == (1,) and env.observation_shape() == (8,) and env.name == "brax:inverted_double_pendulum"
    actions = 0.3 * jax.random.uniform(jax.random.PRNGKey(1), (2, BRAX_STEPS, 1), minval=-1, maxval=1)
    # one batched call: the two instances, then instance 0 at a + h e_i and at a - h e_i for every coordinate
    directions = jnp.eye(BRAX_STEPS).reshape(BRAX_STEPS, BRAX_STEPS, 1)
    rows = jnp.concatenate([actions, actions[0] + STEP * directions, actions[0] - STEP * directions])
    row_starts = jax.tree.map(lambda leaf: jnp.concatenate([leaf, jnp.repeat(leaf[:1], 2 * BRAX_STEPS, axis=0)]),
                              starts)
    values, gradients = brax_case["batched_value_and_grad"](row_starts, rows)
    assert values.dtype == jnp.float64 and abs(float(values[0] - values[1])) > 1e-6
    # jit/vmap parity: the vmapped scan equals a Python loop of the jitted single-instance step
    for index in range(2):
        state, total = _index(starts, index), 0.0
        for action in actions[index]:
            state, reward, _, _ = brax_case["both_steps"](state, action)
            total -= float(reward)
        assert float(values[index]) == pytest.approx(total, rel=1e-12)
    # central differences of instance 0 along every coordinate
    gradient = gradients[0]
    finite = (values[2:2 + BRAX_STEPS] - values[2 + BRAX_STEPS:]) / (2 * STEP)
    assert float(jnp.abs(gradient).max()) > 1e-4
    np.testing.assert_allclose(np.asarray(gradient).reshape(-1), np.asarray(finite),
                               rtol=RELATIVE_TOLERANCE, atol=RELATIVE_TOLERANCE * float(jnp.abs(gradient).max()))


@pytest.mark.slow
def test_brax_reward_and_termination_are_the_librarys_own(brax_case):
    env = brax_case["env"]
    state = _index(brax_case["starts"], 0)
    assert not bool(env.terminal(state))
    flags = []
    for _ in range(40):                                     # full force to one side: the poles fall
        state_before = state
        state, reward, terminal, own_state = brax_case["both_steps"](state, jnp.ones(1))
        assert float(reward) == float(own_state.reward)
        np.testing.assert_array_equal(np.asarray(env.observation(state)), np.asarray(own_state.obs))
        assert bool(terminal) == bool(own_state.done > 0.5)
        assert [leaf.dtype for leaf in jax.tree.leaves(state)] == [leaf.dtype for leaf in jax.tree.leaves(state_before)]
        flags.append(bool(terminal))
        if terminal:
            break
    assert flags[-1] and not any(flags[:-1]) and len(flags) > 1
