"""The run directory: ``config.json``, ``metrics.csv`` and ``checkpoint.npz``, written as training goes.

Checkpoints are plain ``.npz`` archives of the training state, one array per leaf named by its path in
the state (``params/params/Dense_0/kernel``, ``optimizer_state/0/mu/...``), loaded with
``allow_pickle=False`` and checked leaf by leaf against the expected structure: nothing is unpickled.
Every file is replaced atomically, so a run killed at any moment (even with SIGKILL) leaves the last
complete checkpoint and metrics behind; only the last line of ``metrics.csv`` (appended, not
replaced) can be cut short, and readers drop it.

A damaged file (cut short, garbage, rows of two writers interleaved, arrays of another
configuration) raises :class:`RunDirError`, a ``ValueError`` whose message is one line naming the
file and the way out.

Sharing: a process that writes a run directory holds :func:`lock` on it, an exclusive
``fcntl.flock`` on ``run_dir/.lock``. The OS drops the lock when the process ends, however it ends
(SIGKILL included), so no stale lock is ever left behind; the file itself stays (it is never
deleted, so there is no race between deleting and locking it) and holds the last holder's pid, host
and command line. Another process asking for the same directory gets :class:`RunDirBusyError`
naming the holder (or waits, ``wait=True``); :func:`try_lock` and :func:`lock_all` take locks
without waiting, the latter for several directories at once, all or none. The locks are advisory:
they protect writers that take them (``train``, the sweeps), not readers, which need none since every
file but the appended metrics is replaced atomically. Do not delete a run directory that is in use.
On NFS, Linux clients emulate ``flock`` with whole-file byte-range locks that the server arbitrates
(see flock(2)); this module is tested on local file systems only. The holder's host is named in case.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import shlex
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
CHECKPOINT_FILE = "checkpoint.npz"
FAILED_FILE = "failed.json"
"""Written into a run directory of a sweep whose training hit a non-finite loss or state; the sweep then
skips it."""
LOCK_FILE = ".lock"
METRIC_COLUMNS = ("epoch", "batch_loss", "train_loss", "test_loss", "update_norm_squared", "cosine",
                  "epoch_seconds")
POLL_SECONDS = 0.1
"""Seconds between two attempts of :func:`lock` with ``wait=True``."""

_CONFIG_REMEDY = "restore it from a backup, or delete the run directory to start the run afresh"
_METRICS_REMEDY = (f"delete it and {CHECKPOINT_FILE} to restart the run from epoch 0, or restore it from a "
                   "backup")
_CHECKPOINT_REMEDY = "delete it to restart the run from epoch 0, or restore it from a backup"


class RunDirError(ValueError):
    """A file of a run directory is damaged or does not fit; the message is one line naming the file
    and the way out."""


class RunDirBusyError(RuntimeError):
    """The run directory is locked by another process (or already by the calling thread); the message
    is one line naming the directory and the holder."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _damaged(path: Path, reason: str, remedy: str) -> RunDirError:
    return RunDirError(_one_line(f"{path} is damaged ({reason}); {remedy}", 600))


# ------------------------------------------------------------------------------------------ locking

class Lock:
    """An exclusive lock on a run directory (``fcntl.flock(LOCK_EX)`` on ``run_dir/.lock``), held
    until :meth:`release`, the end of its ``with`` block or the end of the process (dropping the
    object does not release it). Made by :func:`lock`, :func:`try_lock` and :func:`lock_all`.

    A forked child does not inherit it (the child's copy of the descriptor is closed at fork), so a
    lock never outlives the process that took it.
    """

    def __init__(self, run_dir: Path, descriptor: int, key: tuple[int, int]) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_FILE
        self._descriptor = descriptor
        self._key = key
        self._thread = threading.get_ident()

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._descriptor >= 0

    def release(self) -> None:
        """Release the lock (the lock file stays, emptied); does nothing if already released."""
        with _registry_guard:
            descriptor, self._descriptor = self._descriptor, -1
            if descriptor < 0:
                return
            if _held.get(self._key) is self:
                del _held[self._key]
        try:
            os.ftruncate(descriptor, 0)           # while still holding it: "free" reads as an empty file
        except OSError:
            pass
        try:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            os.close(descriptor)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lock({str(self.run_dir)!r}, {'held' if self.held else 'released'})"


_registry_guard = threading.Lock()
_held: dict[tuple[int, int], Lock] = {}          # (device, inode) of the lock file -> the lock held on it


