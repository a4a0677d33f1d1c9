"""The release: one version string, a changelog and citation that name it, runs that resume across versions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import diffenvs
from trainers.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once_and_setuptools_reads_it():
    pyproject = (ROOT / "pyproject.toml").read_text()
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert not re.search(r"^version\s*=", project, re.MULTILINE), "pyproject.toml must not repeat the version"
    assert re.search(r'^dynamic\s*=\s*\["version"\]', project, re.MULTILINE)
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    # setuptools takes it from diffenvs.__version__ (the built wheel's metadata: tests/test_wheel.py)
    dynamic = tomllib.loads(pyproject)["tool"]["setuptools"]["dynamic"]
    assert dynamic == {"version": {"attr": "diffenvs.__version__"}}
    assert re.fullmatch(r"\d+\.\d+\.\d+", diffenvs.__version__)
    written = [path for path in (*ROOT.glob("diffenvs/**/*.py"), *ROOT.glob("trainers/**/*.py"))
               if f'"{diffenvs.__version__}"' in path.read_text()]
    assert written == [ROOT / "diffenvs/__init__.py"], written


def test_the_changelog_names_this_version_and_the_citation_the_study():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert headings[:2] == [diffenvs.__version__, "0.1.0"] or headings[:3] == ["Unreleased", diffenvs.__version__,
                                                                              "0.1.0"], headings
    for heading in headings:
        assert re.search(rf"^\[{re.escape(heading)}\]: https://", changelog, re.MULTILINE), f"no link for {heading}"
    import yaml
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert "version" not in citation, "the version is written once, in diffenvs/__init__.py"
    study = citation["preferred-citation"]
    assert study["title"] == "Stabilizing Backpropagation Through Time to Learn Complex Physics"
    assert [author["family-names"] for author in study["authors"]] == ["Schnell", "Thuerey"]
    assert study["year"] == 2024 and citation["repository-code"].startswith("https://")


@pytest.mark.slow
def test_a_run_recorded_by_an_older_version_resumes(tmp_path):
    """The version in config.json is provenance, not identity: upgrading does not strand a run."""
    tiny = dict(task="cartpole", env_params={"num_poles": 1, "num_steps": 20}, num_train=16, num_test=16,
                batch_size=8, epochs=4, checkpoint_every=2)
    train(TrainConfig(**{**tiny, "epochs": 2}), out=tmp_path, quiet=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["diffenvs_version"] == diffenvs.__version__
    (tmp_path / "config.json").write_text(json.dumps({**config, "diffenvs_version": "0.0.1"}))
    resumed = train(TrainConfig(**tiny), out=tmp_path, quiet=True)
    assert [row["epoch"] for row in resumed.metrics] == [0, 1, 2, 3, 4]
    assert json.loads((tmp_path / "config.json").read_text())["diffenvs_version"] == diffenvs.__version__
    # any other difference still refuses
    with pytest.raises(ValueError, match=r"differs in \['seed'\]"):
        train(TrainConfig(**{**tiny, "seed": 1}), out=tmp_path, quiet=True)


def test_the_docs_requirements_are_the_docs_extra():
    """docs/requirements.txt (the site's tools alone) and the ``docs`` extra name the same packages."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11 reads TOML")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = (ROOT / "docs/requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(requirements) == sorted(extras["docs"])
    assert not any(name.split("[")[0].split(">")[0] in ("diffenvs", "jax", "brax") for name in requirements)
    assert "diffenvs[docs,gymnax,stats,media]" in extras["dev"] and any(r.startswith("build") for r in extras["dev"])
