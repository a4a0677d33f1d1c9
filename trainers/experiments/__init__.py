"""Experiment tooling: many runs and what they show.

* :mod:`~trainers.experiments.sweep`: grids of runs, grouped into vmapped programs, locally or on
  several devices; :mod:`~trainers.experiments.ray_executor` runs the same groups on a Ray cluster.
* :mod:`~trainers.experiments.archive`: compressed archives of finished runs (export and import).
* :mod:`~trainers.experiments.plotting`: the study's figures and summaries from run directories.
* :mod:`~trainers.experiments.baseline` and :mod:`~trainers.experiments.comparison`: the RL
  baselines (brax PPO, SAC, APG) and their comparison with gradient-based training on one objective.
* :mod:`~trainers.experiments.diagnostics`: why BPTT struggles (gradient norm against the horizon,
  Lyapunov exponents, per-episode gradient variance).

Training a single controller (the engine, the strategies, run directories) lives in :mod:`trainers`.
"""
