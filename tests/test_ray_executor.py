"""The Ray executor on a real local Ray cluster (127.0.0.1, real worker processes): metrics equal to the
local executor's, a worker killed with SIGKILL mid-group, an unreachable --address, the command line."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from trainers import rundir  # noqa: E402
from trainers.experiments.ray_executor import (  # noqa: E402
    TASK_PROCESS_TITLE, run_sweep_on_ray, start_local_cluster, train_group_task,
)
from trainers.experiments.sweep import SweepSpec, main, plan, run_sweep  # noqa: E402

EPOCHS = 40
TINY = {"epochs": EPOCHS, "num_train": 16, "num_test": 8, "batch_size": 8, "checkpoint_every": 1,
        "env_params": {"num_steps": 20}}
# two groups (bptt, combined: split_combined) of two seeds each
GRID = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt", "combined"), clips=("none",), seeds=(0, 1),
                 options=TINY)
CLI_GRID = ["--tasks", "cartpole", "--levels", "1", "--strategies", "bptt", "combined", "--clips", "none",
            "--seeds", "0", "1", "--epochs", str(EPOCHS), "--checkpoint-every", "1",
            "--set", "num_train=16", "--set", "num_test=8", "--set", "batch_size=8",
            "--set", 'env_params={"num_steps": 20}']
REPOSITORY = Path(__file__).resolve().parents[1]


FAST_COMPILATION = "JAX_DISABLE_MOST_OPTIMIZATIONS"
"""Compilation dominates these tests: the driver (fast_compilation) and the workers (this variable,
inherited from the driver) compile with most XLA optimisations off, the same programs on both sides."""


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs bound to 127.0.0.1, shipped this checkout's code; shut down after
    the module (ray.shutdown stops the processes this driver started)."""
    if ray.is_initialized():
        pytest.skip("this process is already connected to Ray")
    previous = os.environ.get(FAST_COMPILATION)
    os.environ[FAST_COMPILATION] = "1"                    # the cluster's processes inherit it
    try:
        address = start_local_cluster(num_cpus=2)
    finally:
        if previous is None:
            del os.environ[FAST_COMPILATION]
        else:
            os.environ[FAST_COMPILATION] = previous
    try:
        yield address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_sweep(fast_compilation, tmp_path_factory):
    """The grid trained by the local executor (the reference)."""
    root = tmp_path_factory.mktemp("local")
    return root, run_sweep(GRID, root, quiet=True)


def _csv_without_time(run_dir: Path) -> list[str]:
    """metrics.csv's lines without the epoch_seconds column (wall time), as written (byte for byte)."""
    lines = (run_dir / rundir.METRICS_FILE).read_text().splitlines()
    column = lines[0].split(",").index("epoch_seconds")
    return [",".join(field for index, field in enumerate(line.split(",")) if index != column) for line in lines]


def _assert_same_metrics(root: Path, local_sweep, strategies=("bptt", "combined")) -> None:
    local_root, local_result = local_sweep
    compared = [status for status in local_result.runs if status.run.config.strategy in strategies]
    assert len(compared) == 2 * len(strategies)
    assert sorted(path.name for path in root.iterdir()) == sorted(status.run.name for status in compared)
    for status in compared:
        mine = _csv_without_time(root / status.run.name)
        assert len(mine) == EPOCHS + 2                               # header, epoch 0, epochs 1..EPOCHS
        assert mine == _csv_without_time(local_root / status.run.name), status.run.name


@pytest.mark.slow
def test_ray_sweep_metrics_equal_the_local_executors(cluster, local_sweep, tmp_path, capsys):
    result = run_sweep_on_ray(GRID, tmp_path, quiet=True)
    _assert_same_metrics(tmp_path, local_sweep)
    summary = [(status.run.name, status.run.run_dir, status.status, status.epoch, status.test_loss)
               for status in result.runs]
    expected = [(status.run.name, tmp_path / status.run.name, status.status, status.epoch, status.test_loss)
                for status in local_sweep[1].runs]
    assert summary == expected                               # grid order, the caller's paths, same losses
    assert capsys.readouterr().out == ""                      # quiet: nothing
    assert ray.is_initialized()                               # the caller's connection is left alone
    again = run_sweep_on_ray(GRID, tmp_path, quiet=True)      # finished runs are skipped
    assert [status.status for status in again.runs] == ["finished"] * 4


