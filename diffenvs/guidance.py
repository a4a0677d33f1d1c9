"""Guidance by repulsion (equations in docs/physics.md): controlled drivers herd evaders to the origin.

Observation:
    The physical state, shape (num_drivers + num_evaders, 2, 2) = (object, [position, velocity],
    [x, y]), drivers first; positions in length units, velocities in length units per time unit.
Action:
    Shape (num_drivers, 2): per driver a radial gain and a tangential gain, unbounded.
Reward:
    Minus the step's loss contribution, -(mean_{evaders, x/y} p_e(t+1)² + rc·mean_{drivers, 2} c_t²)
    / num_steps, so that the return is minus the instance's loss (evader term averaged over
    t = 1..Nt plus the control regulariser averaged over t = 0..Nt-1).
Starting state:
    Each driver at radius U(3, 4) and angle U(0, 2π); one common evader centre at radius U(1, 2),
    angle U(0, 2π); each evader at the centre plus a U(-0.5, 0.5)² offset; all velocities 0.
Episode end:
    Truncation after ``num_steps`` steps (default 60, dt = horizon / num_steps = 4/60).

Quirks 2-4 of docs/physics.md (reproduced by default): the "centre" C that drivers steer about is the SUM of
the evader positions (``center_mode="mean"`` offers the mean instead); the flocking term attracts
evaders closer than about 0.4 and repels them beyond (a negative ``flocking_strength`` gives the
usual rule); the target is always the origin.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffenvs.core import (
    Array, EnvState, FunctionalEnv, check_choice, check_positive, check_range, float_dtype, params_dataclass,
    static_field,
)

CENTER_MODES = ("sum", "mean")


@params_dataclass
class GuidanceParams:
    """Parameters of guidance by repulsion. Float fields are differentiable pytree leaves.

    num_drivers, num_evaders: agent counts (>= 1). num_steps: steps per episode Nt.
    regularization: rc, weight of the control regulariser (>= 0). horizon: T (dt = T / Nt).
    center_mode: "sum" (reference quirk) or "mean". softening: ε in dist(r) = ε + ‖r‖.
    evader_repulsion: c_ev. evader_friction: c_fe. flocking_strength: c_fl. flocking_distance: d_fl.
    driver_friction: c_fd. driver_separation: c_sp. driver_radius_min/max: driver start radius range.
    evader_center_radius_min/max: evader centre start radius range. evader_spread: half-width of the
    evaders' square offset around the centre.
    """

    num_drivers: int = static_field(2)
    num_evaders: int = static_field(4)
    num_steps: int = static_field(60)
    center_mode: str = static_field("sum")
    regularization: float = 0.01
    horizon: float = 4.0
    softening: float = 0.1
    evader_repulsion: float = 15.0
    evader_friction: float = 4.0
    flocking_strength: float = 0.2
    flocking_distance: float = 0.5
    driver_friction: float = 1.0
    driver_separation: float = 0.2
    driver_radius_min: float = 3.0
    driver_radius_max: float = 4.0
    evader_center_radius_min: float = 1.0
    evader_center_radius_max: float = 2.0
    evader_spread: float = 0.5

    def __post_init__(self) -> None:
        check_positive("num_drivers", self.num_drivers, integer=True)
        check_positive("num_evaders", self.num_evaders, integer=True)
        check_positive("num_steps", self.num_steps, integer=True)
        check_choice("center_mode", self.center_mode, CENTER_MODES)
        check_positive("regularization", self.regularization, inclusive=True)
        check_positive("horizon", self.horizon)
        check_positive("softening", self.softening)
        check_positive("flocking_distance", self.flocking_distance)
        for name in ("driver_radius_min", "evader_center_radius_min", "evader_spread",
                     "evader_repulsion", "evader_friction", "driver_friction", "driver_separation"):
            check_positive(name, getattr(self, name), inclusive=True)
        check_range("driver_radius_min", self.driver_radius_min, "driver_radius_max", self.driver_radius_max)
        check_range("evader_center_radius_min", self.evader_center_radius_min,
                    "evader_center_radius_max", self.evader_center_radius_max)

    @property
    def dt(self) -> float:
        """Time step."""
        return self.horizon / self.num_steps


def _polar(key: Array, count: int, radius_min: Any, radius_max: Any) -> Array:
    """``count`` points with radius U(min, max) and angle U(0, 2π), shape (count, 2)."""
    dtype = float_dtype()
    radius_key, angle_key = jax.random.split(key)
    radius = jax.random.uniform(radius_key, (count,), dtype, radius_min, radius_max)
    angle = jax.random.uniform(angle_key, (count,), dtype, 0.0, 2.0 * jnp.pi)
    return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def initial_physics(key: Array, params: GuidanceParams) -> Array:
    """A state from the starting distribution, shape (num_drivers + num_evaders, 2, 2)."""
    driver_key, center_key, offset_key = jax.random.split(key, 3)
    drivers = _polar(driver_key, params.num_drivers, params.driver_radius_min, params.driver_radius_max)
    center = _polar(center_key, 1, params.evader_center_radius_min, params.evader_center_radius_max)
    offsets = jax.random.uniform(offset_key, (params.num_evaders, 2), float_dtype(), -1.0, 1.0) \
        * params.evader_spread
    positions = jnp.concatenate([drivers, center + offsets], axis=0)
    return jnp.stack([positions, jnp.zeros_like(positions)], axis=1)


def _pairwise(a: Array, b: Array, softening: Any, exclude_self: bool) -> tuple[Array, Array]:
    """Differences a_i - b_j, shape (n, m, 2), and dist = ε + ‖a_i - b_j‖, shape (n, m).

    The norm is safe to differentiate at zero separation (the self pairs, which are masked out).
    """
    difference = a[:, None, :] - b[None, :, :]
    squared = jnp.sum(difference**2, axis=-1)
    positive = squared > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
    distance = softening + norm
    if exclude_self:
        mask = ~jnp.eye(a.shape[0], dtype=bool)
        return difference * mask[..., None], jnp.where(mask, distance, 1.0)
    return difference, distance


def derivative(physics: Array, control: Array, params: GuidanceParams) -> Array:
    """Time derivative of the state (same shape as ``physics``)."""
    num_drivers = params.num_drivers
    positions, velocities = physics[:, 0], physics[:, 1]
    driver_pos, evader_pos = positions[:num_drivers], positions[num_drivers:]
    driver_vel, evader_vel = velocities[:num_drivers], velocities[num_drivers:]

    center = jnp.sum(evader_pos, axis=0)
    if params.center_mode == "mean":
        center = center / params.num_evaders
    radial = driver_pos - center
    tangential = jnp.stack([-radial[:, 1], radial[:, 0]], axis=-1)
    separation, separation_dist = _pairwise(driver_pos, driver_pos, params.softening, True)
    driver_acc = (control[:, :1] * radial + control[:, 1:] * tangential
                  - params.driver_friction * driver_vel
                  + params.driver_separation * jnp.sum(separation / separation_dist[..., None]**2, axis=1))

    repulsion, repulsion_dist = _pairwise(evader_pos, driver_pos, params.softening, False)
    # (p_e_l - p_d_k) / dist(p_d_k - p_e_l)², summed over drivers k.
    evader_acc = params.evader_repulsion * jnp.sum(repulsion / repulsion_dist[..., None]**2, axis=1)
    evader_acc = evader_acc - params.evader_friction * evader_vel
    # flocking: Σ_{i≠l} f(d_il) (p_e_i - p_e_l) with f(d) = (d_fl / d - 1) / d.
    toward, flock_dist = _pairwise(evader_pos, evader_pos, params.softening, True)
    toward = -toward  # now p_e_i - p_e_l, indexed [l, i]
    strength = (params.flocking_distance / flock_dist - 1.0) / flock_dist
    evader_acc = evader_acc + params.flocking_strength * jnp.sum(strength[..., None] * toward, axis=1)

    accelerations = jnp.concatenate([driver_acc, evader_acc], axis=0)
    return jnp.stack([velocities, accelerations], axis=1)


def step_physics(physics: Array, action: Array, params: GuidanceParams) -> Array:
    """One explicit Euler step of dt on positions and velocities together."""
    return physics + params.dt * derivative(physics, action, params)


def evader_loss(physics: Array, params: GuidanceParams) -> Array:
    """Mean squared evader coordinate (distance to the origin target), scalar."""
    return jnp.mean(physics[params.num_drivers:, 0] ** 2)


def control_loss(action: Array, params: GuidanceParams) -> Array:
    """rc · mean squared control, scalar."""
    return params.regularization * jnp.mean(action**2)


def step_loss(action: Array, next_physics: Array, next_time: Array, params: GuidanceParams) -> Array:
    """This step's loss contribution: (evader term after the step + control term) / Nt."""
    loss = (evader_loss(next_physics, params) + control_loss(action, params)) / params.num_steps
    return jnp.where(next_time <= params.num_steps, loss, jnp.zeros_like(loss))


