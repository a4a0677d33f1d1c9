"""Training a controller by backpropagating through rollouts: :func:`train`, one run.

A single run is a group of one in the engine (:mod:`trainers.engine`): the same compiled epoch and the
same loop as a sweep's groups. The Python loop over epochs only writes metrics and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import optax

import diffenvs
from trainers import rundir
from trainers.checks import check_finite_positive
from trainers.config import CLIP_MODES, OPTIMIZERS, PRECISIONS, TrainConfig, strategy_fields
from trainers.engine import (
    LOSS_COLUMNS, Member, NonFiniteError, TrainState, ZeroUpdateWarning, finite_leaves, initial_states,
    program_for, scan_epoch, train_members, tree_squared_norm, warn_if_zero_update,
)
from trainers.networks import Controller

__all__ = ["CLIP_MODES", "OPTIMIZERS", "PRECISIONS", "TrainConfig", "strategy_fields", "LOSS_COLUMNS",
           "NonFiniteError", "TrainState", "ZeroUpdateWarning", "finite_leaves", "initial_states",
           "scan_epoch", "tree_squared_norm", "warn_if_zero_update", "TrainResult", "train"]


class TrainResult(NamedTuple):
    """Final controller params, per-epoch metrics rows and the run directory (None if not written)."""

    params: Any
    metrics: list[dict[str, float]]
    run_dir: Path | None


def train(config: TrainConfig | None = None, *, out: str | Path | None = None,
          controller: Controller | None = None, optimizer: optax.GradientTransformation | None = None,
          quiet: bool = False, overwrite: bool = False, minutes: float | None = None,
          callback: Callable[[dict[str, float]], None] | None = None, wait: bool = False,
          **overrides: Any) -> TrainResult:
    """Train a controller; returns its params and per-epoch metrics.

    Args:
        config: the run (a :class:`TrainConfig`); None: ``TrainConfig(**overrides)``.
        out: the run directory to write, resume or continue; None trains in memory only.
        controller: replaces the study's network for the task (a :class:`~trainers.networks.Controller`).
        optimizer: any optax transformation; replaces the named optimizer and the clipping.
        quiet: no progress bar.
        overwrite: discard what ``out`` holds and train from the start.
        minutes: wall-time budget in minutes (> 0) of the run's training time, summed across resumes.
        callback: called with each epoch's metrics row after it is recorded; raising stops the run.
        wait: wait for another process that trains into ``out`` instead of raising.
        **overrides: :class:`TrainConfig` fields that replace those of ``config``.

    Returns:
        A :class:`TrainResult`: the final params, the metrics rows (epoch 0 is before training; the
            columns are ``epoch``, ``batch_loss``, ``train_loss``, ``test_loss``, ... as in
            ``metrics.csv``) and the run directory (None without ``out``).

    Raises:
        ValueError: a configuration value is invalid, or ``out`` holds a run with a different
            configuration (the message names the fields that differ).
        trainers.rundir.RunDirError: a file of ``out`` is damaged (a ``ValueError``; ``overwrite``
            starts afresh).
        trainers.rundir.RunDirBusyError: another process trains into ``out`` (without ``wait``).
        NonFiniteError: the loss or the training state became non-finite; the last good checkpoint
            is kept.

    ``config`` (or keyword overrides of :class:`TrainConfig`) defines the run. With ``out`` the run
    directory gets ``config.json``, ``metrics.csv`` (one row per epoch, epoch 0 = before training)
    and ``checkpoint.npz``; calling ``train`` again on an existing run directory with the same
    configuration resumes it from its last checkpoint and ends with exactly the parameters and metrics
    of an uninterrupted run. A configuration that differs only in ``epochs`` continues (or, with fewer
    epochs, leaves) the run: the metrics equal those of a run trained to that many epochs from the
    start. ``overwrite`` discards an existing run. ``callback(row)`` is called after each epoch is
    recorded (and checkpointed when due) with that epoch's metrics (``epoch``, the losses,
    ``update_norm_squared``, ``epoch_seconds`` and the strategy's metrics; ``cosine`` only for strategies
    that compute it, such as ``combined``, so that a logger never receives a NaN placeholder); raising
    from it stops the run. ``controller`` replaces the
    study's network; ``optimizer`` (any optax transformation) replaces the named optimizer and the
    clipping.

    While it trains, the process holds the lock of the run directory (:func:`trainers.rundir.lock`):
    another ``train`` on the same directory raises :class:`~trainers.rundir.RunDirBusyError` naming the
    process that holds it, or, with ``wait``, waits for it.

    ``minutes`` is a wall-time budget: training stops (with a checkpoint) after the first epoch at which
    the run's training time, the sum of its ``epoch_seconds`` across resumes (compilation excluded),
    reaches it, or at ``config.epochs``, whichever comes first. The epoch reached depends on the
    machine; the parameters at a given epoch do not (train with ``epochs`` set to it to reproduce them).

    A run alone and the same run in a sweep group (:mod:`trainers.experiments.sweep`) use the same program but
    different batch shapes, so their metrics agree to float rounding, not bit for bit.
    """
    if minutes is not None:
        check_finite_positive("minutes", minutes)
    config = dataclasses.replace(config, **overrides) if config is not None else TrainConfig(**overrides)
    fields = 2 if config.strategy == "combined" else 1
    program = program_for(config, fields, controller, optimizer)
    run_dir = Path(out) if out is not None else None
    record = None
    if run_dir is not None:
        custom = {"controller": "custom" if controller is not None else "study",
                  "optimizer_object": "custom" if optimizer is not None else None}
        record = {**config.to_dict(), **{k: v for k, v in custom.items() if v is not None},
                  "diffenvs_version": diffenvs.__version__}
    label = str(run_dir) if run_dir is not None else f"{program.problem.env.name} run"
    member = Member(config, run_dir, label, record)
    strategy_name = config.make_strategy().name
    with rundir.lock(run_dir, wait=wait) if run_dir is not None else contextlib.nullcontext():
        (outcome,) = train_members(program, [member], overwrite=overwrite, quiet=quiet, minutes=minutes,
                                   description=f"{program.problem.env.name} {strategy_name}",
                                   callback=None if callback is None else lambda index, row: callback(row))
    return TrainResult(outcome.params, outcome.rows, run_dir)

