"""RL baselines on the trainers' objective: brax PPO, SAC and APG on :class:`~diffenvs.brax_adapter.BraxEnv`.

``train_baseline`` (and the ``diffenvs-baseline`` command) trains with brax's own, unmodified
``ppo.train``, ``sac.train`` or ``apg.train`` and writes the trainers' run-directory format, so that
``diffenvs-plot`` overlays RL and gradient runs.

Evaluation. The test set is the trainers' for the same seed: ``PRNGKey(seed)`` split into
(train, test, init, strategy) keys and ``trainers.training.initial_states(env, test_key, num_test)``.
brax's evaluator runs on an evaluation environment that is the same ``BraxEnv`` started from exactly
these states (its ``reset`` ignores brax's keys), with ``deterministic_eval=True``: the policy's mean
action (``tanh`` of the Gaussian mean), mapped to the control ``action_scale * clip(action, -1, 1)``.
The negated mean episode return of that evaluation is the batch-mean episode loss, i.e. the trainers'
``rollout_loss`` of the controller ``action_scale * mean_action(observation)`` on the test states
(tests/test_baseline.py checks it against an independent ``rollout_loss``). ``train_loss`` is NaN:
brax's trainers expose a single evaluator.

Budgets. ``num_timesteps`` (environment steps) and/or ``time_budget_seconds``. A time budget is
implemented without restarts (brax's trainers cannot be checkpointed and resumed): brax is asked for an
effectively unlimited number of steps and training stops at the first evaluation at which
``wall_seconds`` has reached the budget (so it overshoots by at most one evaluation interval,
``eval_every`` environment steps). ``wall_seconds`` is the wall time since brax's ``train`` was called,
including its set-up and compilation, excluding the test-set evaluations (recorded separately as
``eval_seconds``). A run is not resumable.

Defaults (:data:`DEFAULTS`, per algorithm, with per-task overrides in :data:`TASK_DEFAULTS`). Starting
point: brax's own example settings, with environment and batch counts scaled down for a 2-core CPU,
networks of the study's width (two hidden layers of 100; 128 for SAC), observations normalised,
episode_length = num_steps (the trainers' horizon), action_repeat 1:

* PPO: 64 environments, unroll 20, batch 64 x 4 minibatches, 4 updates per batch, Adam 3e-4,
  discount 0.99 (0.995 for the cart-pole, whose only reward is at the last of 100 steps), entropy
  1e-3, reward scaling 1 (10 for guidance, whose per-step losses are about 0.1);
* SAC: 64 environments, batch 256, 8 gradient updates per actor step, Adam 3e-4, discount 0.99,
  reward scaling 1, replay buffer 2^18 transitions, 4096 transitions before learning starts;
* APG: 16 environments, horizon = num_steps (whole-episode backpropagation, like ``bptt``), Adam 3e-4
  (brax clips by value 1) without brax's learning-rate decay (which shrinks it 0.997x per update).

Short trials then checked throughput and that the test loss falls (2026-11-23, 2 CPU cores shared
with other work, seed 0, 128 test states, 1.5 minutes of training each; test loss before -> after):
PPO cart-pole 1.73 -> 1.42 (Adam 1e-3: 1.48), guidance 2.43 -> 1.87, quantum 125 -> 34; SAC
cart-pole 1.64 -> 1.95 (no progress yet; 4 updates per step with 128 environments: 1.99), guidance
2.56 -> 2.27 (reward scaling 10 instead of 1: 3.54, hence 1), quantum 114 -> 39; APG cart-pole 1.97
-> 1.31 (Adam 1e-3: 1.30), guidance 5.24 -> 1.46 (with Adam 1e-3), quantum 128 -> 105 (best 35, unstable; Adam 1e-3: best 59,
103 at the end). The trials used action scales 10 (cart-pole) and 5 (guidance), before the adapter's
defaults were raised to 40 and 10 (PPO cart-pole at scale 40: 1.57 -> 1.56). These trials are not a hyperparameter search and say nothing about final
performance; every value can be changed (``hyperparameters``, ``--set NAME=VALUE``) and the values
used are recorded in ``config.json``.

brax's training wrappers restart every training environment from its own first initial state
(``AutoResetWrapper``), so an RL run trains on ``num_envs`` initial states, like the trainers' fixed
training set; the test states are never trained on.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import numpy as np

import diffenvs
from diffenvs.core import EnvState
from diffenvs.registry import ALIASES, canonical_name
from trainers import rundir
from trainers.checks import check_count, check_finite_positive
from trainers.cli import CommandParser, HelpFormatter
from trainers.config import run_name
from trainers.engine import run_test_states
from trainers.policy import (
    BRAX_NETWORK_KEYS, POLICY_FILE, brax_actions, brax_network_factory, save_brax_policy, scaled_controls,
)

ALGOS = ("ppo", "sac", "apg")
TASKS = tuple(ALIASES)
BASELINE_COLUMNS = ("epoch", "env_steps", "wall_seconds", "eval_seconds", "train_loss", "test_loss")
"""Columns of a baseline run's ``metrics.csv`` (epoch = evaluation index, 0 = before training)."""

