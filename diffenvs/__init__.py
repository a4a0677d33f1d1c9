"""diffenvs: differentiable JAX physics control problems.

The three problems of "Stabilizing Backpropagation Through Time to Learn Complex Physics" as pure,
jit-, vmap- and grad-compatible functional environments, with Gymnasium ids registered on import:

>>> import diffenvs, jax
>>> env = diffenvs.make("CartPole", num_poles=2)
>>> state = env.initial(jax.random.PRNGKey(0))
"""

from diffenvs.cartpole import CartPole, CartPoleParams
from diffenvs.core import EnvState, FunctionalEnv
from diffenvs.guidance import GuidanceByRepulsion, GuidanceParams
from diffenvs.quantum import QuantumControl, QuantumParams
from diffenvs.registry import ENVIRONMENTS, GYM_IDS, make
from diffenvs.gym_adapter import GymEnv, GymVectorEnv, register_environments

register_environments()

__version__ = "0.1.0"

__all__ = [
    "CartPole", "CartPoleParams", "EnvState", "FunctionalEnv", "GuidanceByRepulsion", "GuidanceParams",
    "QuantumControl", "QuantumParams", "ENVIRONMENTS", "GYM_IDS", "make", "GymEnv", "GymVectorEnv",
    "register_environments",
]