def _forget_locks_in_child() -> None:
    """After fork: the child closes its copies of the lock descriptors (the parent keeps the locks)."""
    global _registry_guard
    _registry_guard = threading.Lock()
    for held in list(_held.values()):
        descriptor, held._descriptor = held._descriptor, -1
        if descriptor >= 0:
            try:
                os.close(descriptor)
            except OSError:
                pass
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _command_line() -> str:
    arguments = list(sys.argv) or [sys.executable]
    arguments[0] = os.path.basename(arguments[0]) or arguments[0]
    return _one_line(shlex.join(arguments), 200)


def _holder_details() -> bytes:
    details = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
               "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    return (json.dumps(details) + "\n").encode()


def _read_details(path: Path) -> dict[str, Any] | None:
    try:
        details = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(details, dict) or not isinstance(details.get("pid"), int):
        return None
    return details


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe_holder(path: Path) -> str:
    """Who holds the lock at ``path``, from the details it wrote (one line)."""
    details = None
    for _ in range(10):                           # a new holder writes its details just after locking
        details = _read_details(path)
        if details is not None and (details.get("host") != socket.gethostname() or _alive(details["pid"])):
            break
        details = None
        time.sleep(0.02)
    if details is None:
        return "another process (which has not written its details yet)"
    command = f" ({_one_line(details['command'], 120)})" if details.get("command") else ""
    since = f" since {details['since']}" if details.get("since") else ""
    if details["pid"] == os.getpid() and details.get("host") == socket.gethostname():
        return f"another thread of this process {details['pid']}{command}{since}"
    return f"process {details['pid']} on host {details.get('host', '?')}{command}{since}"


def _attempt(run_dir: Path) -> Lock | None:
    """One non-blocking attempt: the lock, or None when another process or thread holds it."""
    path = run_dir / LOCK_FILE
    for _ in range(100):                          # retried only if the lock file is replaced meanwhile
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise RunDirError(_one_line(f"{path}: cannot create the lock file ({error.strerror}); run_dir must "
                                        f"be a writable directory")) from None
        try:
            status = os.fstat(descriptor)
            key = (status.st_dev, status.st_ino)
            with _registry_guard:
                mine = _held.get(key)
            if mine is not None and mine._thread == threading.get_ident():
                raise RunDirBusyError(_one_line(
                    f"{run_dir} is already locked by this thread (process {os.getpid()}); release that lock "
                    f"first (a second lock on it would wait for itself forever)"))
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                return None
            except OSError as error:
                raise RunDirError(_one_line(f"{path}: cannot be locked ({error.strerror}); the file system of "
                                            f"{run_dir} must support flock")) from None
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != key:
                os.close(descriptor)              # the file was deleted or replaced after we opened it
                continue
        except BaseException:
            try:
                os.close(descriptor)
            except OSError:
                pass
            raise
        acquired = Lock(run_dir, descriptor, key)
        with _registry_guard:
            _held[key] = acquired
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, _holder_details(), 0)
        except OSError:                           # the details are a courtesy; the lock is what counts
            pass
        return acquired
    raise RunDirError(f"{path}: the lock file keeps being replaced; is something deleting {run_dir}?")


def _check_run_dir(run_dir: Any) -> Path:
    if not isinstance(run_dir, (str, os.PathLike)):
        raise ValueError(f"run_dir must be a path (str or os.PathLike), got {run_dir!r}")
    return Path(run_dir)


