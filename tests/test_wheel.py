"""The release artefacts: ``python -m build`` makes an sdist and a wheel (built from the sdist, so a file
missing from the sdist fails here), the wheel holds both packages, and it installs into a fresh virtual
environment and trains from outside the source tree.

The build takes about a minute; the install unpacks about 1 GB of dependencies (jax, brax, ...: 7 minutes
with the quickstart on a 2-core machine under a load of 12, with a warm pip cache), too long for every run
of the suite: it runs when ``DIFFENVS_WHEEL_CHECK=1`` is set, as ``.ci/run`` does after the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import diffenvs

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

QUICKSTART = """
import sys
from pathlib import Path
import jax, jax.numpy as jnp
import diffenvs
from trainers import train

source = Path(sys.argv[1]).resolve()
for module in (diffenvs, __import__("trainers")):
    assert source not in Path(module.__file__).resolve().parents, f"imported from the source tree: {module.__file__}"
assert diffenvs.__version__ == sys.argv[2], diffenvs.__version__

env = diffenvs.make("CartPole", num_poles=1, num_steps=20)
state = env.initial(jax.random.PRNGKey(0))
loss, gradient = jax.value_and_grad(lambda f: env.episode_loss(state, f))(jnp.zeros((env.num_steps(), 1)))
assert jnp.isfinite(loss) and jnp.all(jnp.isfinite(gradient))
result = train(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, strategy="combined", epochs=2,
               num_train=16, num_test=16, batch_size=8, out="run", quiet=True)
assert [row["epoch"] for row in result.metrics] == [0, 1, 2]
assert Path("run/metrics.csv").is_file() and Path("run/checkpoint.npz").is_file()
print("quickstart trained", len(result.metrics) - 1, "epochs, test loss", result.metrics[-1]["test_loss"])
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the build package is in the test extra: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                               capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("*.whl")
    return wheel


def test_build_makes_an_sdist_and_a_wheel_of_this_version(dist: Path):
    version = diffenvs.__version__
    assert (dist / f"diffenvs-{version}.tar.gz").is_file()
    assert _wheel(dist).name == f"diffenvs-{version}-py3-none-any.whl"


def test_the_wheel_holds_every_module_of_both_packages(dist: Path):
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    modules = {str(path.relative_to(ROOT)) for package in ("diffenvs", "trainers")
               for path in (ROOT / package).rglob("*.py")}
    assert modules - names == set(), f"missing from the wheel: {sorted(modules - names)}"
    info = f"diffenvs-{diffenvs.__version__}.dist-info"
    metadata = zipfile.ZipFile(_wheel(dist)).read(f"{info}/METADATA").decode()
    assert f"Version: {diffenvs.__version__}" in metadata and "License-Expression: Apache-2.0" in metadata
    assert f"{info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(_wheel(dist)).read(f"{info}/entry_points.txt").decode()
    for command in ("diffenvs-train", "diffenvs-sweep", "diffenvs-plot", "diffenvs-diagnose"):
        assert f"{command} = " in entry_points, command
    # nothing beside the two packages and their metadata (no tests, docs or benchmarks)
    assert {name.split("/")[0] for name in names} == {"diffenvs", "trainers", info}


@pytest.mark.skipif(os.environ.get("DIFFENVS_WHEEL_CHECK") != "1",
                    reason="installs about 1 GB into a fresh venv: set DIFFENVS_WHEEL_CHECK=1 (.ci/run does)")
def test_the_wheel_installs_into_a_fresh_venv_and_trains_outside_the_source_tree(dist: Path, tmp_path: Path):
    # nothing of the source tree on the path: pip would take its egg-info for an installed diffenvs
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=environment, check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                              str(_wheel(dist))], env=environment, capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "quickstart.py").write_text(QUICKSTART)
    completed = subprocess.run([str(python), "quickstart.py", str(ROOT), diffenvs.__version__], cwd=work,
                               env=environment, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "quickstart trained 2 epochs" in completed.stdout
    command = subprocess.run([str(venv / "bin" / "diffenvs-train"), "--help"], cwd=work, env=environment,
                             capture_output=True, text=True, timeout=300)
    assert command.returncode == 0 and "--strategy" in command.stdout, command.stderr[-2000:]
