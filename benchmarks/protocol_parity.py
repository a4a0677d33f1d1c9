"""Metrics of short runs of every strategy family on cart-pole (1 pole) and quantum control (target 3),
through ``train()`` and a sweep group, and the diagnostics' numbers, to compare two versions of the
library bit for bit (a change of the environment protocol must leave the built-in tasks unchanged).

    .venv/bin/python benchmarks/protocol_parity.py record after.json        # in each checkout
    .venv/bin/python benchmarks/engine_parity.py compare before.json after.json

``record`` trains bptt, combined, truncated(10), es, shac (horizon 16), ivw and hig for 2 epochs on
16 + 8 states (batch 8) on each task, a sweep group of bptt, combined and truncated:10 with two seeds
on cart-pole, and evaluates the diagnostics (gradient norm by horizon, Lyapunov exponents,
per-episode gradient variance) at the untrained controller; the output has the layout of
``engine_parity.py`` (its ``compare`` prints IDENTICAL per entry).
"""

from __future__ import annotations

import json
import sys
import tempfile


def _rows(rows):
    return [{k: repr(v) for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def record(path: str) -> None:
    import numpy as np

    from trainers import rundir
    from trainers.experiments import diagnostics
    from trainers.experiments.sweep import SweepSpec, run_sweep
    from trainers.presets import study_preset
    from trainers.training import train

    out = {}
    options = dict(epochs=2, num_train=16, num_test=8, batch_size=8)
    strategies = [("bptt", {}), ("combined", {}), ("truncated", {"truncate_every": 10}), ("es", {}),
                  ("shac", {"strategy_options": {"horizon": 16}}), ("ivw", {}), ("hig", {})]
    for task, level in (("cartpole", 1), ("quantum", 3)):
        for strategy, extra in strategies:
            rows = train(study_preset(task, level, strategy=strategy, **extra, **options), quiet=True).metrics
            out[f"train/{task}/{strategy}"] = _rows(rows)
            print(task, strategy, rows[-1]["test_loss"], flush=True)
        result = diagnostics.diagnose(task, level, states=4, horizons=4)
        out[f"diagnose/{task}"] = [{f"{name}[{index}]": repr(value)
                                    for name in ("losses", "gradient_norms", "lyapunov", "episode_spread")
                                    for index, value in enumerate(np.ravel(result[name]).tolist())}]
    with tempfile.TemporaryDirectory() as root:
        spec = SweepSpec(tasks=("cartpole",), levels=(1,), strategies=("bptt", "combined", "truncated:10"),
                         clips=("none",), seeds=(0, 1), options=options)
        for status in run_sweep(spec, root, quiet=True).runs:
            config = status.run.config
            key = f"sweep/{config.strategy}{config.truncate_every or ''}/{config.seed}"
            out[key] = _rows(rundir.read_metrics(status.run.run_dir))
    with open(path, "w") as handle:
        json.dump(out, handle, indent=1, sort_keys=True)
    print(f"{len(out)} entries recorded in {path}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(sys.argv[2])
    else:
        sys.exit("usage: protocol_parity.py record OUT.json (compare with engine_parity.py compare)")
