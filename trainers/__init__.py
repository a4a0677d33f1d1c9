"""trainers: train controllers by backpropagating through rollouts of any differentiable JAX environment
(the built-in diffenvs tasks, adapters, or one of your own meeting :class:`diffenvs.ControlEnv`).

Examples:
    >>> from trainers import train
    >>> result = train(task="cartpole", env_params={"num_poles": 1}, strategy="combined", epochs=30)
"""

from trainers.networks import MLP, Controller, QuantumCNN, from_flax, study_controller
from trainers.presets import (
    COMPLEXITY_LEVELS, DEFAULT_PRESET, EXTERNAL_PRESETS, TASK_PRESETS, TaskPreset, add_task_preset, bounded_mlp,
    study_preset, task_preset,
)
from trainers.rollout import Problem, first_nonfinite_step, make_gate, rollout_loss
from trainers.strategies import (
    STRATEGIES, Strategy, StrategyResult, bptt, combined, es, gated, get_strategy, modified, network_only,
    one_step, parse_strategy, register, sign_agreement, strategy_names, truncated,
)
from trainers.training import OPTIMIZERS, NonFiniteError, TrainConfig, TrainResult, ZeroUpdateWarning, train
from trainers.policy import Policy, load_policy
from trainers.evaluation import Evaluation, evaluate_policy

__all__ = [
    "MLP", "Controller", "QuantumCNN", "from_flax", "study_controller", "COMPLEXITY_LEVELS", "study_preset",
    "DEFAULT_PRESET", "EXTERNAL_PRESETS", "TASK_PRESETS", "TaskPreset", "add_task_preset", "bounded_mlp",
    "task_preset",
    "Problem", "first_nonfinite_step", "make_gate", "rollout_loss", "STRATEGIES", "Strategy", "StrategyResult", "bptt", "combined",
    "es", "gated", "get_strategy", "modified", "network_only", "one_step", "parse_strategy", "register",
    "sign_agreement", "strategy_names", "truncated",
    "OPTIMIZERS", "NonFiniteError", "TrainConfig", "TrainResult", "ZeroUpdateWarning", "train",
    "Policy", "load_policy", "Evaluation", "evaluate_policy",
]
