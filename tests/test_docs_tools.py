"""docs/run_milestones.py, which prints the per-run tables of docs/results.md from a committed archive."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from trainers.experiments.archive import read_archive

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
    runs = [run for run in read_archive(ARCHIVE).values() if run.config["env_params"]["target_state"] == 3]
    assert len(lines) == len(runs) > 0
    for run in runs:
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


def test_milestones_mark_a_run_stopped_by_a_non_finite_value(tmp_path):
    milestones = load_milestones()
    metrics = "epoch,test_loss\n" + "".join(f"{epoch},{100.0 - epoch}\n" for epoch in range(8))
    for name, failed in (("stopped", True), ("finished", False)):
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.json").write_text('{"task": "QuantumControl", "strategy": "bptt", "clip": "norm", '
                                             f'"seed": {int(failed)}, "env_params": {{"target_state": 4}}}}')
        (run_dir / "metrics.csv").write_text(metrics)
        if failed:
            (run_dir / "failed.json").write_text('{"epoch": 8}')
    lines = milestones.milestones_markdown([tmp_path], epochs=[4]).splitlines()[2:]
    assert lines == ["| `bptt`, clip by norm 1 | 0 | 100.0 | 93.0 (7) | 96.5 | 96.5 |",
                     "| `bptt`, clip by norm 1 (stopped after epoch 7: non-finite) | 1 | 100.0 | 93.0 (7) | 96.5 | 96.5 |"]
