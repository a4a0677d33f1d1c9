"""Trained policies you can load and run: :func:`load_policy` reads any run directory into a :class:`Policy`.

Run directories of every kind load the same way:

* gradient runs (``diffenvs-train``, :func:`trainers.training.train`, the sweeps of
  ``diffenvs-sweep`` and the gradient runs of ``diffenvs-compare``): ``config.json`` (a
  :class:`~trainers.config.TrainConfig` record) and the controller params of ``checkpoint.npz`` at
  its epoch, the last checkpointed one;
* RL runs (``diffenvs-baseline`` and the RL runs of ``diffenvs-compare``, brax PPO, SAC or APG):
  ``config.json`` and ``policy.npz``, the observation normaliser and policy network params of the
  run's last evaluation (:data:`POLICY_FILE`, written by
  :func:`trainers.experiments.baseline.train_baseline` at every evaluation), rebuilt with brax's
  ``make_ppo_networks`` / ``make_sac_networks`` / ``make_apg_networks`` and ``make_inference_fn``,
  deterministic (the ``tanh`` of the Gaussian mean).

Actions. A :class:`Policy` returns the action of the Gymnasium environment that :meth:`Policy.make_env`
makes. For a gradient run the environment has no ``action_scale`` (an unbounded action space) and the
action is the physical control the controller outputs. For an RL run the environment has the run's
``action_scale`` s (action space [-1, 1]) and the action is brax's deterministic action in [-1, 1]; the
environment applies the control ``s * clip(action, -1, 1)``, exactly as the brax adapter did in
training. :meth:`Policy.controller` gives the controls (the trainers' convention) for
:func:`trainers.rollout.rollout_loss`.

Every array file is ``.npz`` read with ``allow_pickle=False``; nothing is unpickled. A directory that
is not a run, or a damaged one, raises :class:`~trainers.rundir.RunDirError`, one line.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import diffenvs
from diffenvs.registry import GYM_IDS, canonical_name
from trainers import rundir
from trainers.config import TrainConfig
from trainers.engine import as_precision, precision_scope
from trainers.networks import Controller

Array = jax.Array
POLICY_FILE = "policy.npz"
"""The policy of an RL run: its normaliser and policy network params at one evaluation (``epoch``)."""
RL_ALGOS = ("ppo", "sac", "apg")
BRAX_NETWORK_KEYS = {"ppo": ("policy_hidden_layer_sizes", "value_hidden_layer_sizes"),
                     "sac": ("hidden_layer_sizes",), "apg": ("hidden_layer_sizes",)}
"""Per algorithm: the arguments of brax's network factory that a run's hyperparameters may set."""

_TRAIN_AGAIN = "train the run again, or pass the directory of a finished run"


def brax_network_factory(algo: str) -> Callable[..., Any]:
    """brax's network factory of ``algo``: ``make_ppo_networks``, ``make_sac_networks`` or ``make_apg_networks``."""
    from diffenvs.brax_adapter import import_brax_quietly
    import_brax_quietly()
    if algo == "ppo":
        from brax.training.agents.ppo.networks import make_ppo_networks as factory
    elif algo == "sac":
        from brax.training.agents.sac.networks import make_sac_networks as factory
    elif algo == "apg":
        from brax.training.agents.apg.networks import make_apg_networks as factory
    else:
        raise ValueError(f"algo must be one of {RL_ALGOS}, got {algo!r}")
    return factory


def brax_actions(make_policy: Callable[..., Any], action_shape: tuple[int, ...]) -> Callable[[Any, Array], Array]:
    """``apply(params, observations)``: brax's deterministic actions (batch, *action_shape), in [-1, 1],
    for observations (batch, *observation_shape) (flattened for the network)."""
    def apply(params: Any, observations: Array) -> Array:
        batch = observations.shape[0]
        actions, _ = make_policy(params, deterministic=True)(observations.reshape(batch, -1), jax.random.PRNGKey(0))
        return actions.reshape(batch, *action_shape)

    return apply