_MANAGED = ("environment", "num_timesteps", "policy_updates", "episode_length", "num_evals", "eval_env",
            "num_eval_envs", "wrap_env", "wrap_env_fn", "progress_fn", "policy_params_fn", "seed",
            "deterministic_eval", "network_factory", "action_repeat", "randomization_fn", "run_evals")
"""brax arguments that train_baseline sets itself."""

DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": dict(num_envs=64, unroll_length=20, batch_size=64, num_minibatches=4, num_updates_per_batch=4,
                learning_rate=3e-4, entropy_cost=1e-3, discounting=0.99, reward_scaling=1.0,
                normalize_observations=True, policy_hidden_layer_sizes=(100, 100),
                value_hidden_layer_sizes=(100, 100), eval_every=200_000, num_timesteps=2_000_000),
    "sac": dict(num_envs=64, batch_size=256, grad_updates_per_step=8, learning_rate=3e-4, discounting=0.99,
                reward_scaling=1.0, normalize_observations=True, min_replay_size=4096,
                max_replay_size=None, hidden_layer_sizes=(128, 128), eval_every=20_000,
                num_timesteps=200_000),
    "apg": dict(num_envs=16, horizon_length=None, learning_rate=3e-4, use_schedule=False,
                normalize_observations=True, hidden_layer_sizes=(100, 100), eval_every=200_000,
                num_timesteps=2_000_000),
}
"""Default hyperparameters per algorithm (brax ``train`` arguments, network sizes, and the evaluation
interval ``eval_every`` and step budget ``num_timesteps`` in environment steps). ``horizon_length``
None means num_steps; SAC's ``max_replay_size`` None means the whole run (``num_timesteps`` and the few steps brax
takes past it), or
:data:`TIME_BUDGET_REPLAY_SIZE` transitions for a run stopped by a time budget."""

TIME_BUDGET_REPLAY_SIZE = 2 ** 20
"""SAC's replay buffer, in transitions, for a run stopped by a time budget (its steps are not known in
advance). brax's buffer is a queue that, once full, moves all of its contents on every insertion,
which cut SAC's steps per second to 0.4-0.6 of the rate before; so by default it holds the whole run."""

TASK_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("ppo", "CartPole"): dict(discounting=0.995),
    ("ppo", "GuidanceByRepulsion"): dict(reward_scaling=10.0),
}
"""Per (algorithm, canonical task) overrides of :data:`DEFAULTS`."""

_UNLIMITED_EVALUATIONS = 10 ** 6


def _brax_train(algo: str) -> Callable[..., Any]:
    from diffenvs.brax_adapter import import_brax_quietly
    import_brax_quietly()
    if algo == "ppo":
        from brax.training.agents.ppo.train import train
    elif algo == "sac":
        from brax.training.agents.sac.train import train
    else:
        from brax.training.agents.apg.train import train
    return train


def check_algo(algo: Any) -> str:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    return algo


