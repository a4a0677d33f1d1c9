"""Run archives: export -> import round trips, deterministic bytes, merging, plotting straight from an
archive and errors for malformed archives (synthetic run directories: nothing is trained here)."""

import csv
import gzip
import io
import json
import math

import numpy as np
import pytest

from trainers import rundir
from trainers.experiments import archive
from trainers.cli import plot_main
from trainers.experiments.plotting import find_runs, summary_table
from trainers.experiments.sweep import main as sweep_main


def _trainer_run(root, name, *, level=1, strategy="bptt", clip="none", seed=0, epochs=40, done=None, failed=False):
    """A run directory as train/the sweep write it: float32 losses written as float64 reprs."""
    run_dir = root / name
    config = {"task": "CartPole", "env_params": {"num_poles": level}, "strategy": strategy, "clip": clip,
              "seed": seed, "num_train": 32, "batch_size": 8, "epochs": epochs, "truncate_every": None,
              "es_population": 32, "learning_rate": 1e-3, "clip_threshold": 0.1}
    rundir.write_config(run_dir, config)
    rng = np.random.default_rng(hash((name, seed)) % 2**32)
    rows = []
    for e in range((epochs if done is None else done) + 1):
        f32 = lambda x: float(np.float32(x))                         # noqa: E731
        rows.append({"epoch": e, "batch_loss": math.nan if e == 0 else f32(rng.lognormal()),
                     "train_loss": f32(rng.lognormal() / (1 + e)), "test_loss": f32((1 + seed) * 2.0 / (1 + e)),
                     "update_norm_squared": math.nan if e == 0 else f32(rng.random() * 1e-7),
                     "cosine": math.nan if strategy != "combined" or e == 0 else f32(rng.uniform(-1, 1)),
                     "epoch_seconds": 0.0 if e == 0 else float(rng.random())})    # float64
    rundir.write_metrics(run_dir, rows)
    if failed:
        (run_dir / "failed.json").write_text(json.dumps({"epoch": 7, "message": "non-finite"}, indent=2) + "\n")
    (run_dir / "checkpoint.npz").write_bytes(b"not archived")
    return run_dir


def _baseline_run(root, name):
    """An RL baseline's run directory: other columns (integer env_steps), a cut-short last line."""
    run_dir = root / name
    rundir.write_config(run_dir, {"task": "CartPole", "env_params": {"num_poles": 2}, "strategy": "ppo",
                                  "clip": "none", "seed": 0, "epochs": 4})
    text = "epoch,env_steps,wall_seconds,train_loss,test_loss\n"
    text += "".join(f"{e},{e * 1000},{e * 1.37},{1.0 / 3 / (1 + e)!r},{1.0 / (1 + e)!r}\n" for e in range(5))
    (run_dir / rundir.METRICS_FILE).write_text(text + "5,5000,7.")      # cut short by an interrupted write
    return run_dir


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "sweep"
    for level in (1, 2):
        for strategy in ("bptt", "combined"):
            for seed in (0, 1):
                _trainer_run(root, f"l{level}-{strategy}-none-{seed}", level=level, strategy=strategy, seed=seed)
    _trainer_run(root, "partial", level=2, strategy="modified", clip="norm", done=9)
    _trainer_run(root, "stopped", level=2, strategy="one_step", clip="value", done=7, failed=True)
    _baseline_run(root / "baselines", "ppo")
    return root


def _runs_of(root):
    return {run.relative_to(root).as_posix(): run for run in (c.parent for c in root.rglob("config.json"))}


def test_round_trip_is_lossless_and_bytes_are_deterministic(root, tmp_path):
    path = tmp_path / "out" / "cartpole.csv.gz"
    names = archive.export_runs([root], path)
    assert names == sorted(_runs_of(root)) and "baselines/ppo" in names
    first = path.read_bytes()
    assert gzip.decompress(first).startswith(b"run,kind,config,meta,epoch,batch_loss,train_loss,test_loss")
    archive.export_runs([root], tmp_path / "again.csv.gz")
    assert (tmp_path / "again.csv.gz").read_bytes() == first           # same input, same bytes
    assert archive.archive_bytes(reversed(list(archive.read_archive(path).values()))) == first

    run_dirs = archive.import_runs(path, tmp_path / "imported")
    assert [d.relative_to(tmp_path / "imported").as_posix() for d in run_dirs] == names
    for name, original in _runs_of(root).items():
        copy = tmp_path / "imported" / name
        assert rundir.read_config(copy) == rundir.read_config(original)
        assert (copy / "config.json").read_bytes() == (original / "config.json").read_bytes()
        assert not (copy / "checkpoint.npz").exists()
        assert (copy / "failed.json").exists() == (original / "failed.json").exists()
        text = (original / "metrics.csv").read_text()
        if name == "baselines/ppo":
            text = text[:text.rfind("\n") + 1]                          # the cut-short line is not archived
        assert (copy / "metrics.csv").read_text() == text               # byte-identical
        before, after = rundir.read_metrics(original), rundir.read_metrics(copy)
        assert len(after) == len(before) > 0                            # read_metrics drops the cut line too
        for row_before, row_after in zip(before, after):
            assert row_before.keys() == row_after.keys()
            for key in row_before:
                assert np.float64(row_before[key]).tobytes() == np.float64(row_after[key]).tobytes()  # bitwise
    assert (tmp_path / "imported" / "stopped" / "failed.json").read_text() == (root / "stopped" / "failed.json").read_text()
    with pytest.raises(ValueError, match="not an empty directory"):
        archive.import_runs(path, tmp_path / "imported")