def scaled_controls(actions: Callable[[Any, Array], Array], action_scale: float | None) -> Callable[[Any, Array], Array]:
    """The controls of an action function: ``action_scale * clip(action, -1, 1)`` (the adapters'
    mapping), or the actions themselves when ``action_scale`` is None."""
    if action_scale is None:
        return actions
    return lambda params, observations: action_scale * jnp.clip(actions(params, observations), -1.0, 1.0)


def save_brax_policy(run_dir: str | Path, epoch: int, params: Any) -> None:
    """Write brax params ``(normaliser, policy, ...)`` (the tuple brax evaluates) as :data:`POLICY_FILE`:
    arrays named ``normalizer/...`` and ``policy/...``, with the evaluation index ``epoch``."""
    rundir.save_checkpoint(Path(run_dir), epoch, {"normalizer": params[0], "policy": params[1]}, POLICY_FILE)


@dataclasses.dataclass(frozen=True, eq=False)
class Policy:
    """A trained controller, ready to act: made by :func:`load_policy`.

    Attributes:
        run_dir: the run directory it was loaded from.
        kind: ``"gradient"`` (a controller trained by backpropagation) or the RL algorithm
            (``"ppo"``, ``"sac"``, ``"apg"``).
        task: the canonical environment name (e.g. ``"CartPole"``).
        env_params: the environment parameters of the run (e.g. ``{"num_poles": 2}``).
        action_scale: the ``action_scale`` of :meth:`make_env`'s environment: None for gradient runs
            (actions are controls), the run's scale for RL runs (actions in [-1, 1]).
        params: the parameters :meth:`controller` applies (flax params; for RL runs brax's
            ``(normaliser, policy params)``).
        config: the run's configuration: a :class:`~trainers.config.TrainConfig` for gradient runs;
            for RL runs the ``config.json`` record, a dict with ``task``, ``env_params``, ``algo``,
            ``action_scale``, ``seed``, ``num_test``, ``hyperparameters`` (brax arguments and network
            sizes) and the budgets.
        epoch: the epoch of the params (gradient runs) or the index of the evaluation they were
            evaluated at (RL runs); its ``metrics.csv`` row records their test loss.
        seed: the run's seed (it also draws the test set).
        num_test: the run's number of test states.
        precision: ``"float32"`` or ``"float64"``: the policy computes in it.
        observation_shape: the shape of one observation (the environment's physical state).
        action_shape: the shape of one action.
    """

    run_dir: Path
    kind: str
    task: str
    env_params: dict
    action_scale: float | None
    params: Any
    config: TrainConfig | dict
    epoch: int
    seed: int
    num_test: int
    precision: str
    observation_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    apply: Callable[[Any, Array], Array] = dataclasses.field(repr=False)
    """``apply(params, observations)``: actions (batch, *action_shape) for observations
    (batch, *observation_shape); pure, jit-able."""

    @functools.cached_property
    def _batched(self) -> Callable[[Array], Array]:
        return jax.jit(lambda observations: self.apply(self.params, observations))

    def __call__(self, observations: Any) -> Any:
        """Actions (batch, *action_shape) for observations (batch, *observation_shape).

        jax arrays (or tracers, inside ``jax.jit``) in give jax arrays out; numpy arrays, lists or
        numbers in give a numpy array out.
        """
        return self._run(observations, batched=True)

    def act(self, observation: Any) -> Any:
        """The action (action_shape) for ONE observation (observation_shape), e.g. a Gymnasium
        observation of :meth:`make_env`'s environment; numpy in gives numpy out."""
        return self._run(observation, batched=False)

    def _run(self, observations: Any, batched: bool) -> Any:
        plain = not isinstance(observations, jax.Array)
        shape = tuple(np.shape(observations))
        if batched and (len(shape) != len(self.observation_shape) + 1 or shape[1:] != self.observation_shape):
            raise ValueError(f"observations must have shape (batch, {', '.join(map(str, self.observation_shape))}), "
                             f"got shape {shape}")
        if not batched and shape != self.observation_shape:
            raise ValueError(f"observation must have shape {self.observation_shape}, got shape {shape}")
        with precision_scope(self.precision):
            inputs = jnp.asarray(observations, jnp.result_type(float))
            actions = self._batched(inputs if batched else inputs[None])
            actions = actions if batched else actions[0]
        return np.asarray(actions) if plain else actions

    def controller(self) -> Controller:
        """The policy as a trainers :class:`~trainers.networks.Controller` of controls: ``init`` returns
        :attr:`params`, ``apply(params, observations)`` the controls (batch, *action_shape) that the
        environment applies for :meth:`__call__`'s actions. Use it with
        :class:`~trainers.rollout.Problem` and :func:`~trainers.rollout.rollout_loss`."""
        return Controller(init=lambda key: self.params, apply=scaled_controls(self.apply, self.action_scale))

    def make_env(self, **overrides: Any) -> Any:
        """The Gymnasium environment the policy acts in: ``gym.make("diffenvs/<task>-v0", ...)`` with the
        run's environment parameters and action scale. ``overrides``: other ``gym.make`` arguments
        (``render_mode="rgb_array"``, ``max_episode_steps``) or environment parameters; not
        ``action_scale``, which the policy's actions depend on."""
        import gymnasium as gym
        if "action_scale" in overrides and overrides["action_scale"] != self.action_scale:
            raise ValueError(f"action_scale: the policy's actions are for action_scale={self.action_scale!r}, "
                             f"got {overrides['action_scale']!r}")
        overrides.pop("action_scale", None)
        return gym.make(GYM_IDS[self.task], action_scale=self.action_scale, **{**self.env_params, **overrides})

    def make_functional_env(self) -> diffenvs.core.FunctionalEnv:
        """The run's functional environment (``diffenvs.make(task, **env_params)``)."""
        return diffenvs.make(self.task, **self.env_params)