def default_hyperparameters(algo: str, task: str) -> dict[str, Any]:
    """The default hyperparameters for ``algo`` on ``task`` (a copy; see :data:`DEFAULTS`)."""
    check_algo(algo)
    return {**DEFAULTS[algo], **TASK_DEFAULTS.get((algo, canonical_name(task)), {})}


def _allowed_hyperparameters(algo: str) -> set[str]:
    signature = inspect.signature(_brax_train(algo)).parameters
    return (set(signature) - set(_MANAGED)) | set(BRAX_NETWORK_KEYS[algo]) | {"eval_every", "num_timesteps"}


class BaselineResult(NamedTuple):
    """brax's ``make_policy`` and final params (None when a time budget stopped the run), the metrics
    rows and the run directory (None if not written)."""

    make_policy: Callable[..., Any] | None
    params: Any
    metrics: list[dict[str, float]]
    run_dir: Path | None


class _BudgetReached(Exception):
    """Raised from brax's progress callback to stop training at the time budget."""


def short_task_name(task: str) -> str:
    """The trainers' command-line task name (cartpole, guidance, quantum) for any environment name."""
    canonical = canonical_name(task)
    return next(alias for alias, name in ALIASES.items() if name == canonical)


def evaluation_states(task: str, env_params: dict | None, seed: int, num_test: int) -> EnvState:
    """The trainers' test initial states for ``seed``: ``initial_states(env, test_key, num_test)``."""
    return run_test_states(diffenvs.make(task, **(env_params or {})), seed, num_test)


def _test_set_env_class():
    from brax.envs.base import Env

    class TestSetEnv(Env):
        """A batch of ``BraxEnv``s whose ``reset`` returns fixed states (brax's keys only give the count)."""

        def __init__(self, env: Any, states: EnvState):
            self.env, self.states = env, states
            self.count = int(states.physics.shape[0])

        def reset(self, rng: jax.Array) -> Any:
            if rng.shape[0] != self.count:
                raise ValueError(f"rng must hold {self.count} keys (one per test state), got shape {rng.shape}")
            return jax.vmap(self.env.reset_to)(self.states)

        def step(self, state: Any, action: jax.Array) -> Any:
            return jax.vmap(self.env.step)(state, action)

        @property
        def observation_size(self) -> int:
            return self.env.observation_size

        @property
        def action_size(self) -> int:
            return self.env.action_size

        @property
        def backend(self) -> str:
            return self.env.backend

    return TestSetEnv


