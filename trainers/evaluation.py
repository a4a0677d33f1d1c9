"""One evaluator for every trained policy: the run's test loss and episode returns in Gymnasium.

:func:`evaluate_policy` scores a :class:`~trainers.policy.Policy` (gradient or RL, through the same
code) two ways:

* the test loss: the trainers' :func:`~trainers.rollout.rollout_loss` of :meth:`Policy.controller
  <trainers.policy.Policy.controller>` on the run's own test set (:func:`trainers.engine.run_test_states`
  for the run's seed and ``num_test``), the number a run records as ``test_loss`` in ``metrics.csv``;
* episode returns: the sum of rewards (minus the loss) of ``episodes`` episodes in
  :meth:`Policy.make_env <trainers.policy.Policy.make_env>`'s Gymnasium environment, acting with
  :meth:`Policy.act <trainers.policy.Policy.act>`, from starting states drawn by the environment
  seeded with ``seed``.

:func:`episode_frames` and :func:`write_animation` make an animation of episodes (GIF, or MP4 with
imageio's ffmpeg plugin).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import numpy as np

from trainers import rundir
from trainers.checks import check_count
from trainers.engine import as_precision, precision_scope, run_test_states
from trainers.policy import Policy
from trainers.rollout import Problem, rollout_loss

ANIMATION_FORMATS = (".gif", ".mp4")
FRAMES_PER_SECOND = 30


class Evaluation(NamedTuple):
    """What :func:`evaluate_policy` measured.

    test_loss: the trainers' batch-mean loss on the run's test set (``num_test`` states).
    recorded_test_loss: the ``test_loss`` the run recorded in ``metrics.csv`` for the policy's epoch
    (NaN when it has no such row, or ``num_test`` differs from the run's).
    mean_return, std_return: mean and standard deviation (ddof 0) of the episode returns (NaN for 0
    episodes); returns: each episode's return, shape (episodes,).
    """

    run_dir: Path
    kind: str
    epoch: int
    num_test: int
    test_loss: float
    recorded_test_loss: float
    episodes: int
    mean_return: float
    std_return: float
    returns: np.ndarray


def policy_test_loss(policy: Policy, num_test: int | None = None) -> float:
    """The trainers' loss of ``policy`` on the first ``num_test`` (default: the run's ``num_test``)
    states of the run's test set: :func:`~trainers.rollout.rollout_loss` of :meth:`Policy.controller`."""
    num_test = policy.num_test if num_test is None else check_count("num_test", num_test)
    with precision_scope(policy.precision):
        env = policy.make_functional_env()
        states = as_precision(run_test_states(env, policy.seed, num_test), policy.precision)
        problem = Problem(env, env.default_params, policy.controller())
        return float(jax.jit(lambda params: rollout_loss(problem, params, states))(policy.params))


def recorded_test_loss(policy: Policy) -> float:
    """The ``test_loss`` that ``metrics.csv`` of the policy's run records at the policy's epoch (NaN if
    none)."""
    rows = rundir.read_metrics(policy.run_dir)
    return next((float(row["test_loss"]) for row in rows if row["epoch"] == policy.epoch), math.nan)


def _run_episodes(policy: Policy, episodes: int, seed: int, render: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    env = policy.make_env(render_mode="rgb_array") if render else policy.make_env()
    returns, frames = [], []
    try:
        for episode in range(episodes):
            observation, _ = env.reset(seed=seed if episode == 0 else None)
            if render:
                frames.append(env.render())
            total, done = 0.0, False
            while not done:
                observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
                total += reward
                done = terminated or truncated
                if render:
                    frames.append(env.render())
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns, np.float64), frames


def episode_returns(policy: Policy, episodes: int = 10, seed: int = 0) -> np.ndarray:
    """Returns of ``episodes`` whole episodes (shape (episodes,)) in :meth:`Policy.make_env`'s environment,
    reset with ``seed`` before the first."""
    return _run_episodes(policy, check_count("episodes", episodes), _seed(seed), render=False)[0]


def episode_frames(policy: Policy, episodes: int = 1, seed: int = 0) -> list[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of ``episodes`` episodes as :func:`episode_returns` runs them: each
    episode's starting state and the state after every step (``num_steps + 1`` frames per episode)."""
    return _run_episodes(policy, check_count("episodes", episodes), _seed(seed), render=True)[1]


def _seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def evaluate_policy(policy: Policy, *, num_test: int | None = None, episodes: int = 10,
                    seed: int = 0) -> Evaluation:
    """Score a trained policy (gradient or RL) on the run's test set and in Gymnasium episodes.

    Args:
        policy: a :class:`~trainers.policy.Policy` (:func:`~trainers.policy.load_policy`).
        num_test: test states (the first ``num_test`` of the run's test set); None: the run's own
            ``num_test``, so that ``test_loss`` equals the run's recorded ``test_loss`` at the policy's
            epoch to float rounding.
        episodes: Gymnasium episodes for the returns (>= 0; 0 skips them).
        seed: the seed of the first ``reset`` of the Gymnasium environment (>= 0).

    Returns:
        An :class:`Evaluation`.

    Raises:
        ValueError: one line, for a bad ``num_test``, ``episodes`` or ``seed``.
    """
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a Policy (see load_policy), got {type(policy).__name__}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 0:
        raise ValueError(f"episodes must be an integer >= 0, got {episodes!r}")
    seed = _seed(seed)
    count = policy.num_test if num_test is None else check_count("num_test", num_test)
    loss = policy_test_loss(policy, count)
    recorded = recorded_test_loss(policy) if count == policy.num_test else math.nan
    returns = _run_episodes(policy, int(episodes), seed, render=False)[0] if episodes else np.zeros(0)
    mean, std = (float(np.mean(returns)), float(np.std(returns))) if len(returns) else (math.nan, math.nan)
    return Evaluation(policy.run_dir, policy.kind, policy.epoch, count, loss, recorded, int(episodes), mean, std,
                      returns)


def write_animation(path: str | Path, frames: Sequence[np.ndarray], fps: int = FRAMES_PER_SECOND) -> Path:
    """Write ``frames`` ((H, W, 3) uint8) as an animated GIF or an MP4 (by the suffix of ``path``) with
    imageio (the ``media`` extra; MP4 also needs imageio's ffmpeg plugin, ``imageio[ffmpeg]``).

    Raises:
        ValueError: one line: a suffix other than .gif or .mp4, no frames, or imageio (or, for MP4,
            ffmpeg) missing.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_FORMATS:
        raise ValueError(f"animation must be a path ending in {' or '.join(ANIMATION_FORMATS)}, got {str(path)!r}")
    if not frames:
        raise ValueError("frames must hold at least one frame")
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ValueError("animation: writing animations needs imageio; install the media extra "
                         "(pip install 'diffenvs[media]')") from None
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ValueError(f"animation: {path.name}: MP4 needs imageio's ffmpeg plugin (pip install "
                             f"'imageio[ffmpeg]'); or write a .gif") from None
        imageio.mimsave(path, list(frames), fps=fps)
    else:
        imageio.mimsave(path, list(frames), duration=1000.0 / fps, loop=0)
    return path
