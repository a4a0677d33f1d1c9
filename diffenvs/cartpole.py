"""Multi-pole cart-pole swing-up (equations in docs/physics.md).

Several poles hang from one cart, each on its own hinge; one horizontal force acts on the cart and
the poles are coupled only through it. The task is to swing every pole up by the end of the episode.

Observation:
    The physical state, shape (1 + num_poles, 2): row 0 is the cart (position x in m, velocity in
    m/s); row k is pole k (angle θ in rad, angular velocity in rad/s). θ = 0 is upright, θ = π hangs
    down; θ is not wrapped.
Action:
    The horizontal force F on the cart in N, shape (1,), unbounded.
Reward:
    Minus the step's contribution to the loss. ``loss_mode="final"`` (the study's): 0 on every step
    but the last, whose reward is -(1 - mean_k cos θ_k(T)). ``loss_mode="continuous"``: every step t
    gives -(1 - mean_k cos θ_k(t)) / num_steps. The return is minus the instance's loss.
Starting state:
    x, ẋ and every θ̇_k ~ U(-1, 1); every θ_k = π + U(-1, 1)·π/6 (hanging, ±30°).
Episode end:
    Truncation after ``num_steps`` steps (default 100, dt = horizon / num_steps = 0.01 s).

Quirk 5 of docs/physics.md (reproduced): the total mass M = 1.1 (cart plus one pole) whatever the number of
poles, and each pole's angular acceleration ignores the other poles.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffenvs.core import (
    Array, EnvState, FunctionalEnv, check_choice, check_positive, float_dtype, params_dataclass,
    static_field,
)

LOSS_MODES = ("final", "continuous")


@params_dataclass
class CartPoleParams:
    """Parameters of the multi-pole cart-pole. Float fields are differentiable pytree leaves.

    num_poles: number of poles P (>= 1). num_steps: steps per episode Nt. loss_mode: "final" or
    "continuous". horizon: episode duration T in s (dt = T / Nt). gravity: g in m/s². pole_mass: m
    in kg. total_mass: M in kg, used for every P (quirk 5). half_length: l in m.
    initial_cart_range: x and ẋ ~ U(-r, r). initial_angular_velocity_range: θ̇ ~ U(-r, r).
    initial_angle_spread: θ = π + U(-1, 1)·spread, in rad.
    """

    num_poles: int = static_field(1)
    num_steps: int = static_field(100)
    loss_mode: str = static_field("final")
    horizon: float = 1.0
    gravity: float = 9.8
    pole_mass: float = 0.1
    total_mass: float = 1.1
    half_length: float = 0.5
    initial_cart_range: float = 1.0
    initial_angular_velocity_range: float = 1.0
    initial_angle_spread: float = math.pi / 6

    def __post_init__(self) -> None:
        check_positive("num_poles", self.num_poles, integer=True)
        check_positive("num_steps", self.num_steps, integer=True)
        check_choice("loss_mode", self.loss_mode, LOSS_MODES)
        for name in ("horizon", "gravity", "pole_mass", "total_mass", "half_length"):
            check_positive(name, getattr(self, name))
        for name in ("initial_cart_range", "initial_angular_velocity_range", "initial_angle_spread"):
            check_positive(name, getattr(self, name), inclusive=True)

    @property
    def dt(self) -> float:
        """Time step in s."""
        return self.horizon / self.num_steps


def initial_physics(key: Array, params: CartPoleParams) -> Array:
    """A state from the starting distribution, shape (1 + P, 2)."""
    dtype = float_dtype()
    cart_key, velocity_key, angle_key = jax.random.split(key, 3)
    cart = jax.random.uniform(cart_key, (2,), dtype, -1.0, 1.0) * params.initial_cart_range
    angular_velocity = (jax.random.uniform(velocity_key, (params.num_poles,), dtype, -1.0, 1.0)
                        * params.initial_angular_velocity_range)
    angle = jnp.pi + jax.random.uniform(angle_key, (params.num_poles,), dtype, -1.0, 1.0) \
        * params.initial_angle_spread
    poles = jnp.stack([angle, angular_velocity], axis=-1)
    return jnp.concatenate([cart[None, :], poles], axis=0)


def accelerations(physics: Array, force: Array, params: CartPoleParams) -> tuple[Array, Array]:
    """(cart acceleration ẍ in m/s², pole angular accelerations θ̈ of shape (P,) in rad/s²)."""
    theta, theta_dot = physics[1:, 0], physics[1:, 1]
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    mass, pole_mass, length = params.total_mass, params.pole_mass, params.half_length
    mass_length = pole_mass * length
    pole_push = (force + mass_length * theta_dot**2 * sin) / mass
    theta_acc = (params.gravity * sin - cos * pole_push) / (
        length * (4.0 / 3.0 - pole_mass * cos**2 / mass))
    cart_acc = (force + mass_length * jnp.sum(theta_dot**2 * sin - theta_acc * cos)) / mass
    return cart_acc, theta_acc


def step_physics(physics: Array, action: Array, params: CartPoleParams) -> Array:
    """One semi-implicit Euler step of dt: velocities first, then positions with the new velocities."""
    force = action.reshape(())
    cart_acc, theta_acc = accelerations(physics, force, params)
    dt = params.dt
    theta_dot = physics[1:, 1] + dt * theta_acc
    theta = physics[1:, 0] + dt * theta_dot
    x_dot = physics[0, 1] + dt * cart_acc
    x = physics[0, 0] + dt * x_dot
    cart = jnp.stack([x, x_dot])
    return jnp.concatenate([cart[None, :], jnp.stack([theta, theta_dot], axis=-1)], axis=0)


def angle_loss(physics: Array) -> Array:
    """1 - mean_k cos θ_k: 0 when every pole is upright, 2 when every pole hangs."""
    return 1.0 - jnp.mean(jnp.cos(physics[1:, 0]))


def step_loss(action: Array, next_physics: Array, next_time: Array, params: CartPoleParams) -> Array:
    """This step's loss contribution (the state reached after ``next_time`` steps is scored)."""
    loss = angle_loss(next_physics)
    if params.loss_mode == "final":
        return jnp.where(next_time == params.num_steps, loss, jnp.zeros_like(loss))
    return jnp.where(next_time <= params.num_steps, loss / params.num_steps, jnp.zeros_like(loss))


