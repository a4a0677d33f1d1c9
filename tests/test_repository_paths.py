"""The repository stands alone: no tracked file names a path of one machine or a file outside the repository.

Scanned: every file that ``git ls-files`` lists, except binary files (a NUL byte or not UTF-8) and the
run tables ``docs/results/*.csv*`` (their ``run_dir`` column records where a run was trained).

What counts as a machine path (``MACHINE_PATH``): a path that starts at the root directory with one of
the top-level folders of a particular machine or user (work, home, root, Users, opt, tmp, mnt, scratch),
e.g. the interpreter of a virtual environment given by its absolute path, or a scratch directory under
the system's temporary folder. The leading slash must not follow a letter, digit, ``.``, ``/``, ``:``,
``~`` or ``-``, so the path part of a URL, a relative path with such a folder inside it, and words such
as "and/or" do not count (the self-test below lists examples). Commands in the docs use paths relative
to the repository root instead (``.venv/bin/python benchmarks/x.py``), and scratch directories in
examples are relative (``runs/x``).

What counts as a reference outside the repository (``OUTSIDE_REFERENCES``): the shared folder beside the
repository, its specification folder, or the specification file by name. The physics is documented
in docs/physics.md instead.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MACHINE_FOLDERS = ("work", "home", "root", "Users", "opt", "tmp", "mnt", "scratch")
MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(?:" + "|".join(MACHINE_FOLDERS) + r")(?:/|\b)")
"""An absolute path into one machine's folders (see the module docstring for what is not matched)."""

OUTSIDE_REFERENCES = re.compile("|".join(re.escape(text) for text in (
    ".." + "/" + "shared", "shared" + "/" + "spec", "problems" + "." + "md")))
"""A reference to a file outside the repository (built from pieces, so this file does not match itself)."""

SKIPPED = re.compile(r"^docs/results/[^/]*\.csv")


def tracked_text_files() -> list[tuple[str, str]]:
    """(path relative to the repository root, text) of every tracked text file that is scanned."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout ({error}): the tracked files cannot be listed")
    files = []
    for name in sorted(filter(None, listing.decode().split("\0"))):
        path = ROOT / name
        if SKIPPED.match(name) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            files.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def hits(pattern: re.Pattern[str], files: list[tuple[str, str]]) -> list[str]:
    """``path:line: text`` for every line of the files that the pattern matches."""
    found = []
    for name, text in files:
        for number, line in enumerate(text.splitlines(), start=1):
            if pattern.search(line):
                found.append(f"{name}:{number}: {line.strip()[:160]}")
    return found


def test_the_patterns_catch_machine_paths_and_spare_urls_and_relative_paths():
    slash = "/"
    machine = [f"{slash}work{slash}venv/bin/python x.py", f"see ({slash}home{slash}me/x)", f"cd {slash}tmp",
               f'"{slash}Users{slash}a/b"', f"--out={slash}tmp{slash}probe", f"`{slash}root{slash}.cache`"]
    harmless = [f"https://example.org{slash}home{slash}index.html", f"docs{slash}tmp{slash}x", "and/or",
                f"runs{slash}tmp-1", f"~{slash}work{slash}x", ".venv/bin/python benchmarks/x.py",
                f"x = a{slash}optimizer", f"http://h{slash}opt{slash}x"]
    assert all(MACHINE_PATH.search(text) for text in machine)
    assert not any(MACHINE_PATH.search(text) for text in harmless)
    assert OUTSIDE_REFERENCES.search("see " + ".." + "/" + "shared" + "/" + "spec/x")
    assert not OUTSIDE_REFERENCES.search("docs/physics.md")


def test_the_scan_covers_the_code_and_the_docs():
    names = {name for name, _ in tracked_text_files()}
    assert {"README.md", "docs/physics.md", "diffenvs/cartpole.py", "tests/test_repository_paths.py"} <= names
    assert not any(SKIPPED.match(name) for name in names)


def test_no_tracked_file_names_a_machine_path():
    found = hits(MACHINE_PATH, tracked_text_files())
    assert not found, "absolute machine paths (use paths relative to the repository root):\n" + "\n".join(found)


def test_no_tracked_file_refers_outside_the_repository():
    found = hits(OUTSIDE_REFERENCES, tracked_text_files())
    assert not found, "references to files outside the repository:\n" + "\n".join(found)
