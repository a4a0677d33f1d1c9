"""The run directory: ``config.json``, ``metrics.csv`` and ``checkpoint.npz``, written as training goes.

Checkpoints are plain ``.npz`` archives of the flattened training state, loaded with
``allow_pickle=False`` and checked leaf by leaf against the expected structure: nothing is unpickled.
Every file is replaced atomically, so a run killed at any moment (even with SIGKILL) leaves the last
complete checkpoint and metrics behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.npz"
FAILED_FILE = "failed.json"
"""Written into a run directory of a sweep whose training hit a non-finite loss or state; the sweep then
skips it."""
METRIC_COLUMNS = ("epoch", "batch_loss", "train_loss", "test_loss", "update_norm_squared", "cosine",
                  "epoch_seconds")


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(run_dir / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


def read_config(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CONFIG_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _format_value(key: str, value: Any) -> Any:
    if key == "epoch" or (isinstance(value, (int, np.integer)) and not isinstance(value, bool)):
        return int(value)
    return repr(float(value))


def format_metrics(rows: list[dict[str, float]], columns: tuple[str, ...] = METRIC_COLUMNS) -> str:
    """CSV text (header and rows) of ``rows`` with ``columns`` (the trainers' columns by default)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format_value(key, row[key]) for key in columns})
    return buffer.getvalue()


def write_metrics(run_dir: Path, rows: list[dict[str, float]],
                  columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    _write_atomically(Path(run_dir) / METRICS_FILE, format_metrics(rows, columns).encode())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as dicts with the file's columns (epoch as int, the rest as float);
    [] if there is none."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rows.append({key: int(value) if key == "epoch" else float(value) for key, value in row.items()})
            except (TypeError, ValueError):
                break  # a line cut short by an interrupted write: the rows before it are complete
    return rows


def append_metrics(run_dir: Path, row: dict[str, float], columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Append one row to ``metrics.csv`` (a cut-short last line is dropped on resume)."""
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(format_metrics([row], columns).split("\n", 1)[1])


def save_checkpoint(run_dir: Path, epoch: int, state: Any) -> None:
    """Save a pytree of arrays as ``checkpoint.npz`` (leaves in flattening order) with its epoch."""
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{index:04d}": np.asarray(leaf) for index, leaf in enumerate(leaves)}
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.asarray(epoch, np.int64), **arrays)
    _write_atomically(Path(run_dir) / CHECKPOINT_FILE, buffer.getvalue())


def load_checkpoint(run_dir: Path, template: Any) -> tuple[int, Any] | None:
    """(epoch, state) from ``checkpoint.npz`` shaped like ``template``; None if there is none.

    Raises ValueError when the archive does not match the template's leaves (count, shape, dtype).
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    leaves, treedef = jax.tree.flatten(template)
    with np.load(path, allow_pickle=False) as archive:
        names = sorted(name for name in archive.files if name.startswith("leaf_"))
        if len(names) != len(leaves):
            raise ValueError(f"{path}: {len(names)} arrays, expected {len(leaves)} for this configuration")
        loaded = []
        for name, leaf in zip(names, leaves):
            array = archive[name]
            if array.shape != np.shape(leaf) or array.dtype != np.asarray(leaf).dtype:
                raise ValueError(f"{path}: {name} has shape {array.shape} and dtype {array.dtype}, expected "
                                 f"{np.shape(leaf)} and {np.asarray(leaf).dtype}")
            loaded.append(array)
        epoch = int(archive["epoch"])
    return epoch, jax.tree.unflatten(treedef, [jax.numpy.asarray(array) for array in loaded])


def all_finite(row: dict[str, float], keys: tuple[str, ...]) -> bool:
    return all(math.isfinite(row[key]) for key in keys)
