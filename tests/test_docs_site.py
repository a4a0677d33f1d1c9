"""The documentation site builds with ``mkdocs build --strict``: a broken link or anchor, a page missing
from the nav, or an API reference that does not resolve fails the build, and so this test.

One build (a few seconds) into a temporary directory; the checks below read the built pages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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


@pytest.mark.slow
def test_every_nav_page_is_built(site: Path):
    for page in ("index.html", "install/index.html", "quickstart/index.html", "environments/index.html",
                 "environments-adapters/index.html", "environments-reference/index.html", "strategies/index.html",
                 "sweeps/index.html", "run-directories/index.html", "cluster/index.html", "external-environments/index.html",
                 "physics/index.html", "trainers/index.html", "results/index.html", "results-cartpole/index.html",
                 "results-guidance/index.html", "results-quantum/index.html", "results-beyond/index.html",
                 "results-modern/index.html", "results-external/index.html", "results-protocol/index.html", "rl-comparison/index.html",
                 "performance/index.html", "measurements/index.html", "api/diffenvs/index.html",
                 "api/trainers/index.html"):
        assert (site / page).is_file(), page


@pytest.mark.slow
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


@pytest.mark.slow
def test_math_and_figures_are_in_the_pages(site: Path):
    physics = (site / "physics/index.html").read_text()
    assert physics.count('class="arithmatex"') > 20
    results = (site / "results/index.html").read_text()
    assert 'src="../images/results_cartpole.png"' in results
    assert (site / "images/results_cartpole.png").is_file()


def test_the_study_reports_open_short_and_with_their_table_or_figure():
    """A study report's page is read first: at most 200 lines, its table or figure within the first 30
    lines; the per-task detail, protocols and commands live on sub-pages."""
    for name in ("results.md", "rl-comparison.md", "performance.md", "results-external.md"):
        lines = (ROOT / "docs" / name).read_text().splitlines()
        assert len(lines) <= 200, f"docs/{name} has {len(lines)} lines; move detail to a sub-page"
        opening = "\n".join(lines[:30])
        assert "|---" in opening or "![" in opening or "<!-- rl-study table" in opening, name


GUIDE_PAGES = ("environments.md", "environments-adapters.md", "environments-reference.md", "trainers.md",
               "strategies.md", "sweeps.md", "run-directories.md", "external-environments.md")
"""The Guide's pages on the environments and the trainers, split by topic."""


def test_the_guide_pages_open_with_what_a_user_needs():
    """A Guide page is read by someone who wants to use the library: at most 250 lines, a command, an
    example, a table or a figure within its first 30 lines, and it is in the site's navigation."""
    navigation = (ROOT / "mkdocs.yml").read_text()
    for name in GUIDE_PAGES:
        lines = (ROOT / "docs" / name).read_text().splitlines()
        assert len(lines) <= 250, f"docs/{name} has {len(lines)} lines; move detail to a sub-page"
        opening = "\n".join(lines[:30])
        assert "```" in opening or "|---" in opening or "![" in opening, name
        assert f": {name}\n" in navigation, f"docs/{name} is not in the nav of mkdocs.yml"


