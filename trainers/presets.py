"""The study's protocol for each task and complexity level, as :class:`TrainConfig` presets."""

from __future__ import annotations

from typing import Any

from diffenvs.registry import canonical_name
from trainers.training import TrainConfig

COMPLEXITY_LEVELS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "CartPole": ("num_poles", (1, 2, 3, 4)),
    "GuidanceByRepulsion": ("regularization", (1.0, 0.1, 0.01, 0.001)),
    "QuantumControl": ("target_state", (3, 4, 5)),
}
"""Per task: the environment parameter that sets the complexity and the study's levels, easiest first."""


def hardest_level(task: str) -> Any:
    """The study's hardest complexity level of ``task`` (4 poles, rc 0.001, target state 5)."""
    return COMPLEXITY_LEVELS[canonical_name(task)][1][-1]


def study_preset(task: str, level: Any, **overrides: Any) -> TrainConfig:
    """The study protocol: 256 + 256 states, batch 8 in a fixed order, 1000 epochs, Adam 1e-3.

    Args:
        task: "cartpole", "guidance", "quantum" or a canonical environment name.
        level: the complexity value of :data:`COMPLEXITY_LEVELS`: the number of poles (1-4), the
            regularisation rc (1, 0.1, 0.01, 0.001) or the target state (3, 4, 5).
        **overrides: any other :class:`~trainers.config.TrainConfig` field (e.g. ``strategy``,
            ``clip``, ``seed``); ``env_params`` are merged with the level's.

    Returns:
        The run's :class:`~trainers.config.TrainConfig`.

    Raises:
        ValueError: an unknown task, a level that is not one of the task's, or an invalid override.

    Examples:
        >>> config = study_preset("cartpole", 2, strategy="bptt", seed=1)
    """
    name = canonical_name(task)
    parameter, levels = COMPLEXITY_LEVELS[name]
    if level not in levels:
        raise ValueError(f"level must be one of {levels} ({parameter}) for {name}, got {level!r}")
    env_params = {parameter: level, **overrides.pop("env_params", {})}
    protocol = dict(task=name, env_params=env_params, num_train=256, num_test=256, batch_size=8,
                    epochs=1000, optimizer="adam", learning_rate=1e-3)
    return TrainConfig(**{**protocol, **overrides})