def lock(run_dir: str | Path, *, wait: bool = False, timeout: float | None = None) -> Lock:
    """Lock ``run_dir`` (created if missing) for this process; returns the held :class:`Lock`, also a
    context manager (``with lock(run_dir): ...``).

    If another process holds it: raises :class:`RunDirBusyError` naming the holder (pid, host,
    command line), or with ``wait=True`` retries every :data:`POLL_SECONDS` until it is free; after
    ``timeout`` seconds (None: never) it raises RunDirBusyError too. Locking a directory that the
    calling thread already holds raises RunDirBusyError at once, even with ``wait`` (it would wait for
    itself forever); another thread of the same process is treated like another process.
    """
    run_dir = _check_run_dir(run_dir)
    if not isinstance(wait, bool):
        raise ValueError(f"wait must be True or False, got {wait!r}")
    if timeout is not None:
        if not wait:
            raise ValueError(f"timeout applies with wait=True only, got timeout={timeout!r} and wait=False")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 <= timeout < math.inf):
            raise ValueError(f"timeout must be a finite number of seconds >= 0 or None, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        acquired = _attempt(run_dir)
        if acquired is not None:
            return acquired
        if not wait:
            raise RunDirBusyError(_one_line(f"{run_dir} is in use by {_describe_holder(run_dir / LOCK_FILE)}; "
                                            f"wait for it to finish, or pass --wait", 600))
        remaining = math.inf if deadline is None else deadline - time.monotonic()
        if remaining <= 0:
            raise RunDirBusyError(_one_line(f"{run_dir} is still in use by {_describe_holder(run_dir / LOCK_FILE)} "
                                            f"after waiting {timeout:g} s", 600))
        time.sleep(min(POLL_SECONDS, remaining))


def try_lock(run_dir: str | Path) -> Lock | None:
    """Lock ``run_dir`` (created if missing) without waiting; None when another process (or thread)
    holds it. Raises :class:`RunDirBusyError` if the calling thread holds it already."""
    return _attempt(_check_run_dir(run_dir))


def lock_all(run_dirs: Iterable[str | Path]) -> list[Lock] | None:
    """Lock every directory of ``run_dirs`` without waiting, all or none.

    Returns the locks (one per distinct directory, in sorted order of the resolved paths), or None
    when one of them is held by another process or thread; then the locks already taken are released.
    A sweep claims a group of runs this way. Raises :class:`RunDirBusyError` if the calling thread
    holds one of them already.
    """
    if isinstance(run_dirs, (str, os.PathLike)):
        raise ValueError(f"run_dirs must be a collection of paths, got the single path {str(run_dirs)!r}")
    distinct: dict[str, Path] = {}
    for run_dir in run_dirs:
        run_dir = _check_run_dir(run_dir)
        distinct.setdefault(str(run_dir.resolve()), run_dir)
    taken: list[Lock] = []
    try:
        for resolved in sorted(distinct):
            acquired = _attempt(distinct[resolved])
            if acquired is None:
                for held in taken:
                    held.release()
                return None
            taken.append(acquired)
    except BaseException:
        for held in taken:
            held.release()
        raise
    return taken


# ---------------------------------------------------------------------------------- config, metrics

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


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The JSON object in ``config.json``; None if there is none.

    Raises :class:`RunDirError` when the file is not UTF-8 JSON or holds something other than an object.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        text = path.read_bytes().decode("utf-8")
        config = json.loads(text)
    except UnicodeDecodeError as error:
        raise _damaged(path, f"not UTF-8 text at byte {error.start}", _CONFIG_REMEDY) from None
    except json.JSONDecodeError as error:
        reason = ("empty" if not error.doc.strip() else
                  f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}")
        raise _damaged(path, reason, _CONFIG_REMEDY) from None
    if not isinstance(config, dict):
        raise _damaged(path, f"a JSON {_JSON_TYPES.get(type(config), type(config).__name__)}, not an object",
                       _CONFIG_REMEDY)
    return config


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


def read_metrics(run_dir: Path, columns: tuple[str, ...] | None = None) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as dicts with the file's columns (epoch as int, the rest as float, an
    empty cell as NaN); [] if there is none.

    A last line without its line end (a write cut short by a kill) is dropped silently. Raises
    :class:`RunDirError` when the header is not a metrics header (``epoch`` first, distinct non-empty
    names; exactly ``columns`` if given) or a complete line is not a row of it: a wrong number of
    fields, a cell that is not a number, or an epoch not above the one before (two writers interleaved).
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _damaged(path, f"not UTF-8 text at byte {error.start}", _METRICS_REMEDY) from None
    if not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]       # a last line cut short by an interrupted write
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise _damaged(path, "no complete header line" if data else "empty", _METRICS_REMEDY)
        expected = ",".join(columns) if columns is not None else "epoch first, then distinct non-empty names"
        if (not header or header[0] != "epoch" or any(name == "" for name in header) or len(set(header)) != len(header)
                or (columns is not None and tuple(header) != tuple(columns))):
            raise _damaged(path, f"its first line is not a metrics header: expected {expected}, got "
                           f"{_one_line(','.join(header), 120)!r}", _METRICS_REMEDY)
        rows: list[dict[str, float]] = []
        previous = None
        for fields in reader:
            line = reader.line_num
            if len(fields) != len(header):
                raise _damaged(path, f"line {line} has {len(fields)} fields, the header {len(header)}",
                               _METRICS_REMEDY)
            row: dict[str, float] = {}
            for name, cell in zip(header, fields):
                try:
                    row[name] = int(cell) if name == "epoch" else (float(cell) if cell != "" else math.nan)
                except ValueError:
                    kind = "an integer" if name == "epoch" else "a number"
                    raise _damaged(path, f"line {line}: {name} {_one_line(cell, 40)!r} is not {kind}",
                                   _METRICS_REMEDY) from None
            if previous is not None and row["epoch"] <= previous:
                raise _damaged(path, f"line {line}: epoch {row['epoch']} after epoch {previous}; were two "
                               f"processes writing this run?", _METRICS_REMEDY)
            previous = row["epoch"]
            rows.append(row)
    except csv.Error as error:
        raise _damaged(path, f"not CSV at line {reader.line_num}: {error}", _METRICS_REMEDY) from None
    return rows