def test_float32_columns_are_stored_short_and_restored_exactly(root, tmp_path):
    path = archive.write_archive([archive.read_run_dir(root / "l1-combined-none-0")], tmp_path / "one.csv.gz")
    lines = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    meta = json.loads(lines[1][3])
    assert meta["columns"] == list(rundir.METRIC_COLUMNS)
    assert set(meta["float32"]) == {"batch_loss", "train_loss", "test_loss", "update_norm_squared", "cosine"}
    assert "epoch" not in meta["float32"] and "epoch_seconds" not in meta["float32"]   # ints, float64
    header = lines[0]
    stored = float(lines[4][header.index("test_loss")])
    original = rundir.read_metrics(root / "l1-combined-none-0")[2]["test_loss"]
    assert len(lines[4][header.index("test_loss")]) < len(repr(original)) and float(np.float32(stored)) == original
    run = archive.read_archive(path)["l1-combined-none-0"]
    assert run.metrics_text() == (root / "l1-combined-none-0" / "metrics.csv").read_text()


def test_merge_adds_and_replaces_runs_by_name(root, tmp_path):
    path = tmp_path / "merged.csv.gz"
    archive.export_runs([root / "l1-bptt-none-0", root / "l1-bptt-none-1"], path)
    _trainer_run(tmp_path / "machine2", "l1-bptt-none-1", seed=1, done=3)          # a newer version of one run
    _trainer_run(tmp_path / "machine2", "l2-bptt-none-0", level=2)
    archive.export_runs([tmp_path / "machine2"], path, merge=True)
    runs = archive.read_archive(path)
    assert sorted(runs) == ["l1-bptt-none-0", "l1-bptt-none-1", "l2-bptt-none-0"]
    assert len(runs["l1-bptt-none-1"].rows) == 4                                    # replaced
    assert runs["l1-bptt-none-0"] == archive.read_run_dir(root / "l1-bptt-none-0")  # kept
    # merging in any order gives the same bytes as exporting everything at once
    archive.export_runs([root / "l1-bptt-none-0", tmp_path / "machine2"], tmp_path / "once.csv.gz")
    assert (tmp_path / "once.csv.gz").read_bytes() == path.read_bytes()
    # without --merge the archive is replaced whole; archives are valid inputs too
    archive.export_runs([tmp_path / "machine2"], path)
    assert sorted(archive.read_archive(path)) == ["l1-bptt-none-1", "l2-bptt-none-0"]
    archive.export_runs([path, root / "partial"], tmp_path / "combined.csv.gz")
    assert sorted(archive.read_archive(tmp_path / "combined.csv.gz")) == ["l1-bptt-none-1", "l2-bptt-none-0", "partial"]
    with pytest.raises(ValueError, match="two different runs are named 'l1-bptt-none-1'"):
        archive.export_runs([root, tmp_path / "machine2"], tmp_path / "clash.csv.gz")


def test_sweep_cli_exports_merges_and_imports(root, tmp_path, capsys):
    path = tmp_path / "docs" / "results" / "cartpole.csv.gz"
    assert sweep_main([str(root / "baselines"), "--export", str(path)]) == 0
    assert sweep_main([str(root), "--export", str(path), "--merge"]) == 0
    assert "exported 11 runs" in capsys.readouterr().out
    assert sorted(archive.read_archive(path)) == sorted(["ppo"] + list(_runs_of(root)))
    assert sweep_main([str(tmp_path / "back"), "--import-archive", str(path)]) == 0
    assert (tmp_path / "back" / "baselines" / "ppo" / "metrics.csv").exists()
    with pytest.raises(SystemExit):
        sweep_main([str(root), "--merge"])