def _not_a_run(run_dir: Path, reason: str) -> rundir.RunDirError:
    return rundir.RunDirError(rundir._one_line(f"{run_dir} is not a run directory ({reason}); pass the directory "
                                               f"that diffenvs-train, diffenvs-sweep, diffenvs-baseline or "
                                               f"diffenvs-compare wrote"))


def load_policy(run_dir: str | Path) -> Policy:
    """The trained policy of a run directory of any kind (see the module docstring).

    Args:
        run_dir: a run directory written by ``diffenvs-train`` / :func:`~trainers.training.train`,
            ``diffenvs-sweep``, ``diffenvs-baseline`` / ``train_baseline`` or ``diffenvs-compare``.

    Returns:
        The :class:`Policy` at the run's last checkpoint (gradient runs) or last evaluation (RL runs).

    Raises:
        RunDirError: (a ValueError, one line) the path is not a run directory, a file is damaged or
            missing (no checkpoint or policy yet), or the run used a custom controller that a record
            cannot rebuild.
    """
    run_dir = rundir._check_run_dir(run_dir)
    if not run_dir.is_dir():
        raise rundir.RunDirError(f"run_dir: {run_dir} is not a directory")
    record = rundir.read_config(run_dir)
    if record is None:
        raise _not_a_run(run_dir, f"it has no {rundir.CONFIG_FILE}")
    if "algo" in record:
        return _load_brax(run_dir, record)
    return _load_gradient(run_dir, record)


def _config_error(run_dir: Path, message: str) -> rundir.RunDirError:
    return rundir.RunDirError(rundir._one_line(f"{run_dir / rundir.CONFIG_FILE}: {message}", 600))


def _load_gradient(run_dir: Path, record: dict[str, Any]) -> Policy:
    if record.get("controller") == "custom":
        raise _config_error(run_dir, "the run was trained with a custom controller, which a record cannot rebuild; "
                                     "load its checkpoint.npz with rundir.load_checkpoint and your controller")
    try:
        config = TrainConfig.from_dict(record)
    except (ValueError, TypeError) as error:
        raise _config_error(run_dir, f"not a run configuration: {error}") from None
    problem = config.make_problem()
    env = problem.env
    with precision_scope(config.precision):
        template = as_precision(problem.controller.init(jax.random.PRNGKey(0)), config.precision)
        loaded = rundir.load_checkpoint(run_dir, {"params": template}, leading=True)
    if loaded is None:
        raise rundir.RunDirError(f"{run_dir} holds no {rundir.CHECKPOINT_FILE} yet (training writes it every "
                                 f"checkpoint_every epochs); {_TRAIN_AGAIN}")
    epoch, state = loaded
    return Policy(run_dir=run_dir, kind="gradient", task=env.name, env_params=dict(config.env_params),
                  action_scale=None, params=state["params"], config=config, epoch=epoch, seed=config.seed,
                  num_test=config.num_test, precision=config.precision,
                  observation_shape=tuple(env.physics_shape()), action_shape=tuple(env.action_shape()),
                  apply=problem.controller.apply)


