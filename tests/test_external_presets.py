"""The presets the library ships for external environments, and the bounded MLP they use."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trainers import task_preset
from trainers.config import default_controller
from trainers.networks import MLP, from_flax
from trainers.presets import EXTERNAL_PRESETS, TASK_PRESETS, bounded_mlp


@pytest.mark.slow                       # builds the brax environment (about a minute)
def test_every_shipped_preset_is_registered_and_builds_its_environment_and_controller():
    for task, preset in EXTERNAL_PRESETS.items():
        assert TASK_PRESETS[task] is preset
        config = task_preset(task, seed=3)
        assert config.epochs == preset.epochs and config.num_train == preset.num_train
        env = config.make_env()
        assert env.num_steps(env.default_params) == preset.horizon
        for name, value in preset.env_params.items():
            assert config.env_params[name] == value
        controller = default_controller(task, env)
        params = controller.init(jax.random.PRNGKey(0))
        observations = jnp.ones((2, *env.observation_shape(env.default_params)))
        assert controller.apply(params, observations).shape == (2, *env.action_shape(env.default_params))


def test_bounded_mlp_is_the_plain_output_squashed_with_a_nonzero_gradient():
    bounded = from_flax(MLP(output_shape=(1,), zero_last_kernel=False, output_bound=2.0), (3,))
    plain = from_flax(MLP(output_shape=(1,), zero_last_kernel=False), (3,))
    params = jax.tree.map(lambda leaf: 5.0 * leaf, bounded.init(jax.random.PRNGKey(1)))
    observations = jax.random.normal(jax.random.PRNGKey(2), (64, 3))
    linear, squashed = plain.apply(params, observations), bounded.apply(params, observations)
    assert float(jnp.abs(linear).max()) > 4.0                      # some outputs far beyond the bound
    np.testing.assert_allclose(squashed, 2.0 * jnp.tanh(linear / 2.0), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(squashed).max()) < 2.0
    # an action beyond the bound still moves with the parameters (a clip's gradient would be 0)
    beyond = observations[jnp.argmax(jnp.abs(linear[:, 0]))][None]
    grads = jax.grad(lambda p: bounded.apply(p, beyond).sum())(params)
    assert any(float(jnp.abs(leaf).max()) > 0 for leaf in jax.tree.leaves(grads))


def test_pendulum_preset_squashes_into_the_torque_range():
    env = task_preset("gymnax:Pendulum-v1").make_env()
    controller = bounded_mlp(2.0)(env)
    params = controller.init(jax.random.PRNGKey(2))
    params = jax.tree.map(lambda leaf: leaf + 10.0, params)       # push the output far out
    actions = controller.apply(params, jnp.array([[1.0, 0.0, 8.0], [-1.0, 0.0, -8.0]]))
    assert np.all(np.abs(actions) <= 2.0) and np.all(np.abs(actions) > 1.9)


def test_bad_bound_is_refused():
    with pytest.raises(ValueError, match="bound"):
        bounded_mlp(0.0)
