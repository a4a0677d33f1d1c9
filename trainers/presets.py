"""Training protocols as :class:`TrainConfig` presets: the study's for its three tasks and complexity
levels (:func:`study_preset`), and a table of presets for other tasks (:data:`TASK_PRESETS`,
:func:`task_preset`): external environments (``gymnax:...``, ``brax:...``) and a user's own."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import diffenvs
from diffenvs.registry import canonical_name, is_builtin
from trainers.networks import MLP, from_flax
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


@dataclasses.dataclass(frozen=True)
class TaskPreset:
    """The protocol of a task outside the study.

    horizon: episode length in steps, passed to the environment as its parameter ``horizon_parameter``
    (None: the environment's own default). batch_size, learning_rate (Adam), num_train and num_test
    (initial states), epochs: as in :class:`TrainConfig`. network: ``network(env) -> Controller``, the
    default controller (None: the study's MLP on the flattened observation). env_params: further
    environment parameters.
    """

    horizon: int | None = None
    batch_size: int = 8
    learning_rate: float = 1e-3
    num_train: int = 256
    num_test: int = 256
    epochs: int = 1000
    network: Callable[[Any], Any] | None = None
    env_params: dict = dataclasses.field(default_factory=dict)
    horizon_parameter: str = "num_steps"

    def config_fields(self) -> dict[str, Any]:
        """The :class:`TrainConfig` fields the preset sets."""
        env_params = dict(self.env_params)
        if self.horizon is not None:
            env_params[self.horizon_parameter] = self.horizon
        return dict(env_params=env_params, batch_size=self.batch_size, learning_rate=self.learning_rate,
                    num_train=self.num_train, num_test=self.num_test, epochs=self.epochs)


DEFAULT_PRESET = TaskPreset()
"""The protocol of a task without a preset: the environment's own horizon, batch 8, Adam 1e-3, 256 + 256
initial states, 1000 epochs, the study's MLP (two tanh layers of 100) on the flattened observation."""

TASK_PRESETS: dict[str, TaskPreset] = {}
"""Presets of tasks outside the study, by task name (``"gymnax:Pendulum-v1"``, a registered name, ...).
Add a row with :func:`add_task_preset`. The rows the library ships are in :data:`EXTERNAL_PRESETS`."""


def bounded_mlp(bound: float) -> Callable[[Any], Any]:
    """``network(env)`` for a :class:`TaskPreset`: the study's MLP with its output squashed into
    (-bound, bound) (:class:`~trainers.networks.MLP` ``output_bound``), for environments that clip their
    action to that range (the clip's gradient is zero outside it)."""
    if not (isinstance(bound, (int, float)) and bound > 0 and bound != float("inf")):
        raise ValueError(f"bound must be a positive finite number, got {bound!r}")

    def network(env: Any) -> Any:
        return from_flax(MLP(output_shape=tuple(env.action_shape(env.default_params)), output_bound=bound),
                         tuple(env.observation_shape(env.default_params)))
    return network


def add_task_preset(task: str, preset: TaskPreset, *, replace: bool = False) -> TaskPreset:
    """Make ``preset`` the protocol of ``task`` (any name outside the study's three tasks; the task need
    not be registered yet). ValueError for a study task or, without ``replace``, a task that has one."""
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a non-empty string, got {task!r}")
    if is_builtin(task):
        raise ValueError(f"task {task!r} is one of the study's tasks: use study_preset")
    if not isinstance(preset, TaskPreset):
        raise ValueError(f"preset must be a TaskPreset, got {preset!r}")
    if task in TASK_PRESETS and not replace:
        raise ValueError(f"task {task!r} already has a preset; pass replace=True to change it")
    TASK_PRESETS[task] = preset
    return preset


def task_preset(task: str, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of ``task`` under its preset (:data:`TASK_PRESETS`, else
    :data:`DEFAULT_PRESET`); for a study task the study's protocol at the level given in ``env_params`` (or
    the environment's default level).
    ``overrides`` change any field; ``env_params`` given there are merged over the preset's."""
    name = canonical_name(task)
    if is_builtin(name):
        parameter, levels = COMPLEXITY_LEVELS[name]
        env_params = dict(overrides.pop("env_params", {}))
        default = getattr(diffenvs.make(name).default_params, parameter)
        level = env_params.pop(parameter, default)
        return study_preset(name, level, env_params=env_params, **overrides)
    fields = TASK_PRESETS.get(name, DEFAULT_PRESET).config_fields()
    env_params = {**fields.pop("env_params"), **overrides.pop("env_params", {})}
    return TrainConfig(**{"task": name, "env_params": env_params, **fields, **overrides})


EXTERNAL_PRESETS: dict[str, TaskPreset] = {
    "gymnax:Pendulum-v1": TaskPreset(horizon=200, epochs=300, network=bounded_mlp(2.0)),
    "gymnax:Reacher-misc": TaskPreset(horizon=100, epochs=300),
    "gymnax:Swimmer-misc": TaskPreset(horizon=200, epochs=300),
    "brax:inverted_double_pendulum": TaskPreset(horizon=100, epochs=30, num_train=64, num_test=64,
                                                env_params={"pipeline": "spring"}),
}
"""The presets the library ships for external environments (docs/external-environments.md): gymnax's Pendulum-v1
at its own episode length (200 steps) with actions squashed into its torque range (-2, 2); Reacher-misc at
its own length (100); Swimmer-misc at 200 of its 500 steps; brax's inverted_double_pendulum on the spring
pipeline (the cheapest here) for 100 steps, with 64 + 64 initial states and 30 epochs (its steps cost
about 20 times a gymnax step). Batch 8, Adam 1e-3 and the study's MLP otherwise."""

for _task, _preset in EXTERNAL_PRESETS.items():
    add_task_preset(_task, _preset)