class GuidanceByRepulsion(FunctionalEnv[GuidanceParams]):
    """Guidance by repulsion as a functional environment (see the module docstring)."""

    name = "GuidanceByRepulsion"
    params_type = GuidanceParams

    def initial_physics(self, key: Array, params: GuidanceParams) -> Array:
        return initial_physics(key, params)

    def step_physics(self, physics: Array, action: Array, params: GuidanceParams) -> Array:
        return step_physics(physics, action, params)

    def step_loss(self, action: Array, next_physics: Array, next_time: Array,
                  params: GuidanceParams) -> Array:
        return step_loss(action, next_physics, next_time, params)

    def loss_terms(self, action: Array, next_physics: Array, next_time: Array,
                   params: GuidanceParams) -> dict[str, Array]:
        return {"loss": step_loss(action, next_physics, next_time, params),
                "evader_loss": evader_loss(next_physics, params),
                "control_loss": control_loss(action, params)}

    def action_shape(self, params: GuidanceParams | None = None) -> tuple[int, ...]:
        return (self._params(params).num_drivers, 2)

    def physics_shape(self, params: GuidanceParams | None = None) -> tuple[int, ...]:
        params = self._params(params)
        return (params.num_drivers + params.num_evaders, 2, 2)

    def render_image(self, state: EnvState, render_state: Any = None,
                     params: GuidanceParams | None = None) -> tuple[Any, np.ndarray]:
        from diffenvs.rendering import render_guidance
        params = self._params(params)
        return render_state, render_guidance(np.asarray(state.physics, dtype=np.float64),
                                             params.num_drivers)