def _checkpoint_epoch(run_dir: Path) -> int:
    try:
        with np.load(run_dir / rundir.CHECKPOINT_FILE, allow_pickle=False) as archive:
            return int(archive["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def _busy_workers() -> list:
    """Worker processes of this test's cluster (descendants of this process) running a group."""
    workers = []
    for process in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if " ".join(process.cmdline()).startswith(TASK_PROCESS_TITLE):
                workers.append(process)
        except psutil.Error:
            pass
    return workers


@pytest.mark.slow
def test_a_worker_killed_mid_group_is_retried_and_resumes_from_checkpoints(cluster, local_sweep, tmp_path):
    run_dirs = [tmp_path / status.run.name for status in local_sweep[1].runs]
    killed = {}

    def kill_a_busy_worker():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            epochs = [_checkpoint_epoch(run_dir) for run_dir in run_dirs]
            if any(1 <= epoch <= EPOCHS // 2 for epoch in epochs):
                for worker in _busy_workers()[:1]:
                    worker.send_signal(signal.SIGKILL)
                    worker.wait(timeout=30)
                    # what the runs hold right after the kill: their checkpoints and the rows up to them
                    checkpoints = {run_dir: _checkpoint_epoch(run_dir) for run_dir in run_dirs}
                    killed.update(pid=worker.pid, checkpoints=checkpoints,
                                  rows={run_dir: [row for row in rundir.read_metrics(run_dir)
                                                  if row["epoch"] <= checkpoints[run_dir]] for run_dir in run_dirs})
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    result = run_sweep_on_ray(GRID, tmp_path, quiet=True, max_retries=2)
    killer.join(timeout=5)
    assert killed, "no busy worker was found to kill"
    assert not psutil.pid_exists(killed["pid"])
    assert any(epoch < EPOCHS for epoch in killed["checkpoints"].values())   # killed mid-group
    assert [status.status for status in result.runs] == ["trained"] * 4
    assert [status.epoch for status in result.runs] == [EPOCHS] * 4
    _assert_same_metrics(tmp_path, local_sweep)
    # resumed, not restarted: the rows up to each checkpoint at the kill are kept, wall times included
    for run_dir, rows in killed["rows"].items():
        assert repr(rundir.read_metrics(run_dir)[:len(rows)]) == repr(rows)          # repr: nan == nan


def test_a_node_that_does_not_see_the_output_directory_refuses_to_train(tmp_path):
    """What a task does on a node without the shared filesystem (a local directory of the same name)."""
    group = plan(GRID, tmp_path)[0]
    with pytest.raises(ValueError, match="mount the shared filesystem at the same path on every node"):
        train_group_task(group, tmp_path / ".ray-sweep-0123456789abcdef", "0123456789abcdef")
    assert not list(tmp_path.iterdir())                          # nothing written


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("address, message", [
    (None, "no Ray cluster reachable there (connection refused)"),
    ("127.0.0.1", "--address must be HOST:PORT"),
])
def test_an_unreachable_address_is_a_one_line_error_within_seconds(address, message, tmp_path, capsys):
    address = address or f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), *CLI_GRID, "--executor", "ray", "--address", address, "--quiet"])
    assert time.monotonic() - started < 10
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err
    assert "--address" in lines[0] and message in lines[0] and address in lines[0]
    assert not list(tmp_path.iterdir())                         # nothing was trained or written


@pytest.mark.slow
def test_the_command_line_trains_on_the_cluster(cluster, local_sweep, tmp_path, capsys):
    assert main([str(tmp_path), *CLI_GRID, "--executor", "ray", "--address", cluster]) == 0
    output = capsys.readouterr().out
    assert "4 runs in 2 groups" in output and "4 trained, 0 already finished" in output
    assert "runs 4/4 finished" in output and "sweep on Ray: 2 tasks" in output     # the one progress view
    _assert_same_metrics(tmp_path, local_sweep)


@pytest.mark.slow
def test_a_driver_process_connects_to_the_cluster_and_leaves_it_running(cluster, local_sweep, tmp_path):
    """diffenvs-sweep in another process, as on a cluster: ray.init(address) with this checkout's code."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY),
                                                                            os.environ.get("PYTHONPATH")]))}
    one_group = [*CLI_GRID[:CLI_GRID.index("--strategies") + 1], "bptt", *CLI_GRID[CLI_GRID.index("--clips"):]]
    completed = subprocess.run([sys.executable, "-m", "trainers.experiments.sweep", str(tmp_path), *one_group,
                                "--executor", "ray", "--address", cluster, "--quiet"],
                               capture_output=True, text=True, env={**environment, FAST_COMPILATION: "1"},
                               timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert "2 runs in 1 groups" in completed.stdout and "2 trained" in completed.stdout
    _assert_same_metrics(tmp_path, local_sweep, strategies=("bptt",))
    assert ray.cluster_resources().get("CPU") == 2              # the cluster still runs


def test_without_ray_installed_the_error_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)              # what `import ray` does when it is missing
    with pytest.raises(SystemExit):
        main([str(tmp_path), *CLI_GRID, "--executor", "ray", "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install 'diffenvs[ray]'" in lines[0]


@pytest.mark.parametrize("options, message", [
    ({"executor": "dask"}, "executor must be 'local' or 'ray'"),
    ({"address": "127.0.0.1:6379"}, "apply to executor 'ray'"),
    ({"executor": "ray", "callback": print}, "callback: not supported by executor 'ray'"),
    ({"executor": "ray", "cpus_per_task": 0}, "cpus_per_task must be a number > 0"),
    ({"executor": "ray", "gpus_per_task": -1}, "gpus_per_task must be a number >= 0"),
])
def test_bad_executor_options_are_refused_before_anything_runs(options, message, tmp_path):
    with pytest.raises(ValueError, match=re.escape(message)):
        run_sweep(GRID, tmp_path, quiet=True, **options)
    assert not list(tmp_path.iterdir())
