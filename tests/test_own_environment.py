"""The "your own environment" page: its example (docs/examples/mass_spring.py) trains with bptt, combined
and shac, passes the gradient check, and reaches the command line through --import."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "mass_spring.py"


def _example():
    if "mass_spring" in sys.modules:
        return sys.modules["mass_spring"]
    spec = importlib.util.spec_from_file_location("mass_spring", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mass_spring"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_example_trains_with_bptt_combined_and_shac_and_bptt_lowers_the_loss(capsys):
    results = _example().main(epochs=3)
    assert set(results) == {"bptt", "combined", "shac"}
    for strategy, rows in results.items():
        assert len(rows) == 4 and all(math.isfinite(row["test_loss"]) for row in rows), strategy
        assert rows[-1]["test_loss"] != rows[0]["test_loss"], strategy          # the parameters moved
    bptt = results["bptt"]
    assert bptt[-1]["test_loss"] < 0.8 * bptt[0]["test_loss"]
    assert "gradient check: largest relative error" in capsys.readouterr().out


def test_the_example_environment_meets_the_protocol_and_its_gradients_match_finite_differences():
    import diffenvs
    _example()
    env = diffenvs.make("mass-spring", num_masses=2)
    assert isinstance(env, diffenvs.ControlEnv)
    check = diffenvs.check_gradients(env, steps=12, directions=6)
    assert check.passed and check.max_relative_error < 1e-6
    assert any(abs(value) > 1e-3 for value in check.automatic)               # a derivative that is not trivially 0


def _write_module(tmp_path: Path, name: str) -> Path:
    shutil.copy(EXAMPLE, tmp_path / f"{name}.py")
    return tmp_path


def _environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.slow
def test_diffenvs_train_reaches_a_registered_environment_through_import(tmp_path):
    _write_module(tmp_path, "my_chain")
    out = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from trainers.cli import train_main; sys.exit(train_main())",
               "mass-spring", "--import", "my_chain", "--strategy", "bptt", "--epochs", "2", "--env-param",
               "num_masses=2", "--train-size", "16", "--test-size", "8", "--out", str(out), "--quiet", "--no-plot"]
    done = subprocess.run(command, capture_output=True, text=True, env=_environment(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "mass-spring" and config["env_params"] == {"num_steps": 60, "num_masses": 2}
    assert config["learning_rate"] == 3e-3 and config["batch_size"] == 8      # the preset's
    assert (out / "checkpoint.npz").exists()
    # without --import the task is unknown: one line, no traceback
    failed = subprocess.run(command[:4] + command[6:], capture_output=True, text=True, env=_environment(tmp_path),
                            timeout=600)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert "TASK: name must be one of" in failed.stderr and "'mass-spring'" in failed.stderr
