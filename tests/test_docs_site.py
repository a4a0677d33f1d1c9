"""The documentation site builds with ``mkdocs build --strict``: a broken link or anchor, a page missing
from the nav, or an API reference that does not resolve fails the build, and so this test.

One build (a few seconds) into a temporary directory; the checks below read the built pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site_dir = tmp_path_factory.mktemp("site")
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                               cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert "No module named mkdocs" not in completed.stderr, \
        "mkdocs is not installed: install the test extra, .venv/bin/pip install -e '.[dev]'"
    assert completed.returncode == 0, f"mkdocs build --strict failed:\n{completed.stderr[-4000:]}"
    return site_dir


def test_every_nav_page_is_built(site: Path):
    for page in ("index.html", "install/index.html", "quickstart/index.html", "environments/index.html",
                 "physics/index.html", "trainers/index.html", "results/index.html", "results-cartpole/index.html",
                 "results-guidance/index.html", "results-quantum/index.html", "results-beyond/index.html",
                 "results-modern/index.html", "results-protocol/index.html", "rl-comparison/index.html",
                 "performance/index.html", "measurements/index.html", "api/diffenvs/index.html",
                 "api/trainers/index.html"):
        assert (site / page).is_file(), page


def test_the_api_reference_is_generated_from_the_docstrings(site: Path):
    diffenvs_page = (site / "api/diffenvs/index.html").read_text()
    trainers_page = (site / "api/trainers/index.html").read_text()
    for anchor in ("diffenvs.registry.make", "diffenvs.cartpole.CartPoleParams", "diffenvs.gym_adapter.GymEnv",
                   "diffenvs.brax_adapter.brax_env", "diffenvs.gymnax_adapter.gymnax_env",
                   "diffenvs.external.gymnax.make_gymnax_env", "diffenvs.external.brax.make_brax_env"):
        assert f'id="{anchor}"' in diffenvs_page, anchor
    for anchor in ("trainers.config.TrainConfig", "trainers.engine.train_members", "trainers.presets.study_preset",
                   "trainers.experiments.sweep.SweepSpec", "trainers.experiments.archive.export_runs"):
        assert f'id="{anchor}"' in trainers_page, anchor
    # a sentence of a docstring, rendered
    assert "semi-implicit Euler step" in diffenvs_page
    # reST roles are rendered as plain code spans (docs/hooks.py)
    for page in (diffenvs_page, trainers_page):
        assert not re.search(r":(class|func|meth|mod|data):<code>", page)


def test_math_and_figures_are_in_the_pages(site: Path):
    physics = (site / "physics/index.html").read_text()
    assert physics.count('class="arithmatex"') > 20
    results = (site / "results/index.html").read_text()
    assert 'src="../images/results_cartpole.png"' in results
    assert (site / "images/results_cartpole.png").is_file()


def test_the_study_reports_open_short_and_with_their_table_or_figure():
    """A study report's page is read first: at most 200 lines, its table or figure within the first 30
    lines; the per-task detail, protocols and commands live on sub-pages."""
    for name in ("results.md", "rl-comparison.md", "performance.md"):
        lines = (ROOT / "docs" / name).read_text().splitlines()
        assert len(lines) <= 200, f"docs/{name} has {len(lines)} lines; move detail to a sub-page"
        opening = "\n".join(lines[:30])
        assert "|---" in opening or "![" in opening or "<!-- rl-study table" in opening, name


def test_the_readme_links_to_files_of_this_repository():
    """README.md is not part of the site, so mkdocs does not check its links: every relative link must
    name a file of the repository."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [target for target in targets if "://" not in target]
    assert relative, "the README links to the documentation pages"
    missing = [target for target in relative if not (ROOT / target).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"
