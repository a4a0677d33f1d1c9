"""Run directories shared by several processes (locks) and damaged run-directory files.

The lock tests use real processes: a child process loads trainers/rundir.py (only numpy, no JAX, so
it starts fast) and takes or releases locks on request, one JSON line per request and reply.
"""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainers import rundir
from trainers.rundir import RunDirBusyError, RunDirError

CHILD = r"""
import importlib.util, json, os, sys, time
spec = importlib.util.spec_from_file_location("rundir_under_test", sys.argv[1])
rundir = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rundir)
held = []
print(json.dumps({"ready": os.getpid()}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    operation = request["op"]
    try:
        if operation == "lock":
            held.append(rundir.lock(request["dir"], wait=request.get("wait", False)))
            reply = {"locked": True}
        elif operation == "lock_all":
            locks = rundir.lock_all(request["dirs"])
            held.extend(locks or [])
            reply = {"locked": locks is not None}
        elif operation == "release":
            for lock in held:
                lock.release()
            held.clear()
            reply = {"released": True}
        elif operation == "fork":                 # a child that outlives this process, holding nothing
            ready = request["ready"]
            pid = os.fork()
            if pid == 0:                          # the at-fork handlers have run when fork returns here
                open(ready, "w").close()
                time.sleep(120)
                os._exit(0)
            deadline = time.monotonic() + 60      # reply once the child is past them (it may be scheduled late)
            while not os.path.exists(ready) and time.monotonic() < deadline:
                time.sleep(0.01)
            reply = {"forked": pid}
    except rundir.RunDirBusyError as error:
        reply = {"busy": str(error)}
    print(json.dumps(reply), flush=True)
"""

WORKER = r"""
import importlib.util, json, os, sys, time
spec = importlib.util.spec_from_file_location("rundir_under_test", sys.argv[1])
rundir = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rundir)
groups, epochs, use_locks, go = json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "locks", sys.argv[5]
columns = ("epoch", "writer")
print("ready", flush=True)
while not os.path.exists(go):                    # all workers start together
    time.sleep(0.002)
trained, pending = [], list(groups)
while pending:
    deferred = []
    for group in pending:
        locks = rundir.lock_all(group) if use_locks else []
        if locks is None:
            deferred.append(group)
            continue
        try:
            for run_dir in group:
                try:
                    os.makedirs(run_dir, exist_ok=True)
                    rows = rundir.read_metrics(run_dir)
                    if len(rows) > epochs:
                        continue                  # finished (by another worker)
                    if not rows:
                        rundir.write_metrics(run_dir, [{"epoch": 0, "writer": 0}], columns)
                        rows = [{"epoch": 0}]
                    trained.append(run_dir)
                    for epoch in range(rows[-1]["epoch"] + 1, epochs + 1):
                        time.sleep(0.01)          # an epoch of training
                        rundir.append_metrics(run_dir, {"epoch": epoch, "writer": 1}, columns)
                except (rundir.RunDirError, OSError):
                    if use_locks:
                        raise                     # without locks, writers trip over each other's files
        finally:
            for lock in locks:
                lock.release()
    if len(deferred) == len(pending):
        time.sleep(0.02)
    pending = deferred
print(json.dumps(trained), flush=True)
"""


class Child:
    """A process that takes and releases run-directory locks on request."""

    def __init__(self, *marker: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, rundir.__file__, *marker],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.reply()["ready"] == self.process.pid

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(line)

    def reply(self, timeout: float = 120.0) -> dict:
        return json.loads(self.replies.get(timeout=timeout))

    def send(self, operation: str, **arguments) -> None:
        self.process.stdin.write(json.dumps({"op": operation, **arguments}) + "\n")
        self.process.stdin.flush()

    def ask(self, operation: str, **arguments) -> dict:
        self.send(operation, **arguments)
        return self.reply()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=60)


@pytest.fixture
def child():
    children: list[Child] = []
    yield lambda *marker: children.append(Child(*marker)) or children[-1]
    for process in children:
        process.close()


# ------------------------------------------------------------------------------------------- locks