def train_baseline(task: str, algo: str, *, env_params: dict | None = None, action_scale: float | None = None,
                   seed: int = 0, num_test: int = 256, num_timesteps: int | None = None,
                   time_budget_seconds: float | None = None, eval_every: int | None = None,
                   hyperparameters: dict[str, Any] | None = None, out: str | Path | None = None,
                   overwrite: bool = False, quiet: bool = False) -> BaselineResult:
    """Train ``algo`` (ppo, sac, apg) with brax on ``task`` and evaluate it on the trainers' test set.

    ``env_params`` as for the trainers (e.g. {"num_poles": 2}); ``action_scale`` None takes the
    adapter's default. Budgets: ``num_timesteps`` environment steps (default per algorithm) and/or
    ``time_budget_seconds`` of training wall time (with only a time budget, the step budget is
    unlimited). The deterministic policy is evaluated before training and every ``eval_every``
    environment steps. ``hyperparameters`` override :func:`default_hyperparameters` (brax ``train``
    arguments and network sizes). With ``out`` the run directory gets ``config.json``,
    ``metrics.csv`` (columns :data:`BASELINE_COLUMNS`) and, rewritten at every evaluation,
    ``policy.npz``: the params of the last evaluation, whose test loss is the last row (load it with
    :func:`trainers.policy.load_policy`); an existing run there is refused unless ``overwrite``. Runs are not resumable. Invalid input raises ValueError before anything compiles.
    """
    from diffenvs.brax_adapter import BraxEnv, check_action_scale

    check_algo(algo)
    short = short_task_name(task)
    env_params = dict(env_params or {})
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    num_test = check_count("num_test", num_test)
    hyper = default_hyperparameters(algo, short)
    overrides = dict(hyperparameters or {})
    unknown = sorted(set(overrides) - _allowed_hyperparameters(algo))
    if unknown:
        raise ValueError(f"hyperparameters: unknown name(s) {unknown} for {algo}; allowed: "
                         f"{sorted(_allowed_hyperparameters(algo))}")
    hyper.update(overrides)
    if num_timesteps is not None:
        num_timesteps = check_count("num_timesteps", num_timesteps)
    if time_budget_seconds is not None:
        check_finite_positive("time_budget_seconds", time_budget_seconds)
    eval_every = check_count("eval_every", eval_every if eval_every is not None else hyper["eval_every"])
    if num_timesteps is None and time_budget_seconds is None:
        num_timesteps = check_count("num_timesteps", hyper["num_timesteps"])
    if action_scale is not None:
        action_scale = check_action_scale(action_scale)
    env = BraxEnv(short, action_scale=action_scale, **env_params)
    num_steps = env.num_steps
    for name in ("num_envs", "batch_size", "unroll_length", "num_minibatches", "grad_updates_per_step"):
        if name in hyper:
            check_count(name, hyper[name])

    run_dir = Path(out) if out is not None else None
    if run_dir is not None and not overwrite and any(
            (run_dir / name).exists() for name in (rundir.CONFIG_FILE, rundir.METRICS_FILE)):
        raise ValueError(f"out: {run_dir} already holds a run (baseline runs are not resumable); choose "
                         f"another directory or pass overwrite=True (--overwrite)")

    # --- the brax call ---------------------------------------------------------------------------
    steps_limit = num_timesteps if num_timesteps is not None else eval_every * _UNLIMITED_EVALUATIONS
    num_evals = -(-steps_limit // eval_every) + 1
    network_kwargs = {key: tuple(hyper.pop(key)) for key in BRAX_NETWORK_KEYS[algo] if key in hyper}
    hyper.pop("eval_every", None)
    hyper.pop("num_timesteps", None)
    brax_kwargs = dict(hyper)
    steps_per_evaluation = None
    if algo == "apg":
        horizon = brax_kwargs.get("horizon_length") or num_steps
        brax_kwargs["horizon_length"] = horizon
        steps_per_update = brax_kwargs["num_envs"] * horizon
        policy_updates = max(-(-steps_limit // steps_per_update), 1)
        num_evals = min(num_evals, policy_updates + 1)
        updates_per_epoch = int(np.round(policy_updates / max(num_evals - 1, 1)))
        if updates_per_epoch < 1:
            raise ValueError(f"num_timesteps = {steps_limit} is too small for apg with num_envs "
                             f"{brax_kwargs['num_envs']} and horizon_length {horizon}")
        brax_kwargs["policy_updates"] = policy_updates
        steps_per_evaluation = updates_per_epoch * steps_per_update
    else:
        brax_kwargs["num_timesteps"] = steps_limit
    if algo == "sac" and brax_kwargs.get("min_replay_size", 0) >= steps_limit:
        brax_kwargs["min_replay_size"] = 0
    if algo == "sac":
        replay = brax_kwargs.get("max_replay_size")
        if replay is None:      # brax runs up to one actor step per evaluation (and prefill) past num_timesteps
            replay = (num_timesteps + (num_evals + 1) * brax_kwargs["num_envs"] if num_timesteps is not None
                      else TIME_BUDGET_REPLAY_SIZE)
        brax_kwargs["max_replay_size"] = check_count("max_replay_size", replay)

    states = evaluation_states(short, env_params, seed, num_test)
    TestSetEnv = _test_set_env_class()
    eval_env = TestSetEnv(env, states)

    def wrap_env_fn(environment: Any, episode_length: int, action_repeat: int = 1,
                    randomization_fn: Any = None) -> Any:
        from brax.envs.wrappers.training import EpisodeWrapper, wrap
        if isinstance(environment, TestSetEnv):
            return EpisodeWrapper(environment, episode_length, action_repeat)
        return wrap(environment, episode_length=episode_length, action_repeat=action_repeat,
                    randomization_fn=randomization_fn)

    record = {
        "task": short, "env_params": env_params, "strategy": algo, "algo": algo, "clip": "none",
        "action_scale": env.action_scale, "seed": int(seed), "num_test": num_test,
        "num_timesteps": num_timesteps, "time_budget_seconds": time_budget_seconds, "eval_every": eval_every,
        "episode_length": num_steps, "observation_size": env.observation_size, "action_size": env.action_size,
        "hyperparameters": {**{k: v for k, v in brax_kwargs.items() if k not in ("policy_updates",)},
                            **{k: list(v) for k, v in network_kwargs.items()}},
        "resumable": False, "diffenvs_version": diffenvs.__version__, "brax_version": _brax_version(),
    }
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in (rundir.METRICS_FILE, POLICY_FILE):
            (run_dir / name).unlink(missing_ok=True)
        rundir.write_config(run_dir, json.loads(json.dumps(record)))

    rows: list[dict[str, float]] = []
    clock = {"start": None, "own": 0.0}

    def progress_fn(step: int, metrics: dict[str, Any]) -> None:
        started = time.perf_counter()
        epoch = len(rows)
        env_steps = epoch * steps_per_evaluation if algo == "apg" else int(step)
        eval_seconds = float(metrics.get("eval/walltime", math.nan))
        wall = started - clock["start"] - eval_seconds - clock["own"]
        row = {"epoch": epoch, "env_steps": int(env_steps), "wall_seconds": wall, "eval_seconds": eval_seconds,
               "train_loss": math.nan, "test_loss": -float(metrics["eval/episode_reward"])}
        rows.append(row)
        if run_dir is not None:
            if epoch == 0:
                rundir.write_metrics(run_dir, rows, BASELINE_COLUMNS)
            else:
                rundir.append_metrics(run_dir, row, BASELINE_COLUMNS)
            if evaluated:                         # the params this evaluation ran, with its index
                save_brax_policy(run_dir, epoch, evaluated[-1])
        if not quiet:
            print(f"evaluation {epoch}: {env_steps} env steps, {wall:.1f} s, test loss {row['test_loss']:.4g}",
                  flush=True)
        clock["own"] += time.perf_counter() - started
        if time_budget_seconds is not None and wall >= time_budget_seconds:
            raise _BudgetReached

    train_fn = _brax_train(algo)
    network_factory = functools.partial(brax_network_factory(algo), **network_kwargs)
    evaluated: list[Any] = []
    clock["start"] = time.perf_counter()
    try:
        with _recording_evaluations(evaluated):
            make_policy, params, _ = train_fn(
                environment=env, episode_length=num_steps, num_evals=num_evals, eval_env=eval_env,
                num_eval_envs=num_test, wrap_env_fn=wrap_env_fn, deterministic_eval=True, seed=int(seed),
                network_factory=network_factory, progress_fn=progress_fn, **brax_kwargs)
    except _BudgetReached:
        make_policy, params = None, None
    return BaselineResult(make_policy, params, rows, run_dir)


@contextlib.contextmanager
def _recording_evaluations(evaluated: list[Any]) -> Iterator[None]:
    """While it is active, every evaluation of brax's evaluator (``brax.training.acting.Evaluator``,
    which PPO, SAC and APG build inside ``train``) first appends the params it evaluates, as numpy
    ``(normaliser, policy params)``, to ``evaluated``; brax's ``progress_fn`` follows each evaluation.

    brax's PPO passes the same params to its ``policy_params_fn`` callback, but SAC and APG have no such
    callback, so the evaluator class is replaced for the duration of the ``with`` block (in this process;
    do not train two brax baselines in threads of one process at once).
    """
    from brax.training import acting
    original = acting.Evaluator

    class RecordingEvaluator(original):
        def run_evaluation(self, policy_params: Any, training_metrics: Any, *args: Any, **kwargs: Any) -> Any:
            evaluated[:] = [jax.tree.map(np.asarray, (policy_params[0], policy_params[1]))]
            return super().run_evaluation(policy_params, training_metrics, *args, **kwargs)

    acting.Evaluator = RecordingEvaluator
    try:
        yield
    finally:
        acting.Evaluator = original


def _brax_version() -> str:
    from importlib.metadata import version
    return version("brax")


def policy_controller(make_policy: Callable[..., Any], action_scale: float, action_shape: tuple[int, ...]):
    """The brax policy's deterministic action as a trainers ``Controller`` (params = brax's params):
    ``action_scale * clip(mean_action(flattened observation), -1, 1)`` reshaped to ``action_shape``."""
    from trainers.networks import Controller
    return Controller(init=lambda key: None,
                      apply=scaled_controls(brax_actions(make_policy, action_shape), action_scale))


# --- command line ----------------------------------------------------------------------------------

def _per_algorithm(name: str) -> str:
    return ", ".join(f"{DEFAULTS[algo][name]:g} for {algo}" for algo in ALGOS)


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="diffenvs-baseline",
        description="Train an RL baseline (brax PPO, SAC or APG, unmodified) on a diffenvs task and evaluate "
                    "its deterministic policy on the trainers' test set for the same seed with the trainers' "
                    "loss, writing a run directory (config.json, metrics.csv with env_steps and wall_seconds "
                    "per evaluation) that diffenvs-plot overlays with gradient runs. A baseline run is NOT "
                    "resumable (brax's trainers keep their state in memory): an interrupted run must be "
                    "restarted, and an existing run directory is refused without --overwrite.",
        epilog="Defaults per algorithm and task: see trainers/experiments/baseline.py and docs/rl-comparison.md. "
               "Example: diffenvs-baseline cartpole --algo ppo --poles 2 --minutes 20 --out runs/p2-ppo",
        formatter_class=HelpFormatter)
    parser.add_argument("task", choices=TASKS, help="the control problem")
    parser.add_argument("--algo", required=True, choices=ALGOS, help="RL algorithm (required)")
    level = parser.add_argument_group("complexity and environment (as diffenvs-train)")
    level.add_argument("--poles", type=int, default=None, help="cart-pole: number of poles (default: 1)")
    level.add_argument("--rc", type=float, default=None, help="guidance: control regularisation (default: 0.01)")
    level.add_argument("--drivers", type=int, default=None, help="guidance: number of drivers (default: 2)")
    level.add_argument("--evaders", type=int, default=None, help="guidance: number of evaders (default: 4)")
    level.add_argument("--target", type=int, default=None, help="quantum: target eigenstate (default: 3)")
    level.add_argument("--loss-mode", choices=("final", "continuous"), default=None,
                       help="cart-pole: score only the final state or every step (default: final)")
    level.add_argument("--action-scale", type=float, default=None,
                       help="control that an action of 1 means (default: the adapter's per-task scale, "
                            "diffenvs.brax_adapter.DEFAULT_ACTION_SCALE)")
    budget = parser.add_argument_group("budget and evaluation")
    budget.add_argument("--timesteps", type=int, default=None,
                        help="environment steps (default: per algorithm, " + _per_algorithm("num_timesteps")
                             + "; unlimited when only --minutes is given)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="training wall time; stops at the first evaluation after it (default: no limit)")
    budget.add_argument("--eval-every", type=int, default=None,
                        help="environment steps between evaluations (default: per algorithm, "
                             + _per_algorithm("eval_every") + ")")
    budget.add_argument("--test-size", type=int, default=256, help="test initial states (as diffenvs-train)")
    budget.add_argument("--seed", type=int, default=0, help="seed of brax and of the test set")
    budget.add_argument("--set", action="append", default=None, metavar="NAME=VALUE",
                        help="override a hyperparameter (a brax train argument or a network size), "
                             "e.g. --set learning_rate=1e-3 --set policy_hidden_layer_sizes=[64,64]")
    run = parser.add_argument_group("run directory")
    run.add_argument("--out", type=Path, default=None,
                     help="run directory (default: runs/TASK-LEVEL-ALGO-seedSEED, e.g. runs/cartpole-poles2-ppo-seed0)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    run.add_argument("--no-plot", action="store_true", help="do not write test_loss.png")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        name, separator, text = item.partition("=")
        if not separator or not name:
            raise ValueError(f"--set must be NAME=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        overrides[name.strip()] = value
    return overrides


BASELINE_FLAGS = {"out": "--out", "num_test": "--test-size", "num_timesteps": "--timesteps", "eval_every": "--eval-every",
                  "time_budget_seconds": "--minutes", "action_scale": "--action-scale", "seed": "--seed",
                  "hyperparameters": "--set", "algo": "--algo", "num_envs": "--set num_envs",
                  "batch_size": "--set batch_size", "unroll_length": "--set unroll_length",
                  "num_minibatches": "--set num_minibatches", "grad_updates_per_step": "--set grad_updates_per_step"}
"""Argument names of :func:`train_baseline` and the flags of ``diffenvs-baseline`` that set them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``diffenvs-baseline``."""
    from trainers.cli import ENV_FLAGS, LEVEL_FLAGS, _check_out_path, _env_params, flag_message

    from trainers.plugins import add_import_flag, import_modules

    import_modules(argv, "diffenvs-baseline")
    parser = _parser()
    add_import_flag(parser)
    args = parser.parse_args(argv)
    flags = {**ENV_FLAGS, **BASELINE_FLAGS}
    try:
        env_params = _env_params(args)
        env = diffenvs.make(args.task, **env_params)
        if args.timesteps is not None:
            check_count("--timesteps", args.timesteps)
        if args.minutes is not None:
            check_finite_positive("--minutes", args.minutes)
        overrides = _parse_overrides(args.set or [])
    except ValueError as error:
        parser.error(flag_message(str(error), flags))
    _, parameter, _ = LEVEL_FLAGS[args.task]
    level = getattr(env.default_params, parameter)
    out = args.out or Path("runs") / run_name({"task": args.task, "env_params": {parameter: level},
                                               "algo": args.algo, "seed": args.seed})
    problem = _check_out_path(out)
    if problem:
        parser.error(problem)
    if not args.quiet:
        print(f"diffenvs-baseline: {args.task} {env_params or ''} algo={args.algo} -> {out} "
              f"(not resumable)", flush=True)
    try:
        result = train_baseline(
            args.task, args.algo, env_params=env_params, action_scale=args.action_scale, seed=args.seed,
            num_test=args.test_size, num_timesteps=args.timesteps,
            time_budget_seconds=None if args.minutes is None else 60.0 * args.minutes,
            eval_every=args.eval_every, hyperparameters=overrides, out=out, overwrite=args.overwrite,
            quiet=args.quiet)
    except ValueError as error:
        parser.error(flag_message(str(error), flags))
    except TypeError as error:
        if not overrides:
            raise
        parser.error(f"--set: brax's {args.algo} training rejected the hyperparameters {overrides}: {error}")
    except OSError as error:
        parser.error(f"--out: cannot write the run directory {out}: {error.strerror or error}")
    except KeyboardInterrupt:
        print(f"\ndiffenvs-baseline: interrupted; {out} holds the evaluations so far (baseline runs are not "
              f"resumable: start again with --overwrite)", file=sys.stderr)
        return 130
    rows = result.metrics
    losses = [row["test_loss"] for row in rows]
    print(f"diffenvs-baseline: {len(rows) - 1} evaluations after training, {rows[-1]['env_steps']} env steps, "
          f"{rows[-1]['wall_seconds']:.1f} s: test loss {losses[0]:.4g} before training, {losses[-1]:.4g} at the "
          f"end, best {min(losses):.4g}; run directory {out}")
    if not args.no_plot:
        from trainers.experiments.plotting import plot_runs
        figure = plot_runs([out], out / "test_loss.png")
        print(f"plot: {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