def _field(run_dir: Path, record: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _config_error(run_dir, f"{name} must be a {getattr(kind, '__name__', 'number')}, got {value!r}")
    return value


def brax_template(algo: str, observation_size: int, action_size: int, normalize: bool,
                  network_kwargs: dict[str, Any]) -> tuple[Any, Callable[..., Any]]:
    """The brax params ``(normaliser, policy params)`` of an untrained policy (the structure, shapes and
    dtypes that training saves) and brax's ``make_policy`` for them."""
    factory = brax_network_factory(algo)          # imports brax quietly
    from brax.training.acme import running_statistics, specs
    preprocess = running_statistics.normalize if normalize else (lambda observations, _: observations)
    networks = factory(observation_size, action_size, preprocess_observations_fn=preprocess, **network_kwargs)
    if algo == "ppo":
        from brax.training.agents.ppo.networks import make_inference_fn
    elif algo == "sac":
        from brax.training.agents.sac.networks import make_inference_fn
    else:
        from brax.training.agents.apg.networks import make_inference_fn
    normaliser = running_statistics.init_state(specs.Array((observation_size,), jnp.dtype("float32")))
    template = jax.tree.map(jnp.asarray, (normaliser, networks.policy_network.init(jax.random.PRNGKey(0))))
    return template, make_inference_fn(networks)


def _load_brax(run_dir: Path, record: dict[str, Any]) -> Policy:
    algo = record.get("algo")
    if algo not in RL_ALGOS:
        raise _config_error(run_dir, f"algo must be one of {RL_ALGOS}, got {algo!r}")
    try:
        task = canonical_name(record.get("task"))
        env_params = dict(_field(run_dir, record, "env_params", dict))
        env = diffenvs.make(task, **env_params)
    except ValueError as error:
        raise _config_error(run_dir, str(error)) from None
    action_scale = float(_field(run_dir, record, "action_scale", (int, float)))
    seed = _field(run_dir, record, "seed", int)
    num_test = _field(run_dir, record, "num_test", int)
    hyper = _field(run_dir, record, "hyperparameters", dict)
    observation_shape, action_shape = tuple(env.physics_shape()), tuple(env.action_shape())
    sizes = {"observation_size": math.prod(observation_shape), "action_size": math.prod(action_shape)}
    for name, size in sizes.items():
        if name in record and record[name] != size:
            raise _config_error(run_dir, f"{name} {record[name]!r} does not fit the environment ({size})")
    network_kwargs = {key: tuple(hyper[key]) for key in BRAX_NETWORK_KEYS[algo] if key in hyper}
    template, make_policy = brax_template(algo, sizes["observation_size"], sizes["action_size"],
                                          bool(hyper.get("normalize_observations", False)), network_kwargs)
    loaded = rundir.load_checkpoint(run_dir, {"normalizer": template[0], "policy": template[1]}, POLICY_FILE)
    if loaded is None:
        raise rundir.RunDirError(f"{run_dir} holds no {POLICY_FILE} (an RL run written before policies were "
                                 f"saved, or stopped before its first evaluation); {_TRAIN_AGAIN}")
    epoch, params = loaded
    return Policy(run_dir=run_dir, kind=algo, task=task, env_params=env_params, action_scale=action_scale,
                  params=(params["normalizer"], params["policy"]), config=dict(record), epoch=epoch, seed=seed,
                  num_test=num_test, precision="float32", observation_shape=observation_shape,
                  action_shape=action_shape, apply=brax_actions(make_policy, action_shape))
