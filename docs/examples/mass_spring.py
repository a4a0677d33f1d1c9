"""A differentiable environment written from scratch, registered with diffenvs and trained with trainers.

A chain of masses on a line, joined by springs, the first one to a wall: each mass has a motor that
pushes it, and the controller must bring the chain to rest at its equilibrium. The state is a dict
pytree, {"positions", "velocities", "time"}; the observation (what the controller sees) is the
displacements, the velocities and the fraction of the episode gone, one vector.

    .venv/bin/python docs/examples/mass_spring.py            # trains bptt, combined and shac briefly

Importing the module registers the environment as "mass-spring" and its training preset, so that the
command-line tools reach it with ``--import`` (the module must be importable, e.g. on PYTHONPATH):

    PYTHONPATH=docs/examples .venv/bin/diffenvs-train mass-spring --import mass_spring --strategy bptt
"""

from __future__ import annotations

# --8<-- [start:environment]
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import diffenvs
from trainers import TaskPreset, add_task_preset, task_preset, train


class MassSpringParams(NamedTuple):
    """Physical parameters (a NamedTuple is a pytree: its floats can be traced and differentiated).

    stiffness: spring constant per unit mass (1/s²); damping: velocity damping (1/s); dt: time step
    (s); control_cost: weight of the squared motor forces in the loss; bound: the largest displacement
    (m) before the chain breaks and the episode ends."""

    stiffness: float = 4.0
    damping: float = 0.1
    dt: float = 0.05
    control_cost: float = 0.01
    bound: float = 2.0


class MassSpringChain:
    """``num_masses`` unit masses at rest positions 1, 2, ..., joined by springs, the first to a wall at 0.

    State: {"positions": (N,) m, "velocities": (N,) m/s, "time": int32 steps taken}. Action: the motor
    force on each mass, (N,) N. Reward per step: -(Σ displacement² + 0.1 Σ velocity² + control_cost ·
    Σ force²) · dt. The episode ends after ``num_steps`` steps, or earlier when a displacement exceeds
    ``bound`` (terminal).
    """

    name = "MassSpringChain"

    def __init__(self, num_masses: int = 3, num_steps: int = 60, **physics: float):
        self.num_masses = int(num_masses)
        self.horizon = int(num_steps)
        self.default_params = MassSpringParams(**physics)
        self.rest = jnp.arange(1, self.num_masses + 1, dtype=jnp.result_type(float))

    def _params(self, params: MassSpringParams | None) -> MassSpringParams:
        return self.default_params if params is None else params

    def initial(self, rng: jax.Array, params: MassSpringParams | None = None) -> dict[str, jax.Array]:
        displacement = jax.random.uniform(rng, (self.num_masses,), minval=-0.5, maxval=0.5)
        return {"positions": self.rest + displacement, "velocities": jnp.zeros(self.num_masses),
                "time": jnp.zeros((), jnp.int32)}

    def transition(self, state: dict, action: jax.Array, rng: jax.Array | None = None,
                   params: MassSpringParams | None = None) -> dict[str, jax.Array]:
        p = self._params(params)
        stretch = jnp.diff(state["positions"] - self.rest, prepend=0.0)   # each spring's extension
        spring = -stretch + jnp.append(stretch[1:], 0.0)                   # pull of the left and right spring
        force = p.stiffness * spring - p.damping * state["velocities"] + jnp.reshape(action, (self.num_masses,))
        velocities = state["velocities"] + p.dt * force                     # semi-implicit Euler
        positions = state["positions"] + p.dt * velocities
        return {"positions": positions, "velocities": velocities, "time": state["time"] + 1}

    def reward(self, state: dict, action: jax.Array, next_state: dict, rng: jax.Array | None = None,
               params: MassSpringParams | None = None) -> jax.Array:
        p = self._params(params)
        displacement = next_state["positions"] - self.rest
        cost = (jnp.sum(displacement ** 2) + 0.1 * jnp.sum(next_state["velocities"] ** 2)
                + p.control_cost * jnp.sum(jnp.square(action)))
        return -cost * p.dt

    def observation(self, state: dict, rng: jax.Array | None = None,
                    params: MassSpringParams | None = None) -> jax.Array:
        fraction = (state["time"] / self.horizon).astype(state["positions"].dtype)
        return jnp.concatenate([state["positions"] - self.rest, state["velocities"], fraction[None]])

    def terminal(self, state: dict, rng: jax.Array | None = None,
                 params: MassSpringParams | None = None) -> jax.Array:
        broken = jnp.any(jnp.abs(state["positions"] - self.rest) > self._params(params).bound)
        return broken | (state["time"] >= self.horizon)

    def num_steps(self, params: MassSpringParams | None = None) -> int:
        return self.horizon

    def action_shape(self, params: MassSpringParams | None = None) -> tuple[int, ...]:
        return (self.num_masses,)

    def observation_shape(self, params: MassSpringParams | None = None) -> tuple[int, ...]:
        return (2 * self.num_masses + 1,)
# --8<-- [end:environment]


# --8<-- [start:register]
if "mass-spring" not in diffenvs.registry.REGISTERED:      # importing twice must not register twice
    diffenvs.register("mass-spring", MassSpringChain)
    add_task_preset("mass-spring", TaskPreset(horizon=60, batch_size=8, learning_rate=3e-3, num_train=64,
                                              num_test=32, epochs=100))
# --8<-- [end:register]


# --8<-- [start:train]
def main(epochs: int = 30, strategies: tuple[str, ...] = ("bptt", "combined", "shac")) -> dict[str, Any]:
    """Check the gradients, then train each strategy for ``epochs`` epochs; returns strategy -> metrics rows."""
    check = diffenvs.check_gradients(diffenvs.make("mass-spring"), steps=10)
    print(f"gradient check: largest relative error {check.max_relative_error:.2e}")
    results = {}
    for strategy in strategies:
        options = {"strategy_options": {"horizon": 20}} if strategy == "shac" else {}
        config = task_preset("mass-spring", strategy=strategy, epochs=epochs, **options)
        rows = train(config, quiet=True).metrics
        print(f"{strategy:9} test loss {rows[0]['test_loss']:.4f} -> {rows[-1]['test_loss']:.4f}")
        results[strategy] = rows
    return results
# --8<-- [end:train]


if __name__ == "__main__":
    main()
