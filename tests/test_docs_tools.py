"""docs/run_milestones.py and docs/modern_comparison.py, which print the tables of docs/results.md from run archives."""

import importlib.util
import json
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


@pytest.mark.slow
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


def load_modern_comparison():
    spec = importlib.util.spec_from_file_location("modern_comparison", ROOT / "docs" / "modern_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(root, name, config, losses):
    run_dir = root / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "metrics.csv").write_text("epoch,test_loss\n" + "".join(f"{e},{v}\n" for e, v in enumerate(losses)))


@pytest.mark.slow
def test_modern_comparison_table_and_figure(tmp_path, capsys):
    comparison = load_modern_comparison()
    base = {"task": "CartPole", "env_params": {"num_poles": 4}, "clip": "none"}
    for seed, scale in enumerate((1.0, 2.0, 4.0)):             # 60 epochs: the last 50 are epochs 11..60
        _write_run(tmp_path, f"bptt{seed}", {**base, "strategy": "bptt", "seed": seed},
                   [2.0] + [scale * (100 - epoch) for epoch in range(1, 61)])
    _write_run(tmp_path, "hig0", {**base, "strategy": "hig", "seed": 0}, [2.0, 1.5, 1.0, 0.5])  # 3 epochs
    _write_run(tmp_path, "ivw64", {"task": "QuantumControl", "env_params": {"target_state": 5}, "clip": "none",
                                   "strategy": "ivw", "precision": "float64", "seed": 1}, [128.0, 120.0])
    _write_run(tmp_path, "shac0", {**base, "strategy": "shac", "seed": 0}, [2.0] + list(range(1, 401)))
    _write_run(tmp_path, "clipped", {**base, "strategy": "shac", "seed": 0, "clip": "norm"}, [2.0, 1.0])
    _write_run(tmp_path, "other_level", {**base, "env_params": {"num_poles": 3}, "strategy": "shac", "seed": 0},
               [2.0, 1.0])
    lines = comparison.comparison_markdown([tmp_path]).splitlines()[2:]
    # the loss at epoch E is the median over the last 5 % of the epochs up to E (at least one epoch)
    bptt_medians = [scale * np.median([100 - epoch for epoch in range(58, 61)]) for scale in (1.0, 2.0, 4.0)]
    assert bptt_medians == [41.0, 82.0, 164.0]
    # shac: the last 20 of 400 epochs at the end; it spends the compute of 1000 bptt epochs (3.4x each) at
    # epoch 294, the median of epochs 281..294 (14 = 294 // 20)
    assert (np.median(np.arange(381, 401)), np.median(np.arange(281, 295))) == (390.5, 287.5)
    assert lines == [
        "| cart-pole, 4 poles | `bptt` | 0, 1, 2 | 60 | 1 | 2 (2–2) | 82 (41–164) | 82 (41–164) |",
        "| cart-pole, 4 poles | `shac` | 0 | 400 | 3.4 | 2 | 390 | 288 |",
        "| cart-pole, 4 poles | `hig` | 0 | 3 | 45.6 | 2 | 0.5 | 0.5 |",               # its last epoch
        "| quantum control, target 5 | `ivw, float64` | 1 | 1 | 6.9 | 128 | 120 | 120 |",
    ]                                                   # the clipped run and the other level are left out
    out = comparison.plot([tmp_path], tmp_path / "figure.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        comparison.main([str(tmp_path / "clipped")])
    assert "no runs without clipping at the hardest levels" in capsys.readouterr().err


def load_external_tasks():
    spec = importlib.util.spec_from_file_location("external_tasks", ROOT / "docs" / "external_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_external_tasks_tables_verdict_and_figure(tmp_path, capsys):
    external = load_external_tasks()
    reacher = {"task": "gymnax:Reacher-misc", "env_params": {"num_steps": 100}, "clip": "none"}
    pendulum = {"task": "gymnax:Pendulum-v1", "env_params": {"num_steps": 200}, "clip": "none"}
    for seed in range(3):       # 40 epochs: the end is the median of the last 2 (40 // 20)
        _write_run(tmp_path, f"r-bptt{seed}", {**reacher, "strategy": "bptt", "seed": seed},
                   [-10.0] + [-20.0 - seed] * 40)
        _write_run(tmp_path, f"r-combined{seed}", {**reacher, "strategy": "combined", "seed": seed},
                   [-10.0] + [-30.0 - seed] * 40)
        _write_run(tmp_path, f"p-bptt{seed}", {**pendulum, "strategy": "bptt", "seed": seed},
                   [1200.0] + [1000.0 + 100 * seed] * 40)
        _write_run(tmp_path, f"p-combined{seed}", {**pendulum, "strategy": "combined", "seed": seed},
                   [1200.0] + [1050.0 + 100 * seed] * 40)
    _write_run(tmp_path, "other-task", {"task": "CartPole", "env_params": {"num_poles": 4}, "clip": "none",
                                        "strategy": "bptt", "seed": 0}, [2.0, 1.0])
    lines = external.results_markdown([tmp_path]).splitlines()[2:]
    assert lines == [
        "| Pendulum-v1 (gymnax) | `bptt` | 0, 1, 2 | 40 | 1200 (1200–1200) | 1100 (1000–1200) | -1100 (-1200 to -1000) |  |",
        "| Pendulum-v1 (gymnax) | `combined` | 0, 1, 2 | 40 | 1200 (1200–1200) | 1150 (1050–1250) | -1150 (-1250 to -1050) | no: within the seed spread |",
        "| Reacher-misc (gymnax) | `bptt` | 0, 1, 2 | 40 | -10 (-10 to -10) | -21 (-22 to -20) | 21 (20–22) |  |",
        "| Reacher-misc (gymnax) | `combined` | 0, 1, 2 | 40 | -10 (-10 to -10) | -31 (-32 to -30) | 31 (30–32) | yes |",
    ]                                               # the cart-pole run is not one of the tasks
    assert external.plot([tmp_path], tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        external.main([str(tmp_path / "other-task")])
    assert "no runs of gymnax:Pendulum-v1" in capsys.readouterr().err
