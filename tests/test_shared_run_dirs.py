"""Run directories shared by several processes: train() and sweeps lock what they write."""

import subprocess
import sys

import pytest

from trainers import rundir
from trainers.experiments.sweep import SweepSpec, run_sweep
from trainers.training import TrainConfig, train

TINY = dict(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, num_train=16, num_test=16,
            batch_size=8, epochs=3, checkpoint_every=1)
HOLD = ("import sys, time\nfrom trainers import rundir\nheld = rundir.lock(sys.argv[1])\n"
        "print('locked', flush=True)\ntime.sleep(120)\n")


@pytest.mark.slow
def test_train_refuses_a_run_directory_that_another_process_trains(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunDirBusyError, match=f"process {holder.pid}"):
            train(TrainConfig(**TINY), out=tmp_path / "run", quiet=True)
        assert rundir.read_metrics(tmp_path / "run") == []            # nothing was written
    finally:
        holder.kill()
        holder.wait()
    result = train(TrainConfig(**TINY), out=tmp_path / "run", quiet=True)   # the lock died with its holder
    assert len(result.metrics) == TINY["epochs"] + 1


def _sweep_command(out):
    return [sys.executable, "-m", "trainers.experiments.sweep", str(out), "--tasks", "cartpole", "--levels", "1",
            "--strategies", "bptt", "combined", "--clips", "none", "norm",
            "--max-group", "1", "--epochs", "3", "--checkpoint-every", "1", "--quiet",
            "--set", "num_train=16", "--set", "num_test=16", "--set", 'env_params={"num_steps": 20}']


def _strip(rows):
    return [{k: repr(v) for k, v in row.items() if k != "epoch_seconds"} for row in rows]


@pytest.mark.slow
def test_two_sweep_processes_share_a_grid_and_equal_one_sweep(tmp_path):
    """Two diffenvs-sweep processes on one output: every run trained once, every epoch written once
    (read_metrics refuses interleaved rows), and the metrics equal a single sweep's bit for bit."""
    processes = [subprocess.Popen(_sweep_command(tmp_path / "shared"), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trained = [int(output.split("diffenvs-sweep: ")[-1].split(" trained")[0]) for output in outputs]
    assert sum(trained) == 4 and min(trained) >= 1, outputs          # both worked, no run trained twice
    spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt", "combined"),
                     clips=("none", "norm"), options={"epochs": 3, "checkpoint_every": 1, "num_train": 16,
                                                      "num_test": 16, "env_params": {"num_steps": 20}})
    single = run_sweep(spec, tmp_path / "single", quiet=True, max_group=1)
    for status in single.runs:
        shared = rundir.read_metrics(tmp_path / "shared" / status.run.name)
        assert _strip(shared) == _strip(rundir.read_metrics(status.run.run_dir))