def append_metrics(run_dir: Path, row: dict[str, float], columns: tuple[str, ...] = METRIC_COLUMNS) -> None:
    """Append one row to ``metrics.csv`` (a cut-short last line is dropped on resume)."""
    with open(Path(run_dir) / METRICS_FILE, "a") as handle:
        handle.write(format_metrics([row], columns).split("\n", 1)[1])


# ------------------------------------------------------------------------------------- checkpoints

_ANONYMOUS = re.compile(r"leaf_\d{4,}")
"""Names of the arrays of checkpoints written before they were named (leaves in flattening order)."""


def array_names(tree: Any) -> list[str]:
    """The name of each leaf of ``tree``, in flattening order: its path with ``/`` between the keys
    (``jax.tree_util.keystr(path, simple=True, separator="/")``), e.g. ``params/params/Dense_0/kernel``
    for a :class:`~trainers.engine.TrainState`; ``value`` for a tree that is one leaf.

    Raises ValueError when two leaves get the same name, or one is named ``epoch`` (the checkpoint's own
    array).
    """
    import jax
    names = [jax.tree_util.keystr(path, simple=True, separator="/") or "value"
             for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if len(set(names)) != len(names) or "epoch" in names:
        repeated = sorted({name for name in names if names.count(name) > 1 or name == "epoch"})
        raise ValueError(f"state: the leaf paths {repeated[:3]} do not give distinct array names other than 'epoch'")
    return names


def save_checkpoint(run_dir: Path, epoch: int, state: Any, file: str = CHECKPOINT_FILE) -> None:
    """Save a pytree of arrays as ``run_dir/file`` (default ``checkpoint.npz``) with its epoch.

    Each leaf is an array named by its path (:func:`array_names`), so the archive reads with
    ``numpy.load(path, allow_pickle=False)`` alone, without the code that wrote it.
    """
    arrays = dict(zip(array_names(state), _leaves(state)))
    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.asarray(epoch, np.int64), **arrays)
    _write_atomically(Path(run_dir) / file, buffer.getvalue())


def _leaves(tree: Any) -> list[np.ndarray]:
    import jax                                    # here, so that locking and reading metrics need no JAX
    return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


_ARCHIVE_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError)


def _open_checkpoint(path: Path) -> np.lib.npyio.NpzFile:
    try:
        archive = np.load(path, allow_pickle=False)
    except _ARCHIVE_ERRORS:
        empty = path.is_file() and path.stat().st_size == 0
        raise _damaged(path, "empty" if empty else "not a valid .npz archive", _CHECKPOINT_REMEDY) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _damaged(path, "a single .npy array, not an .npz archive", _CHECKPOINT_REMEDY)
    return archive


