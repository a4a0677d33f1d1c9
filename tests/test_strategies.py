"""Gradient strategies against independent computations of what each one must be."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffenvs
from diffenvs.core import EnvState
from trainers import strategies
from trainers.networks import MLP, QuantumCNN, from_flax, study_controller
from trainers.rollout import Problem, rollout_loss

KEY = jax.random.PRNGKey(0)
CASES = [("CartPole", {"num_poles": 2, "num_steps": 20}), ("GuidanceByRepulsion", {"num_steps": 10}),
         ("QuantumControl", {"num_steps": 10})]


def _problem(name, env_params, zero_last_kernel=False):
    env = diffenvs.make(name, **env_params)
    if name == "QuantumControl":
        controller = from_flax(QuantumCNN(output_shape=env.action_shape()), env.physics_shape())
    else:
        # a non-zero last layer, so that the network input matters from the first update on
        controller = from_flax(MLP(output_shape=env.action_shape(), zero_last_kernel=zero_last_kernel),
                               env.physics_shape())
    problem = Problem(env, env.default_params, controller)
    params = controller.init(jax.random.PRNGKey(1))
    states = jax.vmap(env.initial)(jax.random.split(jax.random.PRNGKey(2), 4))
    return problem, params, states


def _loop_loss(problem, params, states, network_stop=False, physics_stop=False):
    """The batch loss written directly with env.transition / env.reward in a Python loop."""
    env, apply = problem.env, problem.controller.apply
    total = 0.0
    state = states
    for _ in range(problem.num_steps):
        network_input = jax.lax.stop_gradient(state.physics) if network_stop else state.physics
        physics_input = jax.lax.stop_gradient(state.physics) if physics_stop else state.physics
        controls = apply(params, network_input)
        simulated = EnvState(physics_input, state.time)
        next_state = jax.vmap(env.transition)(simulated, controls)
        total = total - jnp.mean(jax.vmap(env.reward)(simulated, controls, next_state))
        state = next_state
    return total


def _flat(tree):
    return np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _close(a, b, rtol=2e-4):
    a, b = _flat(a), _flat(b)
    scale = np.max(np.abs(b)) + 1e-30
    np.testing.assert_allclose(a / scale, b / scale, atol=rtol)


@pytest.mark.slow
@pytest.mark.parametrize("name,env_params", CASES)
def test_bptt_equals_grad_of_the_rollout_loss(name, env_params):
    problem, params, states = _problem(name, env_params)
    result = jax.jit(lambda p: strategies.bptt(problem, p, states, KEY))(params)
    loss, gradient = jax.jit(jax.value_and_grad(lambda p: _loop_loss(problem, p, states)))(params)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-5)
    _close(result.update, gradient)


@pytest.mark.slow
@pytest.mark.parametrize("name,env_params", CASES)
def test_rollout_loss_and_its_gradient_do_not_depend_on_the_unroll_factor(name, env_params):
    problem, params, states = _problem(name, env_params)
    loss, gradient = jax.jit(jax.value_and_grad(lambda p: rollout_loss(problem, p, states)))(params)
    unrolled_loss, unrolled = jax.jit(jax.value_and_grad(lambda p: rollout_loss(problem, p, states, unroll=4)))(params)
    np.testing.assert_allclose(unrolled_loss, loss, rtol=1e-5)
    np.testing.assert_allclose(unrolled_loss, _loop_loss(problem, params, states), rtol=1e-5)
    _close(unrolled, gradient)


@pytest.mark.slow
@pytest.mark.parametrize("name,env_params", CASES)
def test_gated_strategies_match_their_stop_gradient_placement(name, env_params):
    problem, params, states = _problem(name, env_params)
    for strategy, network_stop, physics_stop in [(strategies.modified, True, False),
                                                 (strategies.network_only, False, True),
                                                 (strategies.one_step, True, True)]:
        update = jax.jit(lambda p: strategy(problem, p, states, KEY).update)(params)
        expected = jax.jit(jax.grad(lambda p: _loop_loss(problem, p, states, network_stop, physics_stop)))(params)
        _close(update, expected)


@pytest.mark.slow
@pytest.mark.parametrize("name,env_params", CASES)
def test_combined_is_the_sign_rule_on_separately_computed_fields(name, env_params):
    problem, params, states = _problem(name, env_params)
    result = jax.jit(lambda p: strategies.combined(problem, p, states, KEY))(params)
    true_gradient = _flat(jax.jit(lambda p: strategies.bptt(problem, p, states, KEY).update)(params))
    modified = _flat(jax.jit(lambda p: strategies.modified(problem, p, states, KEY).update)(params))
    expected = np.where(np.sign(modified) == np.sign(true_gradient), modified, 0.0)
    combined = _flat(result.update)
    # components whose sign is decided by rounding may differ; they must be negligible
    scale = np.max(np.abs(modified))
    ambiguous = (np.abs(true_gradient) < 1e-4 * np.max(np.abs(true_gradient))) | (np.abs(modified) < 1e-4 * scale)
    np.testing.assert_allclose(combined[~ambiguous] / scale, expected[~ambiguous] / scale, atol=2e-4)
    assert np.count_nonzero(combined) > 0
    if name == "CartPole":  # there the two fields disagree in sign on some components
        assert np.count_nonzero(combined) < combined.size
    cosine = modified @ true_gradient / (np.linalg.norm(modified) * np.linalg.norm(true_gradient))
    np.testing.assert_allclose(result.metrics["cosine"], cosine, atol=1e-4)
    np.testing.assert_allclose(result.loss, _loop_loss(problem, params, states), rtol=1e-5)


def test_sign_agreement_treats_zero_as_its_own_sign():
    modified = {"w": jnp.array([1.0, -2.0, 3.0, 0.0, 5.0])}
    true_gradient = {"w": jnp.array([2.0, -1.0, -3.0, 1.0, 0.0])}
    np.testing.assert_array_equal(strategies.sign_agreement(modified, true_gradient)["w"],
                                  [1.0, -2.0, 0.0, 0.0, 0.0])


@pytest.mark.slow
def test_one_step_with_a_final_loss_learns_only_through_the_last_control():
    problem, params, states = _problem("CartPole", {"num_poles": 1, "num_steps": 25})
    env = problem.env
    update = strategies.one_step(problem, params, states, KEY).update
    # the trajectory up to the last step, held constant
    state = states
    for _ in range(problem.num_steps - 1):
        state = jax.vmap(env.transition)(state, problem.controller.apply(params, state.physics))

    def last_step_loss(p):
        controls = problem.controller.apply(p, state.physics)
        next_state = jax.vmap(env.transition)(state, controls)
        return -jnp.mean(jax.vmap(env.reward)(state, controls, next_state))

    _close(update, jax.grad(last_step_loss)(params))


@pytest.mark.slow
def test_modified_differs_from_bptt_where_the_network_input_matters():
    problem, params, states = _problem("CartPole", {"num_poles": 2, "num_steps": 30})
    true_gradient = _flat(strategies.bptt(problem, params, states, KEY).update)
    modified = _flat(strategies.modified(problem, params, states, KEY).update)
    assert np.linalg.norm(modified - true_gradient) > 1e-2 * np.linalg.norm(true_gradient)


@pytest.mark.slow
def test_modified_equals_bptt_when_the_network_ignores_its_input():
    env = diffenvs.make("CartPole", num_steps=20)
    controller = study_controller(env.name, env.physics_shape(), env.action_shape())
    constant = controller._replace(
        apply=lambda p, obs: controller.apply(p["network"], jnp.zeros_like(obs)) + p["bias"])
    problem = Problem(env, env.default_params, constant)
    params = {"network": controller.init(KEY), "bias": jnp.full((1,), 0.3)}
    states = jax.vmap(env.initial)(jax.random.split(KEY, 4))
    _close(strategies.modified(problem, params, states, KEY).update,
           strategies.bptt(problem, params, states, KEY).update, rtol=1e-6)


@pytest.mark.slow
def test_truncated_beyond_the_horizon_equals_bptt_and_shorter_differs():
    problem, params, states = _problem("CartPole", {"num_poles": 2, "num_steps": 30})
    true_gradient = strategies.bptt(problem, params, states, KEY).update
    _close(strategies.truncated(30)(problem, params, states, KEY).update, true_gradient, rtol=1e-6)
    _close(strategies.truncated(100)(problem, params, states, KEY).update, true_gradient, rtol=1e-6)
    short = _flat(strategies.truncated(5)(problem, params, states, KEY).update)
    assert np.linalg.norm(short - _flat(true_gradient)) > 1e-3 * np.linalg.norm(_flat(true_gradient))


@pytest.mark.slow
def test_es_estimate_points_along_the_true_gradient():
    env = diffenvs.make("GuidanceByRepulsion", num_steps=10)
    controller = from_flax(MLP(output_shape=env.action_shape(), hidden=(8,), zero_last_kernel=False),
                           env.physics_shape())  # few weights, so that 256 pairs estimate well
    problem = Problem(env, env.default_params, controller)
    params = controller.init(KEY)
    states = jax.vmap(env.initial)(jax.random.split(KEY, 4))
    true_gradient = _flat(strategies.bptt(problem, params, states, KEY).update)
    estimate = _flat(jax.jit(lambda p: strategies.es(512, 1e-3)(problem, p, states, KEY).update)(params))
    cosine = estimate @ true_gradient / (np.linalg.norm(estimate) * np.linalg.norm(true_gradient))
    assert cosine > 0.5  # about sqrt(pairs / (pairs + weights)) = 0.7 for a correct estimate, 0 for noise
    other_key = _flat(strategies.es(512, 1e-3)(problem, params, states, jax.random.PRNGKey(9)).update)
    assert not np.allclose(other_key, estimate)      # the key drives the perturbations


@pytest.mark.parametrize("bad", ["nope", "F", ""])
def test_unknown_strategy_names_are_rejected(bad):
    with pytest.raises(ValueError, match="strategy must be one of"):
        strategies.get_strategy(bad)


def test_strategy_factories_validate_their_arguments():
    with pytest.raises(ValueError, match="every"):
        strategies.truncated(0)
    with pytest.raises(ValueError, match="population"):
        strategies.es(3)
    for bad_noise in (-1.0, 0.0, float("inf"), float("nan"), "0.02", True):
        with pytest.raises(ValueError, match="es: noise must be a finite number > 0"):
            strategies.es(4, bad_noise)
    with pytest.raises(ValueError, match="'every'"):
        strategies.get_strategy("truncated")


def test_a_new_strategy_is_a_few_lines():
    """A user-defined strategy: BPTT with the update's sign only (signSGD)."""
    def sign_bptt(problem, params, states, key):
        loss, update, metrics = strategies.bptt(problem, params, states, key)
        return strategies.StrategyResult(loss, jax.tree.map(jnp.sign, update), metrics)

    strategy = strategies.Strategy("sign_bptt", sign_bptt)
    problem, params, states = _problem("CartPole", {"num_steps": 10})
    update = _flat(jax.jit(lambda p, s: strategy(problem, p, s, KEY).update)(params, states))   # jit: faster
    assert set(np.unique(update)) <= {-1.0, 0.0, 1.0}
