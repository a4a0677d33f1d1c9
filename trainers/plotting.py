"""Study-style figures from run directories: test loss on a log scale against epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from trainers import rundir

LINE_STYLES = {"none": "-", "value": "--", "norm": ":"}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` values (same length as ``values``)."""
    if window <= 1 or len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, *, smooth: int = 1,
              title: str | None = None) -> Path:
    """Draw the test loss of each run against epochs (log scale), one colour per strategy and one
    line style per clipping mode, and save it as a PNG at ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for run_dir in run_dirs:
        config = rundir.read_config(Path(run_dir))
        rows = rundir.read_metrics(Path(run_dir))
        if config is None or not rows:
            raise ValueError(f"run_dirs: {run_dir} is not a run directory with config.json and metrics.csv")
        runs.append((config, rows))
    strategies = sorted({config["strategy"] for config, _ in runs})
    colours = {name: f"C{index}" for index, name in enumerate(strategies)}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for config, rows in runs:
        epochs = np.array([row["epoch"] for row in rows])
        loss = moving_average(np.array([row["test_loss"] for row in rows]), smooth)
        label = f"{config['strategy']} (clip {config['clip']})"
        axes.plot(epochs, loss, color=colours[config["strategy"]], linestyle=LINE_STYLES.get(config["clip"], "-"),
                  label=None if label in labelled else label, linewidth=1.4)
        labelled.add(label)
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("test loss")
    axes.set_title(title or ", ".join(sorted({_describe(config) for config, _ in runs})))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _describe(config: dict) -> str:
    params = ", ".join(f"{key}={value}" for key, value in sorted(config.get("env_params", {}).items()))
    return f"{config['task']} ({params})" if params else config["task"]
