"""The configuration of a training run: :class:`TrainConfig` and the named optimizers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import optax

import diffenvs
from diffenvs.core import FunctionalEnv
from diffenvs.registry import canonical_name
from trainers.networks import Controller, study_controller
from trainers.rollout import Problem
from trainers.strategies import Strategy, get_strategy, parse_strategy

CLIP_MODES = ("none", "value", "norm")
PRECISIONS = ("float32", "float64")


def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-7)


OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "adam": _adam,  # Keras defaults of the study: β 0.9 / 0.999, ε 1e-7
    "sgd": optax.sgd,
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adagrad": lambda learning_rate: optax.adagrad(learning_rate, initial_accumulator_value=0.1, eps=1e-7),
    "adadelta": lambda learning_rate: optax.adadelta(learning_rate, rho=0.95, eps=1e-7),
    "rmsprop": lambda learning_rate: optax.rmsprop(learning_rate, decay=0.9, eps=1e-7),
}
"""Optimizers by name, with the Keras defaults the study used."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``).

    Attributes:
        task: environment name ("cartpole", "guidance", "quantum" or a canonical name).
        env_params: parameters of the environment (e.g. ``{"num_poles": 2}``).
        strategy: a registered strategy name (see :mod:`trainers.strategies`) or a
            :class:`trainers.strategies.Strategy` object (recorded as "custom:NAME").
        truncate_every: the window of "truncated" (steps, an integer >= 1).
        es_population: the population of "es" (perturbation pairs).
        es_noise: the perturbation scale of "es".
        optimizer: a name in :data:`OPTIMIZERS`.
        learning_rate: the optimizer's learning rate, > 0.
        clip: "none", "value" or "norm" (global norm), applied to the update before the optimizer.
        clip_threshold: the clipping threshold, > 0.
        num_train: training states, drawn with the seed.
        num_test: test states, a draw independent of the training states.
        batch_size: states per update, in a fixed order; the remainder of num_train / batch_size is
            unused.
        epochs: passes over the training set.
        seed: the one seed of the run.
        checkpoint_every: epochs between checkpoints (the last epoch is always checkpointed).
        strategy_options: option name -> value of any registered strategy factory (e.g.
            ``{"horizon": 32}`` for "shac").
        precision: "float32" (the study's) or "float64": the environments, networks, optimizer and
            metrics all compute in it.
        gradient_variance: also log, per epoch, the mean over batches of the variance of the
            per-episode BPTT gradients within a batch (column ``gradient_variance``; costs about one
            more backward pass).

    Invalid values raise ``ValueError`` naming the field, the value and what is allowed.
    ``strategy_options``, ``precision`` and ``gradient_variance`` appear in :meth:`to_dict` (and so ``config.json``) only when
    they differ from their defaults, so the records of earlier runs stay valid.
    """

    task: str = "cartpole"
    env_params: dict = dataclasses.field(default_factory=dict)
    strategy: str | Strategy = "combined"
    truncate_every: int | None = None
    es_population: int = 32
    es_noise: float = 0.02
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    clip: str = "none"
    clip_threshold: float = 1.0
    num_train: int = 256
    num_test: int = 256
    batch_size: int = 8
    epochs: int = 1000
    seed: int = 0
    checkpoint_every: int = 10
    strategy_options: dict = dataclasses.field(default_factory=dict)
    precision: str = "float32"
    gradient_variance: bool = False

    def __post_init__(self) -> None:
        canonical_name(self.task)
        for name in ("num_train", "num_test", "batch_size", "epochs", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size > self.num_train:
            raise ValueError(f"batch_size must be at most num_train = {self.num_train}, "
                             f"got {self.batch_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate)
                and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}, got {self.clip!r}")
        if not self.clip_threshold > 0:
            raise ValueError(f"clip_threshold must be > 0, got {self.clip_threshold!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not isinstance(self.strategy_options, dict):
            raise ValueError(f"strategy_options must be a dict of option -> value, got {self.strategy_options!r}")
        if not isinstance(self.gradient_variance, bool):
            raise ValueError(f"gradient_variance must be True or False, got {self.gradient_variance!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.make_strategy()

    def make_strategy(self) -> Strategy:
        """The configured :class:`Strategy` (its options checked)."""
        options = dict(self.strategy_options)
        if self.strategy == "truncated":
            if self.truncate_every is None and "every" not in options:
                raise ValueError("strategy 'truncated' needs truncate_every (an integer >= 1)")
            options.setdefault("every", self.truncate_every)
        elif self.strategy == "es":
            options.setdefault("population", self.es_population)
            options.setdefault("noise", self.es_noise)
        return get_strategy(self.strategy, options)

    def make_env(self) -> FunctionalEnv:
        return diffenvs.make(self.task, **self.env_params)

    def make_problem(self, controller: Controller | None = None) -> Problem:
        """The task's environment with its default parameters and ``controller`` (default: the
        study's network for the task)."""
        env = self.make_env()
        controller = controller or study_controller(env.name, env.physics_shape(), env.action_shape())
        return Problem(env, env.default_params, controller)

    def make_optimizer(self) -> optax.GradientTransformation:
        """Clipping of the update (per ``clip``) followed by the optimizer."""
        optimizer = OPTIMIZERS[self.optimizer](self.learning_rate)
        if self.clip == "value":
            return optax.chain(optax.clip(self.clip_threshold), optimizer)
        if self.clip == "norm":
            return optax.chain(optax.clip_by_global_norm(self.clip_threshold), optimizer)
        return optimizer

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        record = dataclasses.asdict(self)
        for name in _DEFAULTS:
            if record[name] == _DEFAULTS[name]:
                del record[name]
        if isinstance(self.strategy, Strategy):
            record["strategy"] = f"custom:{self.strategy.name}"
        return record


_DEFAULTS = {"strategy_options": {}, "precision": "float32", "gradient_variance": False}


def strategy_fields(text: str) -> dict[str, Any]:
    """The :class:`TrainConfig` fields of a command-line strategy spelling (see
    :func:`trainers.strategies.parse_strategy`): ``"truncated:10"`` -> strategy and truncate_every,
    ``"es:64"`` -> strategy and es_population, ``"NAME:key=value"`` -> strategy and strategy_options."""
    name, options = parse_strategy(text)
    fields: dict[str, Any] = {"strategy": name}
    if name == "truncated" and "every" in options:
        fields["truncate_every"] = options.pop("every")
    if name == "es":
        for option, field in (("population", "es_population"), ("noise", "es_noise")):
            if option in options:
                fields[field] = options.pop(option)
    if options:
        fields["strategy_options"] = options
    return fields
