"""Metrics of short runs of every study strategy through train() and through a sweep, to compare two
versions of the library bit for bit.

    .venv/bin/python benchmarks/engine_parity.py record after.json        # in each checkout
    .venv/bin/python benchmarks/engine_parity.py compare before.json after.json

``record`` trains cart-pole (2 poles, study protocol, 3 epochs, 64 + 32 states) with bptt, modified,
network_only, one_step, combined, truncated(10) and es, clipping none and norm, once through
``train()`` and once as a sweep of two seeds; ``compare`` prints, per run, IDENTICAL or the largest
relative difference of each column.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile


def record(path: str) -> None:
    from trainers import rundir
    from trainers.presets import study_preset
    from trainers.experiments.sweep import SweepSpec, run_sweep
    from trainers.training import train

    out = {}
    options = dict(epochs=3, num_train=64, num_test=32)
    for strategy, extra in [("bptt", {}), ("modified", {}), ("one_step", {}), ("combined", {}),
                            ("network_only", {}), ("truncated", {"truncate_every": 10}), ("es", {})]:
        for clip in ("none", "norm"):
            rows = train(study_preset("cartpole", 2, strategy=strategy, clip=clip, **extra, **options),
                         quiet=True).metrics
            out[f"train/{strategy}/{clip}"] = [{k: repr(v) for k, v in r.items() if k != "epoch_seconds"}
                                              for r in rows]
    with tempfile.TemporaryDirectory() as root:
        spec = SweepSpec(tasks=("cartpole",), levels=(2,),
                         strategies=("bptt", "modified", "combined", "one_step", "truncated:10", "es"),
                         clips=("none", "norm"), seeds=(0, 1), options=options)
        for status in run_sweep(spec, root, quiet=True).runs:
            config = status.run.config
            key = f"sweep/{config.strategy}{config.truncate_every or ''}/{config.clip}/{config.seed}"
            out[key] = [{k: repr(v) for k, v in r.items() if k != "epoch_seconds"}
                        for r in rundir.read_metrics(status.run.run_dir)]
    with open(path, "w") as handle:
        json.dump(out, handle, indent=1, sort_keys=True)
    print(f"{len(out)} runs recorded in {path}")


def compare(before_path: str, after_path: str) -> None:
    with open(before_path) as handle:
        before = json.load(handle)
    with open(after_path) as handle:
        after = json.load(handle)
    print(f"{'run':28} result")
    for key in sorted(set(before) & set(after)):
        worst: dict[str, float] = {}
        for old, new in zip(before[key], after[key]):
            for column in old:
                x, y = float(old[column]), float(new[column])
                if not (math.isnan(x) and math.isnan(y)) and x != y:
                    worst[column] = max(worst.get(column, 0.0), abs(x - y) / max(abs(x), 1e-30))
        added = sorted(set(after[key][0]) - set(before[key][0]))
        text = "IDENTICAL" if not worst else ", ".join(f"{c} {v:.1e}" for c, v in sorted(worst.items()))
        print(f"{key:28} {text}" + (f" (new columns: {', '.join(added)})" if added else ""))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: engine_parity.py record OUT.json | compare BEFORE.json AFTER.json")
