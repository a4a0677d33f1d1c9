"""docs/run_milestones.py, which prints the per-run tables of docs/results.md from a committed archive."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trainers.archive import read_archive

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "docs" / "results" / "quantum.csv.gz"


def load_milestones():
    spec = importlib.util.spec_from_file_location("run_milestones", ROOT / "docs" / "run_milestones.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_milestones_match_the_archive(capsys):
    milestones = load_milestones()
    text = milestones.milestones_markdown([ARCHIVE], epochs=[50], level=3)
    lines = text.splitlines()[2:]
    runs = read_archive(ARCHIVE)
    assert len(lines) == len(runs)
    for run in runs.values():
        column = run.columns.index("test_loss")
        losses = np.array([float(row[column]) for row in run.rows])
        best = int(np.argmin(losses))
        near_50 = np.median(losses[25:75])                       # epochs 25 to 74
        clip = milestones.CLIP_NAMES[run.config["clip"]]
        expected = (f"| `{run.config['strategy']}`, {clip} | {run.config['seed']} | {losses[0]:.1f} | "
                    f"{losses[best]:.1f} ({best}) | {near_50:.1f} | {np.median(losses[-50:]):.1f} |")
        assert expected in lines
    assert milestones.main([str(ARCHIVE), "--level", "3", "--epochs", "50"]) == 0
    assert capsys.readouterr().out == text
    with pytest.raises(SystemExit):
        milestones.main([str(ARCHIVE), "--level", "9"])
    assert "no runs of level 9" in capsys.readouterr().err