def test_a_second_process_gets_a_one_line_error_naming_the_holder(tmp_path, child):
    run_dir = tmp_path / "runs" / "x"
    holder = child("--holder-of-the-test")
    assert holder.ask("lock", dir=str(run_dir)) == {"locked": True}
    assert (run_dir / rundir.LOCK_FILE).exists()
    with pytest.raises(RunDirBusyError) as caught:
        rundir.lock(run_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{run_dir} is in use by process {holder.process.pid} on host {socket.gethostname()} (")
    assert "--holder-of-the-test" in message and "--wait" in message
    assert rundir.try_lock(run_dir) is None
    assert rundir.lock_all([run_dir]) is None
    # and the other way round: the child is refused while this process holds the directory
    assert holder.ask("release") == {"released": True}
    with rundir.lock(run_dir) as held:
        assert held.held
        busy = holder.ask("lock", dir=str(run_dir))["busy"]
        assert busy.startswith(f"{run_dir} is in use by process {os.getpid()} on host ")
    assert not held.held
    assert holder.ask("lock", dir=str(run_dir)) == {"locked": True}


def test_kill_9_of_the_holder_frees_the_lock_at_once(tmp_path, child):
    run_dir = tmp_path / "run"
    holder = child()
    assert holder.ask("lock", dir=str(run_dir)) == {"locked": True}
    assert rundir.try_lock(run_dir) is None
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait(timeout=60)
    acquired = rundir.try_lock(run_dir)                       # no stale lock, no waiting
    assert acquired is not None and acquired.held
    details = json.loads((run_dir / rundir.LOCK_FILE).read_text())
    assert details["pid"] == os.getpid() and details["host"]
    acquired.release()
    assert (run_dir / rundir.LOCK_FILE).read_text() == ""      # released: the file stays, emptied


def test_a_forked_child_does_not_keep_the_lock_alive(tmp_path, child):
    run_dir = tmp_path / "run"
    holder = child()
    assert holder.ask("lock", dir=str(run_dir)) == {"locked": True}
    grandchild = holder.ask("fork", ready=str(tmp_path / "forked"))["forked"]   # inherits the lock's descriptor
    try:
        assert rundir.try_lock(run_dir) is None
        holder.process.send_signal(signal.SIGKILL)
        holder.process.wait(timeout=60)
        os.kill(grandchild, 0)                                 # still running
        acquired = rundir.try_lock(run_dir)
        assert acquired is not None
        acquired.release()
    finally:
        os.kill(grandchild, signal.SIGKILL)


def test_wait_blocks_until_the_holder_releases(tmp_path, child):
    run_dir = tmp_path / "run"
    holder = child()
    assert holder.ask("lock", dir=str(run_dir)) == {"locked": True}
    started = time.monotonic()
    with pytest.raises(RunDirBusyError, match=r"still in use by process \d+ .* after waiting 0.3 s$"):
        rundir.lock(run_dir, wait=True, timeout=0.3)
    assert time.monotonic() - started >= 0.3
    released_at = []

    def release_later() -> None:
        time.sleep(1.0)
        released_at.append(time.monotonic())
        holder.send("release")

    threading.Thread(target=release_later, daemon=True).start()
    with rundir.lock(run_dir, wait=True, timeout=60) as acquired:
        acquired_at = time.monotonic()
        assert released_at and acquired_at >= released_at[0]
        assert holder.reply() == {"released": True}
    assert acquired_at - released_at[0] < 30                   # it did not wait for the timeout


def test_lock_all_is_all_or_none(tmp_path, child):
    a, b, c = (tmp_path / name for name in "abc")
    holder, other = child(), child()
    assert holder.ask("lock", dir=str(b)) == {"locked": True}
    assert rundir.lock_all([c, b, a]) is None
    # a and c were released again: another process can take them (and b is still held)
    assert other.ask("lock_all", dirs=[str(a), str(c)]) == {"locked": True}
    assert other.ask("release") == {"released": True}
    assert holder.ask("release") == {"released": True}
    locks = rundir.lock_all([c, b, a, tmp_path / "a"])         # a directory given twice is locked once
    assert [lock.run_dir for lock in locks] == [a, b, c] and all(lock.held for lock in locks)
    assert other.ask("lock_all", dirs=[str(b)]) == {"locked": False}
    for lock in locks:
        lock.release()
    assert other.ask("lock_all", dirs=[str(a), str(b), str(c)]) == {"locked": True}


def _run_workers(tmp_path: Path, mode: str, workers: int = 3, epochs: int = 8):
    """Run ``workers`` processes that each train every group of a grid of 6 groups of 2 runs (epochs
    appended to metrics.csv), claiming groups with ``lock_all`` (``mode="locks"``) or not."""
    groups = [[str(tmp_path / mode / f"g{group}-r{run}") for run in range(2)] for group in range(6)]
    go = tmp_path / f"go-{mode}"
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, rundir.__file__, json.dumps(groups), str(epochs),
                                   mode, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
    assert [process.stdout.readline() for process in processes] == ["ready\n"] * workers
    go.touch()
    outputs = [process.communicate(timeout=300) for process in processes]
    assert all(process.returncode == 0 for process in processes), [error for _, error in outputs]
    return [run for group in groups for run in group], [json.loads(out) for out, _ in outputs]


@pytest.mark.slow
def test_workers_claiming_groups_with_lock_all_write_every_epoch_exactly_once(tmp_path):
    runs, trained = _run_workers(tmp_path, "locks")
    for run in runs:
        assert [row["epoch"] for row in rundir.read_metrics(run)] == list(range(9))
        assert sum(worker.count(run) for worker in trained) == 1      # trained by exactly one worker
    # the same workers without the locks: runs trained by several workers at once (issue 21)
    runs, trained = _run_workers(tmp_path, "nolocks")
    assert any(sum(worker.count(run) for worker in trained) > 1 for run in runs)


def test_locking_a_directory_twice_in_one_thread_is_an_error_not_a_deadlock(tmp_path):
    run_dir = tmp_path / "run"
    held = rundir.lock(run_dir)
    try:
        started = time.monotonic()
        (tmp_path / "alias").symlink_to(run_dir)
        for attempt in (lambda: rundir.lock(run_dir), lambda: rundir.lock(tmp_path / "alias", wait=True),
                        lambda: rundir.try_lock(run_dir), lambda: rundir.lock_all([tmp_path / "other", run_dir])):
            with pytest.raises(RunDirBusyError, match="already locked by this thread") as caught:
                attempt()
            assert "\n" not in str(caught.value)
        assert time.monotonic() - started < 5
        other = rundir.try_lock(tmp_path / "other")               # lock_all released what it took
        assert other is not None
        other.release()
    finally:
        held.release()
    again = rundir.try_lock(run_dir)
    assert again is not None
    again.release()


def test_another_thread_of_the_process_is_refused_or_waits(tmp_path):
    run_dir = tmp_path / "run"
    results: dict[str, object] = {}

    def in_thread() -> None:
        results["try"] = rundir.try_lock(run_dir)
        try:
            rundir.lock(run_dir)
        except RunDirBusyError as error:
            results["busy"] = str(error)
        with rundir.lock(run_dir, wait=True, timeout=60):
            results["acquired_at"] = time.monotonic()

    held = rundir.lock(run_dir)
    thread = threading.Thread(target=in_thread)
    thread.start()
    time.sleep(0.5)
    released_at = time.monotonic()
    held.release()
    thread.join(timeout=60)
    assert results["try"] is None
    assert f"in use by another thread of this process {os.getpid()}" in results["busy"]
    assert results["acquired_at"] >= released_at


def test_lock_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="timeout applies with wait=True only"):
        rundir.lock(tmp_path, timeout=1.0)
    for timeout in (-1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0"):
            rundir.lock(tmp_path, wait=True, timeout=timeout)
    with pytest.raises(ValueError, match="wait must be True or False"):
        rundir.lock(tmp_path, wait=1)
    with pytest.raises(ValueError, match="run_dirs must be a collection of paths"):
        rundir.lock_all(str(tmp_path))
    with pytest.raises(ValueError, match="run_dir must be a path"):
        rundir.try_lock(None)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="cannot create the lock file"):
        rundir.lock(tmp_path / "file")
    assert rundir.lock_all([]) == []


# ---------------------------------------------------------------------------------- damaged files

def _check_one_line(error: pytest.ExceptionInfo, path: Path, remedy: str) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path} ")
    assert remedy in message
    return message