class CartPole(FunctionalEnv[CartPoleParams]):
    """The multi-pole cart-pole swing-up as a functional environment (see the module docstring)."""

    name = "CartPole"
    params_type = CartPoleParams

    def initial_physics(self, key: Array, params: CartPoleParams) -> Array:
        return initial_physics(key, params)

    def step_physics(self, physics: Array, action: Array, params: CartPoleParams) -> Array:
        return step_physics(physics, action, params)

    def step_loss(self, action: Array, next_physics: Array, next_time: Array,
                  params: CartPoleParams) -> Array:
        return step_loss(action, next_physics, next_time, params)

    def loss_terms(self, action: Array, next_physics: Array, next_time: Array,
                   params: CartPoleParams) -> dict[str, Array]:
        return {"loss": step_loss(action, next_physics, next_time, params),
                "angle_loss": angle_loss(next_physics)}

    def action_shape(self, params: CartPoleParams | None = None) -> tuple[int, ...]:
        return (1,)

    def physics_shape(self, params: CartPoleParams | None = None) -> tuple[int, ...]:
        return (1 + self._params(params).num_poles, 2)

    def render_image(self, state: EnvState, render_state: Any = None,
                     params: CartPoleParams | None = None) -> tuple[Any, np.ndarray]:
        from diffenvs.rendering import render_cartpole
        params = self._params(params)
        return render_state, render_cartpole(np.asarray(state.physics, dtype=np.float64),
                                             half_length=float(params.half_length))