def _member(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    try:
        return archive[name]
    except _ARCHIVE_ERRORS as error:
        reason = _one_line(str(error), 80) if isinstance(error, zipfile.BadZipFile) else "cannot be read"
        raise _damaged(path, f"its array {name!r}: {reason}", _CHECKPOINT_REMEDY) from None


def _epoch(archive: np.lib.npyio.NpzFile, path: Path) -> int:
    if "epoch" not in archive.files:
        raise _damaged(path, "it has no epoch array", _CHECKPOINT_REMEDY)
    epoch = _member(archive, "epoch", path)
    if epoch.shape != () or epoch.dtype.kind not in "iu" or int(epoch) < 0:
        raise _damaged(path, f"its epoch is not an integer >= 0 (shape {epoch.shape}, dtype {epoch.dtype})",
                       _CHECKPOINT_REMEDY)
    return int(epoch)


def checkpoint_epoch(run_dir: str | Path, file: str = CHECKPOINT_FILE) -> int | None:
    """The epoch saved in ``run_dir/file`` (without reading its other arrays); None if there is none.
    Raises :class:`RunDirError` when the archive or its epoch is damaged."""
    path = Path(run_dir) / file
    if not path.exists():
        return None
    with _open_checkpoint(path) as archive:
        return _epoch(archive, path)


def _anonymous_names(path: Path, archive: np.lib.npyio.NpzFile, count: int, leading: bool) -> list[str]:
    """The ``leaf_NNNN`` arrays that hold a template of ``count`` leaves (the first ``count`` of them if
    ``leading``)."""
    names = sorted(name for name in archive.files if name.startswith("leaf_"))
    expected = [f"leaf_{index:04d}" for index in range(len(names) if leading else count)]
    too_few = len(names) < count if leading else len(names) != count
    if too_few:
        raise RunDirError(f"{path} does not match this configuration ({len(names)} arrays, expected "
                          f"{'at least ' if leading else ''}{count}); {_CHECKPOINT_REMEDY}")
    if names != expected:
        missing = sorted(set(expected) - set(names))
        raise _damaged(path, f"array {missing[0]!r} is missing", _CHECKPOINT_REMEDY)
    return expected[:count]


def _named(path: Path, archive: np.lib.npyio.NpzFile, names: list[str], leading: bool) -> list[str]:
    stored = [name for name in archive.files if name != "epoch"]
    missing = [name for name in names if name not in stored]
    extra = [] if leading else sorted(set(stored) - set(names))
    if missing or extra:
        detail = f"no array {missing[0]!r}" if missing else f"an array {extra[0]!r} this configuration lacks"
        raise RunDirError(_one_line(f"{path} does not match this configuration ({len(stored)} arrays, expected "
                                    f"{len(names)}: {detail}); {_CHECKPOINT_REMEDY}", 600))
    return names


def load_checkpoint(run_dir: Path, template: Any, file: str = CHECKPOINT_FILE,
                    leading: bool = False) -> tuple[int, Any] | None:
    """(epoch, state) from ``run_dir/file`` (default ``checkpoint.npz``) shaped like ``template``; None if
    there is none.

    Reads the named arrays of :func:`save_checkpoint` and the anonymous ``leaf_0000``, ``leaf_0001``, ...
    arrays (leaves in flattening order) of checkpoints written before arrays were named. With
    ``leading``, ``template`` is the leading part of the saved state, e.g. ``{"params": params}`` for
    the controller params of a :class:`~trainers.engine.TrainState` checkpoint: the arrays of its names
    (named checkpoints) or its first leaves (anonymous ones); the other arrays are not read.

    Raises :class:`RunDirError` (a ValueError) when the archive is damaged (cut short, not an ``.npz``,
    an array missing or unreadable) or does not match the template's leaves (names, count, shape, dtype).
    """
    import jax
    path = Path(run_dir) / file
    if not path.exists():
        return None
    leaves, treedef = jax.tree.flatten(template)
    with _open_checkpoint(path) as archive:
        epoch = _epoch(archive, path)
        stored = [name for name in archive.files if name != "epoch"]
        if stored and all(_ANONYMOUS.fullmatch(name) for name in stored):
            names = _anonymous_names(path, archive, len(leaves), leading)
        else:
            names = _named(path, archive, array_names(template), leading)
        loaded = []
        for name, leaf in zip(names, leaves):
            array = _member(archive, name, path)
            if array.shape != np.shape(leaf) or array.dtype != np.asarray(leaf).dtype:
                raise RunDirError(f"{path} does not match this configuration ({name} has shape {array.shape} "
                                  f"and dtype {array.dtype}, expected {np.shape(leaf)} and "
                                  f"{np.asarray(leaf).dtype}); {_CHECKPOINT_REMEDY}")
            loaded.append(array)
    return epoch, jax.tree.unflatten(treedef, [jax.numpy.asarray(array) for array in loaded])


def all_finite(row: dict[str, float], keys: tuple[str, ...]) -> bool:
    return all(math.isfinite(row[key]) for key in keys)


# ----------------------------------------------------------------------------------- finding runs

IDENTITY_IGNORED = ("epochs", "diffenvs_version", "brax_version")
"""Keys of ``config.json`` in which two records of the same run may differ (a larger ``epochs`` continues
it; the versions are those of the last writer)."""


def _config_files(root: Path, depth: int | None) -> list[Path]:
    if (root / CONFIG_FILE).is_file():
        return [root / CONFIG_FILE]
    if not root.is_dir():
        return []
    if depth == 1:
        return sorted(child / CONFIG_FILE for child in root.iterdir() if (child / CONFIG_FILE).is_file())
    return sorted(root.rglob(CONFIG_FILE))


def _readable_config(path: Path) -> dict[str, Any] | None:
    try:
        return read_config(path.parent)
    except (OSError, RunDirError):
        return None                               # a damaged run is not a match; it says so when opened


def run_identity(record: dict[str, Any], ignored: Iterable[str] = IDENTITY_IGNORED) -> str:
    """``record`` (a ``config.json`` object) as canonical JSON without the ``ignored`` keys: two records
    of the same run have the same identity."""
    ignored = set(ignored)
    return json.dumps({key: value for key, value in record.items() if key not in ignored}, sort_keys=True,
                      default=str)


def runs_by_identity(root: str | Path) -> dict[str, Path]:
    """The run directories directly under ``root`` by :func:`run_identity` of their ``config.json``
    (unreadable ones left out; of two with the same identity, the first by name)."""
    index: dict[str, Path] = {}
    for path in _config_files(Path(root), 1):
        existing = _readable_config(path)
        if existing is not None:
            index.setdefault(run_identity(existing), path.parent)
    return index


def find_same_run(root: str | Path, record: dict[str, Any]) -> Path | None:
    """The run directory directly under ``root`` whose ``config.json`` equals ``record`` in every key but
    :data:`IDENTITY_IGNORED`, whatever its name (for example a name given by an earlier version); None if
    there is none. Sweeps, comparisons and ``diffenvs-train`` resume such a run instead of starting anew."""
    return runs_by_identity(root).get(run_identity(record))


def _matches(config: dict[str, Any], name: str, wanted: Any) -> bool:
    """Whether ``config`` has ``wanted`` (a value, or a list/tuple/set of allowed values) for filter ``name``."""
    from diffenvs.registry import canonical_name
    allowed = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    try:
        task = canonical_name(config.get("task", ""))
    except ValueError:
        return False
    if name == "task":
        return task in {canonical_name(value) for value in allowed}
    import dataclasses
    import diffenvs
    from trainers.config import TrainConfig
    from trainers.presets import COMPLEXITY_LEVELS
    env_params = {**dataclasses.asdict(diffenvs.make(task).default_params), **(config.get("env_params") or {})}
    if name == "level":
        name = COMPLEXITY_LEVELS[task][0]
    if name == "strategy":
        value = config.get("algo", config.get("strategy"))
    elif name in env_params and name not in config:
        value = env_params[name]
    else:
        defaults = TrainConfig().to_dict() | {"precision": "float32", "gradient_variance": False,
                                              "strategy_options": {}, "controller": "study"}
        if name not in config and name not in defaults:
            return False
        value = config.get(name, defaults.get(name))
    return any(value == option for option in allowed)


def find_run_dirs(root: str | Path, **filters: Any) -> list[Path]:
    """Run directories under ``root`` (``root`` itself or at any depth below it) whose ``config.json``
    matches every filter, whatever the directories are called; sorted by path.

    A filter is ``key=value`` or ``key=[value, ...]`` (any of them): ``task`` in any spelling
    ("cartpole", "CartPole"), ``level`` (the task's complexity value: poles, rc or target state),
    ``strategy`` (a strategy name, or an RL baseline's algorithm), an environment parameter
    (``num_poles=2``), or any other key of ``config.json`` (``clip="norm"``, ``seed=0``,
    ``learning_rate=3e-4``); a key the record omits takes its default. Example::

        find_run_dirs("runs", task="cartpole", level=2, strategy=["bptt", "combined"], seed=0)
    """
    if "task" in filters:
        from diffenvs.registry import canonical_name
        tasks = filters["task"] if isinstance(filters["task"], (list, tuple, set, frozenset)) else [filters["task"]]
        for task in tasks:
            try:
                canonical_name(task)
            except ValueError as error:
                raise ValueError(f"task: {error}") from None
    root = Path(root)
    found = []
    for path in _config_files(root, None):
        config = _readable_config(path)
        if config is not None and all(_matches(config, name, value) for name, value in filters.items()):
            found.append(path.parent)
    return found
