"""Quantum control of a particle in an infinite well (equations in docs/physics.md).

The 1-D Schrödinger equation i ∂ψ/∂t = (-∂²/∂x² + u(t)·x) ψ on [0, 2] with Dirichlet walls, driven by
a spatially linear potential whose amplitude u(t) is the control; the task is to move the particle
from a mix of the two lowest eigenstates into a target eigenstate and keep it there.

Observation:
    The wave function on the interior grid as real and imaginary parts, shape (num_points, 2).
Action:
    The potential amplitude u, shape (1,), unbounded.
Reward:
    Minus the step's infidelity 1 - |⟨φ_target, ψ(t+1)⟩|², so that the return is minus the
    instance's loss, the infidelity summed over t = 1..Nt (between 0 and Nt = 128; quirk 6 of docs/physics.md).
Starting state:
    ψ_0 = (w·a_1 e^{iφ_1} φ_1 + a_2 e^{iφ_2} φ_2) / √(w²a_1² + a_2²) with a ~ N(0, 1),
    φ ~ U(0, 2π) and the ground-state weight w = 1 (the reference also uses 3, 7 and 15).
Episode end:
    Truncation after ``num_steps`` steps (default 128 of dt = 0.0625).

Discretisation: x_j = j·dx, j = 1..Nx, dx = length / (Nx + 1); Crank-Nicolson
(I + i·dt/2·H) ψ' = (I - i·dt/2·H) ψ with H = tridiag(-1, 2, -1) / dx² + diag(u·x_j), solved in O(Nx)
by a tridiagonal solver. The step is unitary: ‖ψ‖ is preserved to rounding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffenvs.core import (
    Array, EnvState, FunctionalEnv, check_positive, float_dtype, params_dataclass, static_field,
)


@params_dataclass
class QuantumParams:
    """Parameters of the quantum control problem. Float fields are differentiable pytree leaves.

    target_state: target eigenstate n, 1 = ground state (study figures count from 0), 1..num_points.
    num_points: interior grid points Nx. num_steps: steps per episode Nt. dt: time step.
    length: well width (the grid spacing is length / (Nx + 1)). ground_state_weight: w, scales a_1 of
    the initial superposition.
    """

    target_state: int = static_field(3)
    num_points: int = static_field(32)
    num_steps: int = static_field(128)
    dt: float = 0.0625
    length: float = 2.0
    ground_state_weight: float = 1.0

    def __post_init__(self) -> None:
        check_positive("num_points", self.num_points, integer=True, minimum=2, inclusive=True)
        check_positive("num_steps", self.num_steps, integer=True)
        check_positive("target_state", self.target_state, integer=True)
        if self.target_state > self.num_points:
            raise ValueError(f"target_state must be an integer in 1..num_points = 1..{self.num_points}, "
                             f"got {self.target_state!r}")
        check_positive("dt", self.dt)
        check_positive("length", self.length)
        check_positive("ground_state_weight", self.ground_state_weight)

    @property
    def dx(self) -> Any:
        """Grid spacing."""
        return self.length / (self.num_points + 1)


def complex_dtype() -> jnp.dtype:
    """complex64, or complex128 when JAX x64 mode is enabled."""
    return jnp.result_type(float_dtype(), jnp.complex64)


def eigenstate(n: int, num_points: int) -> Array:
    """Normalised eigenstate φ_n(j) ∝ sin(π n j / (Nx + 1)), j = 1..Nx, shape (num_points,)."""
    j = np.arange(1, num_points + 1)
    state = np.sin(np.pi * n * j / (num_points + 1))
    return jnp.asarray(state / np.linalg.norm(state), dtype=float_dtype())


def to_complex(physics: Array) -> Array:
    """(Nx, 2) real and imaginary parts -> complex ψ of shape (Nx,)."""
    return jax.lax.complex(physics[:, 0], physics[:, 1])


def to_physics(psi: Array) -> Array:
    """Complex ψ of shape (Nx,) -> (Nx, 2) real and imaginary parts."""
    return jnp.stack([jnp.real(psi), jnp.imag(psi)], axis=-1)


def initial_physics(key: Array, params: QuantumParams) -> Array:
    """A random superposition of φ_1 and φ_2, shape (Nx, 2), unit norm."""
    amplitude_key, phase_key = jax.random.split(key)
    amplitude = jax.random.normal(amplitude_key, (2,), float_dtype())
    amplitude = amplitude * jnp.stack([params.ground_state_weight, jnp.ones_like(params.ground_state_weight)])
    phase = jax.random.uniform(phase_key, (2,), float_dtype(), 0.0, 2.0 * jnp.pi)
    basis = jnp.stack([eigenstate(1, params.num_points), eigenstate(2, params.num_points)])
    coefficients = amplitude * jnp.exp(1j * phase.astype(complex_dtype()))
    psi = coefficients @ basis.astype(complex_dtype()) / jnp.sqrt(jnp.sum(amplitude**2))
    return to_physics(psi)


def step_physics(physics: Array, action: Array, params: QuantumParams) -> Array:
    """One Crank-Nicolson step of dt under the potential u·x (tridiagonal solve, O(Nx))."""
    n, dx, dt = params.num_points, params.dx, params.dt
    u = action.reshape(())
    psi = to_complex(physics)
    x = dx * jnp.arange(1, n + 1, dtype=float_dtype())
    coupling = 1.0 / dx**2
    diagonal = 2.0 * coupling + u * x                      # diagonal of H
    shifted = jnp.pad(psi, 1)
    h_psi = diagonal * psi - coupling * (shifted[:-2] + shifted[2:])
    rhs = psi - 0.5j * dt * h_psi
    off = jnp.full((n,), -0.5j * dt * coupling, dtype=complex_dtype())
    lower = off.at[0].set(0.0)
    upper = off.at[-1].set(0.0)
    main = (1.0 + 0.5j * dt * diagonal).astype(complex_dtype())
    solution = jax.lax.linalg.tridiagonal_solve(lower, main, upper, rhs.astype(complex_dtype())[:, None])
    return to_physics(solution[:, 0]).astype(physics.dtype)


def fidelity(physics: Array, params: QuantumParams) -> Array:
    """|⟨φ_target, ψ⟩|², scalar in [0, 1] for a normalised ψ."""
    target = eigenstate(params.target_state, params.num_points)
    overlap = target @ physics
    return jnp.sum(overlap**2)


def step_loss(action: Array, next_physics: Array, next_time: Array, params: QuantumParams) -> Array:
    """This step's loss contribution: the infidelity of the state after the step."""
    loss = 1.0 - fidelity(next_physics, params)
    return jnp.where(next_time <= params.num_steps, loss, jnp.zeros_like(loss))