def test_the_readme_links_to_files_of_this_repository():
    """README.md is not part of the site, so mkdocs does not check its links: every relative link must
    name a file of the repository."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    relative = [target for target in targets if "://" not in target]
    assert relative, "the README links to the documentation pages"
    missing = [target for target in relative if not (ROOT / target).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def _formulas(html: str) -> list[tuple[str, bool]]:
    """(TeX, display) of every math element that pymdownx.arithmatex emitted into a built page."""
    import html as html_module
    found = []
    for tag, body in re.findall(r'<(span|div) class="arithmatex">(.*?)</\1>', html, re.DOTALL):
        text = html_module.unescape(body).strip()
        match = re.fullmatch(r"\\\((.*)\\\)|\\\[(.*)\\\]", text, re.DOTALL)
        assert match, f"arithmatex emitted {text[:80]!r} without \\( \\) or \\[ \\] delimiters"
        found.append((match.group(1) if match.group(1) is not None else match.group(2), tag == "div"))
    return found


@pytest.mark.slow
def test_the_site_loads_nothing_from_another_host(site: Path):
    """Scripts, styles, fonts and icons come with the site: it reads offline."""
    external = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
    for page in site.rglob("*.html"):
        html = page.read_text()
        for tag in re.findall(r"<script\b[^>]*>|<link\b[^>]*>|<img\b[^>]*>|<source\b[^>]*>", html):
            rel = re.search(r'\brel="([^"]*)"', tag)
            if tag.startswith("<link") and rel and rel.group(1) not in ("stylesheet", "preload", "icon", "modulepreload"):
                continue                                # canonical, prev/next: links, not loads
            for url in re.findall(r'\b(?:src|href)="([^"]*)"', tag):
                assert not external.match(url), f"{page.relative_to(site)} loads {url}"
        assert not re.search(r"@import\s+url\(\s*[\"']?(?:https?:)?//", html), page
    for stylesheet in ("javascripts/katex/katex.min.css", "stylesheets/extra.css"):
        css = (site / stylesheet).read_text()
        assert not re.search(r"url\(\s*[\"']?(?:https?:)?//", css), stylesheet
        for font in re.findall(r"url\(([^)]+)\)", css):
            assert (site / stylesheet).parent.joinpath(font.strip("\"'")).is_file(), f"{stylesheet}: {font}"
    for script in ("javascripts/katex/katex.min.js", "javascripts/katex/auto-render.min.js", "javascripts/katex.js"):
        assert (site / script).is_file(), script
    index = (site / "index.html").read_text()
    assert 'src="javascripts/katex/katex.min.js"' in index and "javascripts/katex/katex.min.css" in index


@pytest.mark.slow
def test_the_formulas_of_environments_and_diagnostics_are_tex(site: Path):
    for page, minimum in (("environments", 10), ("environments-reference", 40), ("diagnostics", 40), ("physics", 20)):
        formulas = _formulas((site / page / "index.html").read_text())
        assert len(formulas) >= minimum, (page, len(formulas))
    environments = "".join((ROOT / "docs" / name).read_text()
                           for name in ("environments.md", "environments-adapters.md", "environments-reference.md"))
    diagnostics = (ROOT / "docs/diagnostics.md").read_text()
    for ascii_formula in ("mean_k cos θ_k", "|⟨φ_n, ψ", "e^{iφ_1}", "−∂²/∂x²", "mean p_e²"):
        assert ascii_formula not in environments, ascii_formula
    for ascii_formula in ("‖∇θ L_H‖", "x_{t+1} = S(x_t, N(x_t; θ))", "spread/√8", "(1/T) log ‖J", "Σ_i ‖g_i"):
        assert ascii_formula not in diagnostics, ascii_formula


@pytest.mark.slow
def test_katex_renders_every_formula_of_the_site(site: Path, tmp_path: Path):
    """Every formula parses with the KaTeX the site ships (a TeX error would show as red source)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the formulas are checked by KaTeX in node where it is")
    formulas = sorted({formula for page in site.rglob("*.html") for formula in _formulas(page.read_text())})
    assert len(formulas) > 100
    (tmp_path / "formulas.json").write_text(json.dumps(formulas))
    script = (
        "const katex = require(process.argv[1]); const fs = require('fs');"
        "const failed = [];"
        "for (const [tex, display] of JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))) {"
        "  try { katex.renderToString(tex, {displayMode: display, throwOnError: true}); }"
        "  catch (error) { failed.push(tex + ' -> ' + error.message); } }"
        "console.log(JSON.stringify(failed));")
    completed = subprocess.run([node, "-e", script, str(site / "javascripts/katex/katex.min.js"),
                                str(tmp_path / "formulas.json")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    failed = json.loads(completed.stdout)
    assert not failed, "KaTeX cannot render:\n" + "\n".join(failed[:20])


def _documented_objects() -> list[tuple[str, str, str]]:
    """(page, module, name) of every object that a ``:::`` block of the API pages renders: the block's
    object itself, or each of its ``members``."""
    import importlib
    documented = []
    for page in sorted((ROOT / "docs/api").glob("*.md")):
        text = page.read_text()
        for match in re.finditer(r"^::: ([\w.]+)\n((?:[ \t]+.*\n?)*)", text, re.MULTILINE):
            path, options = match.group(1), match.group(2)
            members = re.search(r"members:\s*\[([^\]]*)\]", options)
            try:
                importlib.import_module(path)
                is_module = True
            except ImportError:
                is_module = False
            if is_module and members:
                documented += [(page.stem, path, name.strip()) for name in members.group(1).split(",")]
            elif not is_module:
                module, _, name = path.rpartition(".")
                documented.append((page.stem, module, name))
    return documented


@pytest.mark.slow
@pytest.mark.parametrize("package", ["diffenvs", "trainers", "trainers.strategies"])
def test_every_exported_name_is_in_the_api_reference(site: Path, package: str):
    """Each name of a package's ``__all__`` is rendered (with its docstring) on an API page."""
    import importlib
    exported = importlib.import_module(package)
    documented = _documented_objects()
    missing, unrendered = [], []
    for name in exported.__all__:
        value = getattr(exported, name)
        places = [(page, module, member) for page, module, member in documented
                  if member == name and getattr(importlib.import_module(module), member, None) is value]
        if not places:
            missing.append(name)
            continue
        page, module, member = places[0]
        if f'id="{module}.{member}"' not in (site / "api" / page / "index.html").read_text():
            unrendered.append(f"{module}.{member}")
    assert not missing, f"{package} exports names that docs/api/*.md does not document: {missing}"
    assert not unrendered, f"listed in docs/api/*.md but not rendered (no docstring?): {unrendered}"


@pytest.mark.slow
def test_the_main_entry_points_document_their_arguments_as_tables(site: Path):
    """Google-style Args/Returns/Raises (and a dataclass's Attributes) render as tables."""
    pages = {"diffenvs": (site / "api/diffenvs/index.html").read_text(),
             "trainers": (site / "api/trainers/index.html").read_text()}
    for page, anchor, sections in (
            ("diffenvs", "diffenvs.registry.make", ("Parameters", "Returns", "Raises")),
            ("trainers", "trainers.training.train", ("Parameters", "Returns", "Raises")),
            ("trainers", "trainers.presets.study_preset", ("Parameters", "Returns", "Raises")),
            ("trainers", "trainers.experiments.sweep.run_sweep", ("Parameters", "Returns", "Raises")),
            ("trainers", "trainers.config.TrainConfig", ("Attributes",)),
            ("trainers", "trainers.strategies.base.Strategy", ("Attributes",))):
        html = pages[page]
        start = html.index(f'id="{anchor}"')
        following = re.search(r'<h[1-6] id="(?!' + re.escape(anchor) + r'\.)', html[start + 10:])
        body = html[start:start + 10 + following.start()] if following else html[start:]
        for section in sections:
            assert re.search(rf"<span class=\"doc-section-title\">{section}:</span>\s*</p>\s*<table>", body), \
                (anchor, section)
