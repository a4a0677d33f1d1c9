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
    With ``output_bound`` b the output is ``b * tanh(linear / b)``: within (-b, b), equal to the linear
    output near 0, and with a nonzero gradient everywhere (an environment that clips its action has a zero
    gradient outside its bounds).
    """

    output_shape: tuple[int, ...]
    hidden: Sequence[int] = (100, 100)
    zero_last_kernel: bool = True
    output_bound: float | None = None

    @nn.compact
    def __call__(self, observations: Array) -> Array:
        hidden = observations.reshape(observations.shape[0], -1)
        for width in self.hidden:
            hidden = jnp.tanh(nn.Dense(width, kernel_init=nn.initializers.glorot_uniform())(hidden))
        last_init = nn.initializers.zeros if self.zero_last_kernel else nn.initializers.glorot_uniform()
        output = nn.Dense(math.prod(self.output_shape), kernel_init=last_init)(hidden)
        if self.output_bound is not None:
            output = self.output_bound * jnp.tanh(output / self.output_bound)
        return output.reshape(observations.shape[0], *self.output_shape)


class StridedConv(nn.Module):
    """A "VALID" convolution along the first spatial axis with stride ``stride``, written as the kernel
    taps' strided input slices, concatenated, times the flattened kernel: one matrix product ("im2col";
    same params and results as ``nn.Conv``).

    On CPU its gradient is several times faster than XLA's convolution gradient at the study's tiny
    sizes, and a quantum-control training epoch 13-22 % faster than with one product per tap
    (docs/performance.md). Inputs (batch, length, *rest, channels); ``kernel_size`` is (taps, *rest)
    and covers the ``rest`` axes entirely, which are thereby reduced to size 1.
    """

    features: int
    kernel_size: tuple[int, ...]
    stride: int = 2
    kernel_init: Callable = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, inputs: Array) -> Array:
        taps, rest = self.kernel_size[0], self.kernel_size[1:]
        if tuple(inputs.shape[2:-1]) != tuple(rest):
            raise ValueError(f"inputs: axes after the first spatial one must equal kernel_size[1:] = {rest}, "
                             f"got shape {inputs.shape}")
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, inputs.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        length = (inputs.shape[1] - taps) // self.stride + 1
        flat = inputs.reshape(inputs.shape[0], inputs.shape[1], -1)          # (B, L, rest·channels)
        slices = [flat[:, tap:tap + self.stride * (length - 1) + 1:self.stride] for tap in range(taps)]
        output = self.combine(slices, kernel.reshape(taps, -1, self.features))
        return (output + bias).reshape(inputs.shape[0], length, *(1 for _ in rest), self.features)

    def combine(self, slices: list[Array], weights: Array) -> Array:
        """The convolution from each tap's strided input slice (B, length, rest·channels) and the
        kernel as (taps, rest·channels, F): the slices side by side times the kernel as
        (taps·rest·channels, F), one matrix product. Shape (B, length, F)."""
        return jnp.concatenate(slices, axis=-1) @ weights.reshape(-1, weights.shape[-1])


class QuantumCNN(nn.Module):
    """The study's quantum controller: (Nx, 2) -> conv2d 60×(3, 2)/2 tanh -> conv1d 60×3/2 tanh
    -> flatten -> Dense linear -> ``output_shape``. Glorot kernels, zero biases, last layer not zeroed.

    The convolutions are :class:`StridedConv` (params named and shaped as flax's ``nn.Conv``), or the
    subclass given as ``convolution`` (e.g. another way of combining the taps).
    """

    output_shape: tuple[int, ...] = (1,)
    features: int = 60
    zero_last_kernel: bool = False
    convolution: type[StridedConv] = StridedConv

    @nn.compact
    def __call__(self, observations: Array) -> Array:
        batch = observations.shape[0]
        glorot = nn.initializers.glorot_uniform()
        image = observations[..., None]                                    # (B, Nx, 2, 1)
        hidden = jnp.tanh(self.convolution(self.features, (3, 2), kernel_init=glorot, name="Conv_0")(image))
        hidden = hidden.reshape(batch, hidden.shape[1], self.features)      # (B, 15, 60)
        hidden = jnp.tanh(self.convolution(self.features, (3,), kernel_init=glorot, name="Conv_1")(hidden))
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