@pytest.mark.parametrize("content, reason", [
    (b'{"task": "cartpole", "epo', "not valid JSON"),
    (b"", "empty"),
    (b"\x00\x13garbage\xff", "not UTF-8 text"),
    (b"garbage", "not valid JSON"),
    (b"[1, 2]", "a JSON array, not an object"),
])
def test_a_damaged_config_is_a_one_line_error(tmp_path, content, reason):
    (tmp_path / rundir.CONFIG_FILE).write_bytes(content)
    with pytest.raises(RunDirError) as caught:
        rundir.read_config(tmp_path)
    message = _check_one_line(caught, tmp_path / rundir.CONFIG_FILE, "restore it from a backup")
    assert reason in message


def test_config_round_trip(tmp_path):
    assert rundir.read_config(tmp_path) is None
    rundir.write_config(tmp_path, {"task": "cartpole", "epochs": 3})
    assert rundir.read_config(tmp_path) == {"task": "cartpole", "epochs": 3}


def _metrics_text(epochs) -> str:
    rows = [{"epoch": epoch, "batch_loss": 1.0, "train_loss": 2.0, "test_loss": 3.0 / (epoch + 1),
             "update_norm_squared": 4.0, "cosine": float("nan"), "epoch_seconds": 0.5} for epoch in epochs]
    return rundir.format_metrics(rows)


