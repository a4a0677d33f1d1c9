"""The pages speak to strangers about the library, not about how it was made.

Every Markdown page of the repository (README.md, CONTRIBUTING.md, CHANGELOG.md and everything under
docs/) is read as prose: fenced code blocks, inline code, math, HTML comments, block quotes and text
in double quotes are removed first, so commands, printed output, equations and quotations are free.
The prose must not speak of the project's own issues, sessions, logs or lost directories, nor in the
first person ("I", "we", "our"). Dates and load averages belong to the measurement records
(docs/measurements.md) and the changelog only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

OTHER_PROJECTS = ("brax", "jax", "jaxlib", "flax", "optax", "gymnasium", "gymnax", "mkdocs", "mkdocstrings",
                  "material", "ray", "numpy", "rliable", "mujoco", "xla", "python", "github")
"""An issue of another project ("brax issue 671") is a reference a reader can follow."""

PROCESS_WORDS: dict[str, str] = {
    "an issue of this project": r"(?i:\bissues? #?[0-9]+)",
    "a session": r"\bsessions?\b",
    "a numbered stop": r"\bstop [0-9]+",
    "'I measured' or 'I ran'": r"\bI (?:measured|ran)\b",
    "the first person": r"(?<![-/.])\b(?:I|we|We|our|Our|ours|Ours)\b(?![-/.])",
    "a lost directory": r"\bwas lost\b",
    "a session log": r"\bsession log\b",
}
"""What no page may say (name -> regular expression, matched on prose only)."""

DATED: dict[str, str] = {
    "a date": r"\b20[0-9]{2}-[0-9]{2}-[0-9]{2}\b",
    "a load average": r"\bload average",
}
"""What only the measurement records and the changelog may say."""

DATED_ALLOWED = {"docs/measurements.md", "CHANGELOG.md"}


def documents() -> list[str]:
    top = [name for name in ("README.md", "CONTRIBUTING.md", "CHANGELOG.md") if (ROOT / name).is_file()]
    return top + sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md"))


def prose_lines(text: str) -> list[str]:
    """The text's lines with everything that is not prose blanked (line numbers are kept)."""
    text = re.sub(r"<!--.*?-->", lambda match: "\n" * match.group().count("\n"), text, flags=re.S)
    lines = text.split("\n")
    out: list[str] = []
    fence: str | None = None
    in_math = False
    for line in lines:
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            out.append("")
            continue
        marker = re.match(r"(```+|~~~+)", stripped)
        if marker:
            fence = marker.group(1)
            out.append("")
            continue
        if in_math:
            in_math = not (stripped.endswith("$$") or stripped.endswith(r"\]"))
            out.append("")
            continue
        if stripped in ("$$", r"\[") or (stripped.startswith("$$") and not stripped[2:].rstrip().endswith("$$")):
            in_math = True
            out.append("")
            continue
        if stripped.startswith(">"):
            out.append("")
            continue
        line = re.sub(r"`+[^`]*`+", " ", line)                   # inline code
        line = re.sub(r"\$\$.*?\$\$|\$[^$]+\$|\\\(.*?\\\)", " ", line)  # inline math
        line = re.sub(r"\"[^\"]*\"|“[^”]*”", " ", line)           # quotations
        line = re.sub(r"\]\([^)]*\)", "]", line)                   # link targets
        out.append(line)
    return out


def _issue_of_other_project(line: str, start: int) -> bool:
    before = line[:start].split()
    return bool(before) and before[-1].strip("(,;:").lower() in OTHER_PROJECTS


def violations(name: str, text: str) -> list[str]:
    """``name:line: what`` for every process word, and (outside the allowed files) every date."""
    found = []
    checks = dict(PROCESS_WORDS)
    if name not in DATED_ALLOWED:
        checks.update(DATED)
    for number, line in enumerate(prose_lines(text), start=1):
        for what, pattern in checks.items():
            for match in re.finditer(pattern, line):
                if what == "an issue of this project" and _issue_of_other_project(line, match.start()):
                    continue
                found.append(f"{name}:{number}: {what}: {match.group()!r} in {line.strip()[:120]!r}")
    return found


def test_the_patterns_catch_process_words_and_spare_code_math_and_quotes():
    caught = {
        "The speed target of issue 4 is not met.": "an issue of this project",
        "Issue 12 asks for more.": "an issue of this project",
        "The run directory of the earlier session were gone.": "a session",
        "It stalled at stop 7.": "a numbered stop",
        "On that day I measured it.": "'I measured' or 'I ran'",
        "We ran the sweep.": "the first person",
        "a choice of ours": "the first person",
        "Our choice of noise.": "the first person",
        "its run directory was lost with that machine": "a lost directory",
        "the figures come from the session log": "a session log",
        "Run on 2026-11-23 at 14:13 UTC.": "a date",
        "load average 1.7 at the start": "a load average",
    }
    for sentence, what in caught.items():
        found = violations("docs/page.md", sentence)
        assert any(f": {what}: " in item for item in found), (sentence, found)
    spared = [
        "jax is kept below 0.10 (brax issue 671).",
        "Run it as `--part I/2` of the sweep.",
        "trains the I-th of N disjoint parts",
        "```text\nwe ran this in the session on 2026-11-23, load average 3\n```",
        "$$\n\\left(I + \\tfrac{i \\Delta t}{2} H\\right) \\psi' = \\psi\n$$",
        "the matrix $I - A$ is invertible",
        "> We show that the combined update converges.",
        'the study calls it "our combined update"',
        "<!-- written by the report command on 2026-12-03 -->",
        "Sessions of Ray are not meant here: a `ray.init` session.",
    ]
    for text in spared[:-1]:
        assert violations("docs/page.md", text) == [], text
    assert [item for item in violations("docs/page.md", spared[-1]) if "session" in item], \
        "prose 'Sessions' is caught even when code beside it is not"
    assert violations("docs/measurements.md", "Run on 2026-11-23, load average 1.7.") == []
    assert violations("CHANGELOG.md", "## 0.1.0 (2026-12-07)") == []
    assert violations("docs/measurements.md", "We ran it on 2026-11-23.") != [], "process words are banned everywhere"


@pytest.mark.parametrize("name", documents())
def test_the_page_speaks_to_strangers(name: str):
    found = violations(name, (ROOT / name).read_text(encoding="utf-8"))
    assert not found, "process words, first person or dates outside the measurement records:\n" + "\n".join(found)
