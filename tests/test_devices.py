"""A sweep group's runs split over several devices (CPU host devices here) with jax sharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = """
import json, sys
import jax
from trainers import engine, rundir
from trainers.experiments.sweep import SweepSpec, run_sweep
devices = int(sys.argv[2])
spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt", "modified", "one_step"), clips=("none",),
                 options={"epochs": 3, "checkpoint_every": 1, "num_train": 16, "num_test": 16,
                          "env_params": {"num_steps": 20}})
result = run_sweep(spec, sys.argv[1], quiet=True, devices=devices)
used = {len(sharding.device_set) for program in engine._PROGRAMS.values()
        for compiled in program.executables.values() for sharding in jax.tree.leaves(compiled.input_shardings)}
print(json.dumps({"devices": len(jax.devices()), "used": sorted(used),
                  "runs": {s.run.name: rundir.read_metrics(s.run.run_dir) for s in result.runs}}))
"""


def _sweep(out, devices):
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    output = subprocess.run([sys.executable, "-c", SCRIPT, str(out), str(devices)], env=environment,
                            capture_output=True, text=True, timeout=600)
    assert output.returncode == 0, output.stderr[-2000:]
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_group_split_over_two_devices_agrees_with_one_device(tmp_path):
    one, two = _sweep(tmp_path / "one", 1), _sweep(tmp_path / "two", 2)
    assert one["devices"] == two["devices"] == 2
    assert one["used"] == [1] and two["used"] == [2]         # three runs: padded to four, two per device
    assert one["runs"].keys() == two["runs"].keys() and len(one["runs"]) == 3
    for name, rows in one["runs"].items():
        other = two["runs"][name]
        assert [row["epoch"] for row in rows] == [row["epoch"] for row in other] == [0, 1, 2, 3]
        for column in ("batch_loss", "train_loss", "test_loss", "update_norm_squared"):
            np.testing.assert_allclose([row[column] for row in other[1:]], [row[column] for row in rows[1:]],
                                       rtol=1e-4, err_msg=f"{name} {column}")


def test_more_host_devices_than_cores_warn_in_one_line():
    cores = len(os.sched_getaffinity(0))
    environment = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={cores + 1}"}
    check = ("import warnings, sys\nfrom trainers import engine\n"
             "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
             f"    engine.group_devices({cores})\n    print(len(caught))\n    engine.group_devices({cores + 1})\n"
             "    print(len(caught), caught[-1].category.__name__, caught[-1].message)\n")
    output = subprocess.run([sys.executable, "-c", check], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert output.returncode == 0, output.stderr[-2000:]
    assert output.stdout.splitlines() == ["0", f"1 DeviceCountWarning devices: {cores + 1} CPU host devices on "
                                          f"{cores} cores train no faster than {cores} (host devices share the "
                                          f"cores; each needs one of its own to help); pass --devices {cores} "
                                          f"or fewer"]


@pytest.mark.slow
def test_the_sweep_command_warns_about_too_many_devices_in_one_line_and_trains_on(tmp_path):
    cores = len(os.sched_getaffinity(0))
    command = ("import sys\nfrom trainers.cli import sweep_main\nsys.exit(sweep_main(sys.argv[1:]))")
    output = subprocess.run([sys.executable, "-c", command, str(tmp_path), "--levels", "1", "--strategies", "bptt",
                             "--clips", "none", "--epochs", "1", "--set", "num_train=8", "--set", "num_test=8",
                             "--set", 'env_params={"num_steps": 10}', "--devices", str(cores + 1), "--quiet"],
                            env={**os.environ, "XLA_FLAGS": ""}, capture_output=True, text=True, timeout=300)
    assert output.returncode == 0, output.stderr[-2000:]
    warned = [line for line in output.stderr.splitlines() if "warning" in line.lower()]
    assert warned == [f"diffenvs-sweep: warning: devices: {cores + 1} CPU host devices on {cores} cores train no "
                      f"faster than {cores} (host devices share the cores; each needs one of its own to help); "
                      f"pass --devices {cores} or fewer"], output.stderr
    assert "1 trained" in output.stdout