@pytest.mark.slow
def test_plotting_from_an_archive_matches_the_run_directories(root, tmp_path):
    path = tmp_path / "cartpole.csv.gz"
    archive.export_runs([root], path)
    from_dirs = find_runs([root])
    from_archive = find_runs([path])
    assert len(from_dirs) == len(from_archive)
    for a, b in zip(sorted(from_dirs, key=lambda r: r.run_dir.relative_to(root).as_posix()), from_archive):
        assert b.run_dir == path / a.run_dir.relative_to(root).as_posix()
        assert a.config == b.config and a.failed == b.failed and a.columns.keys() == b.columns.keys()
        for key in a.columns:
            assert a.columns[key].tobytes() == b.columns[key].tobytes()
    runs_d, summary_d, markdown_d = summary_table([root], tmp_path / "d" / "summary.csv")
    runs_a, summary_a, markdown_a = summary_table([path], tmp_path / "a" / "summary.csv")
    assert summary_a == summary_d and markdown_a == markdown_d
    assert (tmp_path / "a" / "summary.csv").read_bytes() == (tmp_path / "d" / "summary.csv").read_bytes()
    strip = lambda rows: [{k: v for k, v in row.items() if k != "run_dir"} for row in rows]   # noqa: E731
    assert strip(runs_a) == strip(runs_d)
    assert {row["status"] for row in runs_a} == {"finished", "partial", "failed"}
    # diffenvs-plot takes archives among its runs, mixed with run directories
    assert plot_main([str(path), "--study", "cartpole", "--out", str(tmp_path / "study.png"),
                      "--table", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "study.png").stat().st_size > 5000
    assert (tmp_path / "t.csv").read_bytes() == (tmp_path / "d" / "summary.csv").read_bytes()
    assert plot_main([str(path), str(root / "baselines"), "--x", "env_steps", "--out", str(tmp_path / "x.png")]) == 0


def _archive_text(text, path):
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    return path


GOOD = ('run,kind,config,meta,epoch,test_loss\n'
        'a,run,"{}","{""columns"":[""epoch"",""test_loss""],""float32"":[]}",,\n'
        'a,row,,,0,1.5\n')


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("run,kind", "name,kind"), "header must begin with run,kind,config,meta"),
    (GOOD.replace("0,1.5", "0,oops"), "line 3: .*'test_loss' holds 'oops', not a number"),
    (GOOD.replace("0,1.5", "0,1.5,2"), "line 3: 7 fields, expected 6"),
    (GOOD.replace('"{}"', '"{nope"'), "config is not valid JSON"),
    (GOOD.replace('"{}"', '"[1]"'), "config must be a JSON object"),
    (GOOD.replace('""float32"":[]', '""float32"":[""cosine""]'), "float32 columns"),
    (GOOD.replace('[""epoch"",""test_loss""]', '[""epoch"",""seconds""]'), "must be distinct and in the header"),
    (GOOD.replace("a,row", "b,row"), "does not follow that run's 'run' row"),
    (GOOD.replace("a,row", "a,pickle"), "kind must be one of"),
    (GOOD.replace("\na,", "\n../x,"), "invalid run name '../x'"),
    (GOOD + GOOD.split("\n", 1)[1], "run 'a' appears twice"),
    ('run,kind,config,meta,epoch\na,run,"{}","{""columns"":[""epoch""],""float32"":[]}",\na,row,,,"1\n',
     "malformed CSV"),
])
def test_malformed_archives_raise_value_errors_naming_the_file(tmp_path, text, message):
    assert archive.read_archive(_archive_text(GOOD, tmp_path / "good.csv.gz"))["a"].rows == (("0", "1.5"),)
    path = _archive_text(text, tmp_path / "bad.csv.gz")
    with pytest.raises(ValueError, match=message) as error:
        archive.read_archive(path)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="bad.csv.gz"):
        archive.import_runs(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()                                    # nothing written


def test_non_archives_are_refused(tmp_path, root):
    (tmp_path / "plain.csv").write_text("epoch,test_loss\n0,1.0\n")
    with pytest.raises(ValueError, match="plain.csv: not a gzip-compressed run archive"):
        archive.read_archive(tmp_path / "plain.csv")
    with pytest.raises(ValueError, match="plain.csv: not a gzip-compressed run archive"):
        find_runs([tmp_path / "plain.csv"])
    with pytest.raises(ValueError, match="missing.csv.gz: no such archive"):
        archive.read_archive(tmp_path / "missing.csv.gz")
    (tmp_path / "binary.csv.gz").write_bytes(gzip.compress(b"\xff\xfe\x00"))
    with pytest.raises(ValueError, match="not UTF-8"):
        archive.read_archive(tmp_path / "binary.csv.gz")
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path / "plain.csv"), "--out", str(tmp_path / "p.png")])