GOOD = _metrics_text(range(4))


@pytest.mark.parametrize("text, reason", [
    ("hello,world\n1,2\n", "first line is not a metrics header"),
    ("\n" + GOOD, "first line is not a metrics header"),
    ("epoch,test_loss,test_loss\n0,1,2\n", "first line is not a metrics header"),
    ("".join(GOOD.splitlines(True)[:3] + ["garbage in the middle\n"] + GOOD.splitlines(True)[3:]),
     "line 4 has 1 fields, the header 7"),
    (GOOD + "\n" + _metrics_text([4]).split("\n", 1)[1], "line 6 has 0 fields"),
    (GOOD.replace("2.0", "2.O", 1), "line 2: train_loss '2.O' is not a number"),
    (GOOD.replace("\n2,", "\n2.5,", 1), "line 4: epoch '2.5' is not an integer"),
    (GOOD + _metrics_text([2, 3]).split("\n", 1)[1], "line 6: epoch 2 after epoch 3; were two processes"),
    ("", "empty"),
    ("epoch,batch_lo", "no complete header line"),
    (GOOD.replace("2.0", "2.\udcff", 1), "not UTF-8 text"),
])
def test_damaged_metrics_are_a_one_line_error(tmp_path, text, reason):
    (tmp_path / rundir.METRICS_FILE).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(RunDirError) as caught:
        rundir.read_metrics(tmp_path)
    message = _check_one_line(caught, tmp_path / rundir.METRICS_FILE, "restart the run from epoch 0")
    assert reason in message


def test_a_cut_short_last_metrics_line_is_still_dropped_silently(tmp_path):
    path = tmp_path / rundir.METRICS_FILE
    assert rundir.read_metrics(tmp_path) == []                  # no file
    path.write_text(GOOD)
    full = rundir.read_metrics(tmp_path)
    assert [row["epoch"] for row in full] == [0, 1, 2, 3] and full[2]["test_loss"] == 1.0
    last_line = _metrics_text([4]).split("\n", 1)[1]
    for cut in (1, 5, len(last_line) - 2, len(last_line) - 1):  # anywhere, even just before the line end
        path.write_text(GOOD + last_line[:cut])
        assert repr(rundir.read_metrics(tmp_path)) == repr(full)   # repr: NaN == NaN
    path.write_text(GOOD + last_line)
    assert [row["epoch"] for row in rundir.read_metrics(tmp_path)] == [0, 1, 2, 3, 4]


