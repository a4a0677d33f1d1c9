"""Controller networks: the study's MLP and quantum CNN, and a wrapper for any flax module.

A controller maps a batch of observations (batch, *observation_shape) to a batch of controls
(batch, *action_shape). It is a pair of pure functions, ``init(key) -> params`` and
``apply(params, observations) -> controls``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class Controller(NamedTuple):
    """A controller network as pure functions: ``init(key)`` and ``apply(params, observations)``."""

    init: Callable[[Array], Any]
    apply: Callable[[Any, Array], Array]


class MLP(nn.Module):
    """flatten(observation) -> Dense tanh layers -> Dense linear -> reshape to ``output_shape``.

    Glorot-uniform kernels and zero biases (the Keras defaults of the study); with
    ``zero_last_kernel`` the output layer's kernel is zero, so the untrained controller outputs 0.
    """

    output_shape: tuple[int, ...]
    hidden: Sequence[int] = (100, 100)
    zero_last_kernel: bool = True

    @nn.compact
    def __call__(self, observations: Array) -> Array:
        hidden = observations.reshape(observations.shape[0], -1)
        for width in self.hidden:
            hidden = jnp.tanh(nn.Dense(width, kernel_init=nn.initializers.glorot_uniform())(hidden))
        last_init = nn.initializers.zeros if self.zero_last_kernel else nn.initializers.glorot_uniform()
        output = nn.Dense(math.prod(self.output_shape), kernel_init=last_init)(hidden)
        return output.reshape(observations.shape[0], *self.output_shape)


class QuantumCNN(nn.Module):
    """The study's quantum controller: (Nx, 2) -> conv2d 60×(3, 2)/2 tanh -> conv1d 60×3/2 tanh
    -> flatten -> Dense linear -> ``output_shape``. Glorot kernels, zero biases, last layer not zeroed.
    """

    output_shape: tuple[int, ...] = (1,)
    features: int = 60
    zero_last_kernel: bool = False

    @nn.compact
    def __call__(self, observations: Array) -> Array:
        batch = observations.shape[0]
        glorot = nn.initializers.glorot_uniform()
        image = observations[..., None]                                    # (B, Nx, 2, 1)
        hidden = jnp.tanh(nn.Conv(self.features, (3, 2), strides=(2, 2), padding="VALID",
                                  kernel_init=glorot)(image))              # (B, 15, 1, 60)
        hidden = hidden.reshape(batch, hidden.shape[1], self.features)      # (B, 15, 60)
        hidden = jnp.tanh(nn.Conv(self.features, (3,), strides=(2,), padding="VALID",
                                  kernel_init=glorot)(hidden))             # (B, 7, 60)
        last_init = nn.initializers.zeros if self.zero_last_kernel else glorot
        output = nn.Dense(math.prod(self.output_shape), kernel_init=last_init)(hidden.reshape(batch, -1))
        return output.reshape(batch, *self.output_shape)


def from_flax(module: nn.Module, observation_shape: tuple[int, ...]) -> Controller:
    """Wrap a flax module mapping (batch, *observation_shape) to (batch, *action_shape)."""
    dummy = jnp.zeros((1, *observation_shape), jnp.result_type(float))
    return Controller(init=lambda key: module.init(key, dummy), apply=module.apply)


def study_controller(env_name: str, observation_shape: tuple[int, ...],
                     action_shape: tuple[int, ...]) -> Controller:
    """The study's controller for an environment: the CNN for quantum control, else the MLP."""
    if env_name == "QuantumControl":
        return from_flax(QuantumCNN(output_shape=action_shape), observation_shape)
    return from_flax(MLP(output_shape=action_shape), observation_shape)
