"""The Python examples of README.md and docs/ run as written, with smaller budgets.

Each ```python block runs in a fresh interpreter (some enable float64 or write ``runs/``) in a temporary
working directory. A block's budget is shrunk by exact text replacements, each of which must occur in
the block, so an edited example cannot silently escape its test. A new block must be listed here.
Every page under docs/ is searched, so a block on a new page fails the listing test until it is listed.
An example that imports a library that is not installed (e.g. Stable-Baselines3, which needs PyTorch,
kept out of the test extra) is skipped, and the skip names the missing module.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md")))

SHRINK: dict[tuple[str, int], dict[str, str]] = {
    ("README.md", 0): {"epochs=30": "epochs=2"},
    ("docs/quickstart.md", 0): {"epochs=40": "epochs=2", "episodes=10": "episodes=1"},
    ("docs/environments.md", 0): {"range(200)": "range(3)"},
    ("docs/environments.md", 1): {},
    ("docs/environments.md", 2): {},
    ("docs/environments-adapters.md", 0): {},
    ("docs/environments-adapters.md", 1): {},
    ("docs/environments-adapters.md", 2): {},
    ("docs/environments-adapters.md", 3): {"total_timesteps=200_000": "total_timesteps=800", "range(16)": "range(2)"},
    ("docs/environments-adapters.md", 4): {"num_envs, num_steps = 64, 250": "num_envs, num_steps = 4, 250"},
    ("docs/environments-reference.md", 0): {"65536": "256"},
    ("docs/trainers.md", 0): {"seed=0)": "seed=0, epochs=2, num_train=16, num_test=16)"},
    ("docs/trainers.md", 1): {"epochs=30": "epochs=1, num_train=16, num_test=16", "episodes=10": "episodes=1"},
    ("docs/trainers.md", 2): {"epochs=30": "epochs=2, num_train=16, num_test=16"},
    ("docs/strategies.md", 0): {"epochs=5": "epochs=1"},
    ("docs/strategies.md", 1): {"epochs=30": "epochs=1, num_train=16, num_test=16"},
    ("docs/sweeps.md", 0): {"levels=(1, 2, 3, 4)": "levels=(1,)",
                            '{"epochs": 1000}': '{"epochs": 2, "num_train": 16, "num_test": 16}'},
    ("docs/extending.md", 0): {"epochs=5": "epochs=1, num_train=16, num_test=16"},
}
"""(document, block index) -> replacements that keep the example and cut its cost."""

AFTER: dict[tuple[str, int], tuple[str, int]] = {("docs/sweeps.md", 1): ("docs/sweeps.md", 0)}
"""Blocks that use what an earlier block wrote (run both in one interpreter); their SHRINK is below."""
SHRINK[("docs/sweeps.md", 1)] = {'["runs/cartpole", "runs/baselines"]': '["runs/cartpole"]'}

SKIPPED = {("docs/diagnostics.md", 0): "run with checked replacements and assertions on its results by "
                                     "tests/test_diagnostics.py::test_the_api_example_of_the_docs_runs",
           ("docs/own-environment.md", 0): "includes docs/examples/mass_spring.py, run by tests/test_own_environment.py",
           ("docs/own-environment.md", 1): "includes docs/examples/mass_spring.py, run by tests/test_own_environment.py",
           ("docs/own-environment.md", 2): "includes docs/examples/mass_spring.py, run by tests/test_own_environment.py",
           ("docs/rl-adapter.md", 0): "brax PPO for 1e6 steps (minutes of compilation and training); "
                                         "tests/test_baseline.py trains brax PPO through the same diffenvs.brax_env"}


def python_blocks(document: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / document).read_text(), re.S)


def _shrunk(key: tuple[str, int]) -> str:
    code = python_blocks(key[0])[key[1]]
    for old, new in SHRINK[key].items():
        assert old in code, f"{key[0]} block {key[1]}: the test's replacement {old!r} no longer occurs"
        code = code.replace(old, new)
    return code


def missing_modules(code: str) -> list[str]:
    """Top-level modules that the code imports and that cannot be found in this environment."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return sorted(name for name in names if importlib.util.find_spec(name) is None)


def test_missing_modules_finds_what_is_not_installed():
    code = "import os, json\nfrom no_such_module_xyz.sub import thing\nimport jax.numpy as jnp\n"
    assert missing_modules(code) == ["no_such_module_xyz"]
    assert missing_modules("import diffenvs\nfrom . import x\n") == []


def test_every_example_is_run_or_skipped_with_a_reason():
    found = {(document, index) for document in DOCUMENTS for index in range(len(python_blocks(document)))}
    assert found == set(SHRINK) | set(SKIPPED)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(SHRINK), ids=lambda key: f"{key[0]}-{key[1]}")
def test_example_runs(key, tmp_path):
    code = _shrunk(key)
    if key in AFTER:
        code = _shrunk(AFTER[key]) + "\n" + code
    missing = missing_modules(code)
    if missing:
        pytest.skip(f"{key[0]} block {key[1]} needs {', '.join(missing)}, which is not installed")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environment,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"{key[0]} block {key[1]} failed:\n{completed.stderr[-3000:]}"