def test_metrics_header_and_cells(tmp_path):
    path = tmp_path / rundir.METRICS_FILE
    path.write_text("epoch,env_steps,test_loss\n0,0,1.5\n1,100,\n")     # another writer's columns, an empty cell
    rows = rundir.read_metrics(tmp_path)
    assert rows[0] == {"epoch": 0, "env_steps": 0.0, "test_loss": 1.5}
    assert rows[1]["epoch"] == 1 and np.isnan(rows[1]["test_loss"])
    with pytest.raises(RunDirError, match=r"expected epoch,batch_loss,.*got 'epoch,env_steps,test_loss'"):
        rundir.read_metrics(tmp_path, rundir.METRIC_COLUMNS)
    path.write_text(GOOD)
    assert len(rundir.read_metrics(tmp_path, rundir.METRIC_COLUMNS)) == 4


def _state():
    return {"weights": np.arange(6, dtype=np.float32).reshape(2, 3), "bias": np.zeros(3, np.float32),
            "key": np.asarray([1, 2], np.uint32)}


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _corrupted_member(data: bytes) -> bytes:
    """The archive with one byte of its first array's data flipped (its CRC no longer matches)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
    local = info.header_offset                 # local header: 30 bytes, then the name and extra field
    name_length, extra_length = (int.from_bytes(data[local + at:local + at + 2], "little") for at in (26, 28))
    start = local + 30 + name_length + extra_length + info.file_size - 1
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]


def test_checkpoint_round_trip_and_epoch(tmp_path):
    assert rundir.load_checkpoint(tmp_path, _state()) is None and rundir.checkpoint_epoch(tmp_path) is None
    rundir.save_checkpoint(tmp_path, 7, _state())
    epoch, state = rundir.load_checkpoint(tmp_path, _state())
    assert epoch == 7 and rundir.checkpoint_epoch(tmp_path) == 7
    for name, array in _state().items():
        assert np.array_equal(np.asarray(state[name]), array) and np.asarray(state[name]).dtype == array.dtype


def _damaged_checkpoints(saved: bytes) -> dict[str, tuple[bytes, str]]:
    leaves = {f"leaf_{index:04d}": leaf for index, leaf in enumerate([np.zeros(3, np.float32),
                                                                      np.asarray([1, 2], np.uint32),
                                                                      np.zeros((2, 3), np.float32)])}
    return {
        "cut short": (saved[:len(saved) // 2], "is damaged (not a valid .npz archive)"),
        "empty": (b"", "is damaged (empty)"),
        "garbage": (b"garbage" * 50, "is damaged (not a valid .npz archive)"),
        "a pickle": (b"\x80\x04\x95" + b"x" * 40, "is damaged (not a valid .npz archive)"),
        "an .npy": (_npy(), "is damaged (a single .npy array, not an .npz archive)"),
        "a flipped byte": (_corrupted_member(saved), "is damaged (its array"),
        "no epoch": (_npz(**leaves), "is damaged (it has no epoch array)"),
        "a bad epoch": (_npz(epoch=np.asarray([1.5]), **leaves), "its epoch is not an integer >= 0"),
        "an array missing": (_npz(epoch=np.asarray(3), leaf_0000=leaves["leaf_0000"], leaf_0001=leaves["leaf_0001"],
                                  leaf_0003=leaves["leaf_0002"]), "array 'leaf_0002' is missing"),
        "too few arrays": (_npz(epoch=np.asarray(3), leaf_0000=leaves["leaf_0000"]),
                           "does not match this configuration (1 arrays, expected 3)"),
        "a wrong shape": (_npz(epoch=np.asarray(3), **{**leaves, "leaf_0002": np.zeros(4, np.float32)}),
                          "does not match this configuration (leaf_0002 has shape (4,)"),
        "an object array": (_npz(epoch=np.asarray(3), **{**leaves, "leaf_0000": np.asarray([None, 1], object)}),
                            "is damaged (its array 'leaf_0000': cannot be read)"),
    }


def _npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(3))
    return buffer.getvalue()


def test_a_damaged_checkpoint_is_a_one_line_error(tmp_path):
    rundir.save_checkpoint(tmp_path, 3, _state())
    saved = (tmp_path / rundir.CHECKPOINT_FILE).read_bytes()
    path = tmp_path / rundir.CHECKPOINT_FILE
    for case, (data, reason) in _damaged_checkpoints(saved).items():
        path.write_bytes(data)
        with pytest.raises(RunDirError) as caught:
            rundir.load_checkpoint(tmp_path, _state())
        message = _check_one_line(caught, path, "delete it to restart the run from epoch 0")
        assert reason in message, case
        assert "pickle" not in message, case                   # no advice to unpickle anything
    for case in ("cut short", "empty", "an .npy", "no epoch", "a bad epoch"):
        path.write_bytes(_damaged_checkpoints(saved)[case][0])
        with pytest.raises(RunDirError, match="delete it to restart the run from epoch 0"):
            rundir.checkpoint_epoch(tmp_path)
    path.write_bytes(saved)
    assert rundir.load_checkpoint(tmp_path, _state())[0] == 3


def test_checkpoint_arrays_are_named_by_their_path_in_the_state(tmp_path):
    import jax
    from trainers.engine import TrainState
    state = TrainState({"params": {"Dense_0": {"kernel": np.ones((2, 3), np.float32)}}},
                       (np.asarray(4, np.int32), {"mu": np.zeros(3, np.float32)}), np.asarray([1, 2], np.uint32))
    rundir.save_checkpoint(tmp_path, 5, state)
    with np.load(tmp_path / rundir.CHECKPOINT_FILE, allow_pickle=False) as archive:   # numpy alone reads it
        assert sorted(archive.files) == ["epoch", "key", "optimizer_state/0", "optimizer_state/1/mu",
                                         "params/params/Dense_0/kernel"]
        assert np.array_equal(archive["params/params/Dense_0/kernel"], np.ones((2, 3)))
    epoch, loaded = rundir.load_checkpoint(tmp_path, state)
    assert epoch == 5 and all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state)))
    # a leading part of the state: only its arrays are read
    epoch, params = rundir.load_checkpoint(tmp_path, {"params": state.params}, leading=True)
    assert np.array_equal(params["params"]["params"]["Dense_0"]["kernel"], np.ones((2, 3)))
    with pytest.raises(RunDirError, match="does not match this configuration .*an array 'key' this configuration lacks"):
        rundir.load_checkpoint(tmp_path, {"params": state.params, "optimizer_state": state.optimizer_state})
    with pytest.raises(RunDirError, match="does not match this configuration .*no array 'params/params/Dense_1/kernel'"):
        rundir.load_checkpoint(tmp_path, {"params": {"params": {"Dense_1": {"kernel": np.ones((2, 3))}}}}, leading=True)
    with pytest.raises(ValueError, match="do not give distinct array names other than 'epoch'"):
        rundir.save_checkpoint(tmp_path, 1, {"epoch": np.zeros(1)})


def test_an_anonymous_checkpoint_of_earlier_versions_loads_whole_or_its_leading_leaves(tmp_path):
    leaves = [np.arange(3, dtype=np.float32), np.asarray([7, 8], np.uint32), np.ones((2, 2), np.float32)]
    (tmp_path / rundir.CHECKPOINT_FILE).write_bytes(
        _npz(epoch=np.asarray(9), **{f"leaf_{index:04d}": leaf for index, leaf in enumerate(leaves)}))
    template = {"a": np.zeros(3, np.float32), "b": np.zeros(2, np.uint32), "c": np.zeros((2, 2), np.float32)}
    epoch, loaded = rundir.load_checkpoint(tmp_path, template)      # flattening order: a, b, c
    assert epoch == 9 and [np.asarray(loaded[k]).tolist() for k in "abc"] == [leaf.tolist() for leaf in leaves]
    _, first = rundir.load_checkpoint(tmp_path, {"a": template["a"]}, leading=True)
    assert np.array_equal(first["a"], leaves[0])
    with pytest.raises(RunDirError, match=r"\(3 arrays, expected at least 4\)"):
        rundir.load_checkpoint(tmp_path, {**template, "d": np.zeros(1)}, leading=True)
