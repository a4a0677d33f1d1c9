"""The configuration of a training run: :class:`TrainConfig` and the named optimizers."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Callable, Mapping

import optax

import diffenvs
from diffenvs.core import ControlEnv
from diffenvs.registry import ALIASES, canonical_name, registration
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
        task: environment name: "cartpole", "guidance", "quantum" (or a canonical name),
            "gymnax:ENV_ID", "brax:NAME", or a name given to :func:`diffenvs.register`.
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
        epochs: passes over the training set (30, a short run as ``diffenvs-train``'s; the study's
            protocol, :func:`~trainers.presets.study_preset`, runs 1000).
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
    epochs: int = 30
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

    def make_env(self) -> ControlEnv:
        return diffenvs.make(self.task, **self.env_params)

    def make_problem(self, controller: Controller | None = None) -> Problem:
        """The task's environment with its default parameters and ``controller`` (default:
        :func:`default_controller`)."""
        env = self.make_env()
        return Problem(env, env.default_params, controller or default_controller(self.task, env))

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

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> TrainConfig:
        """The configuration of a ``config.json`` record written by :meth:`to_dict` (or by
        :func:`~trainers.training.train`, whose bookkeeping keys :data:`RECORD_BOOKKEEPING` are ignored;
        fields an older record lacks take their defaults).

        Raises:
            ValueError: one line, for a record that is not a dict, has keys that are neither fields nor
                bookkeeping (naming them), names a custom :class:`Strategy` object ("custom:NAME", which
                a record cannot rebuild), or has invalid values.
        """
        if not isinstance(record, dict):
            raise ValueError(f"record must be a dict (a config.json object), got {type(record).__name__}")
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(record) - fields - set(RECORD_BOOKKEEPING))
        if unknown:
            raise ValueError(f"record: unknown key(s) {unknown}; a TrainConfig record holds {sorted(fields)} "
                             f"and the bookkeeping keys {list(RECORD_BOOKKEEPING)}")
        strategy = record.get("strategy", "")
        if isinstance(strategy, str) and strategy.startswith("custom:"):
            raise ValueError(f"strategy {strategy!r} was a Strategy object, which a record cannot rebuild; "
                             f"pass TrainConfig(strategy=...) the object itself")
        return cls(**{name: value for name, value in record.items() if name in fields})


RECORD_BOOKKEEPING = ("diffenvs_version", "controller", "optimizer_object")
"""Keys of ``config.json`` beside the :class:`TrainConfig` fields: the library version that wrote the run,
whether it used the study's or a custom controller, and a custom optimizer object."""

def default_controller(task: str, env: ControlEnv) -> Controller:
    """The network a task trains by default: the controller given to :func:`diffenvs.register`, else the
    network of the task's preset (:data:`trainers.presets.TASK_PRESETS`), else the study's controller (the
    quantum CNN for quantum control, else the MLP on the flattened observation)."""
    from trainers.presets import TASK_PRESETS          # presets build TrainConfigs: imported when needed
    name = canonical_name(task)
    registered = registration(name)
    if registered is not None and registered.controller is not None:
        return registered.controller(env)
    preset = TASK_PRESETS.get(name)
    if preset is not None and preset.network is not None:
        return preset.network(env)
    return study_controller(env.name, tuple(env.observation_shape(env.default_params)),
                            tuple(env.action_shape(env.default_params)))


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


RUN_LEVEL_LABELS = {"num_poles": "poles", "regularization": "rc", "target_state": "target"}
"""The label of each task's complexity parameter in run-directory names."""
_NAMED_KEYS = ("task", "env_params", "strategy", "algo", "clip", "seed", "epochs", "diffenvs_version",
               "brax_version")
"""Keys of a config record that a run name spells out or leaves out (``epochs``: a larger value continues
the same run)."""


def _spelled(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(config: TrainConfig | Mapping[str, Any]) -> str:
    """The directory name of a run: ``TASK-LEVEL-STRATEGY-CLIP-seedSEED``, and ``-HASH`` when any other
    option differs from its default.

    ``config`` is a :class:`TrainConfig` or a ``config.json`` record (of :func:`trainers.train` or of an
    RL baseline, whose name is ``TASK-LEVEL-ALGO-seedSEED``). TASK is the short task name (cartpole,
    guidance, quantum), LEVEL the complexity label and value (``poles2``, ``rc0.01``, ``target4``, the
    environment's default when not given), STRATEGY the strategy name (``truncated10`` for truncated(10),
    ``es64`` for es with a population other than 32, ``custom-NAME`` for a Strategy object). HASH is 8
    hexadecimal digits of the SHA-1 of the options that differ from the defaults of :class:`TrainConfig`
    and of the environment (``epochs`` excepted: a larger ``epochs`` continues the same run), so the
    same configuration always gets the same name and two configurations never share one.
    ``trainers.rundir.find_run_dirs`` finds runs by their configuration instead of their name.
    """
    record = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    task = canonical_name(record["task"])
    short = next((alias for alias, name in ALIASES.items() if name == task), None)
    if short is None:          # gymnax:Pendulum-v1 -> gymnax-Pendulum-v1, a registered name as it is spelled
        short = "".join(c if c.isalnum() or c in "._-" else "-" for c in task)
    default_params = diffenvs.make(task).default_params
    env_defaults = dataclasses.asdict(default_params) if dataclasses.is_dataclass(default_params) else {}
    env_params = dict(record.get("env_params") or {})
    from trainers.presets import COMPLEXITY_LEVELS       # presets imports this module
    parameter = COMPLEXITY_LEVELS[task][0] if task in COMPLEXITY_LEVELS else None
    parts = [short]
    if parameter is not None:
        level = env_params.pop(parameter, env_defaults.get(parameter))
        parts.append(f"{RUN_LEVEL_LABELS.get(parameter, parameter)}{_spelled(level)}")
    options = {name: value for name, value in env_params.items() if value != env_defaults.get(name)}
    options = {"env_params": options} if options else {}
    if "algo" in record:                                  # an RL baseline: no clipping, its own options
        parts += [str(record["algo"]), f"seed{record['seed']}"]
        return "-".join(parts)
    strategy = str(record["strategy"]).replace("custom:", "custom-")
    defaults = {**TrainConfig().to_dict(), "controller": "study"}
    shown = set()
    if strategy == "truncated" and record.get("truncate_every") is not None:
        strategy, shown = f"truncated{record['truncate_every']}", {"truncate_every"}
    elif strategy == "es" and record.get("es_population", defaults["es_population"]) != defaults["es_population"]:
        strategy, shown = f"es{record['es_population']}", {"es_population"}
    parts += [strategy, str(record.get("clip", "none")), f"seed{record['seed']}"]
    for name, value in record.items():
        if name not in _NAMED_KEYS and name not in shown and value != defaults.get(name):
            options[name] = value
    if options:
        parts.append(hashlib.sha1(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8])
    return "-".join(parts)