class QuantumControl(FunctionalEnv[QuantumParams]):
    """Quantum control as a functional environment (see the module docstring)."""

    name = "QuantumControl"
    params_type = QuantumParams

    def initial_physics(self, key: Array, params: QuantumParams) -> Array:
        return initial_physics(key, params)

    def step_physics(self, physics: Array, action: Array, params: QuantumParams) -> Array:
        return step_physics(physics, action, params)

    def step_loss(self, action: Array, next_physics: Array, next_time: Array,
                  params: QuantumParams) -> Array:
        return step_loss(action, next_physics, next_time, params)

    def loss_terms(self, action: Array, next_physics: Array, next_time: Array,
                   params: QuantumParams) -> dict[str, Array]:
        return {"loss": step_loss(action, next_physics, next_time, params),
                "fidelity": fidelity(next_physics, params),
                "norm": jnp.sqrt(jnp.sum(next_physics**2))}

    def action_shape(self, params: QuantumParams | None = None) -> tuple[int, ...]:
        return (1,)

    def physics_shape(self, params: QuantumParams | None = None) -> tuple[int, ...]:
        return (self._params(params).num_points, 2)

    def render_image(self, state: EnvState, render_state: Any = None,
                     params: QuantumParams | None = None) -> tuple[Any, np.ndarray]:
        from diffenvs.rendering import render_quantum
        params = self._params(params)
        target = np.asarray(eigenstate(params.target_state, params.num_points), dtype=np.float64)
        return render_state, render_quantum(np.asarray(state.physics, dtype=np.float64), target)
