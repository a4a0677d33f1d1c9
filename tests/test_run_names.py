"""One naming scheme for run directories across the commands, and finding runs by their configuration
(old names included): a sweep, a comparison and diffenvs-train resume runs named by earlier versions."""

from __future__ import annotations

import re

import pytest

from trainers import rundir
from trainers.cli import default_run_dir, runs_main, train_main
from trainers.config import run_name
from trainers.experiments.comparison import run_dir_for
from trainers.experiments.comparison import run_name as comparison_name
from trainers.experiments.sweep import SweepSpec, config_record, plan, run_sweep
from trainers.presets import study_preset
from trainers.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("fast_compilation")

TINY = dict(env_params={"num_steps": 10}, num_train=8, num_test=8, batch_size=8, checkpoint_every=1)
HASH = r"[0-9a-f]{8}"


def test_every_command_names_its_runs_the_same_way():
    assert run_name(TrainConfig()) == "cartpole-poles1-combined-none-seed0"
    # diffenvs-train, a sweep's run and a baseline of the same run name it alike
    cli = default_run_dir(TrainConfig(strategy="bptt", clip="norm", seed=2, epochs=30)).name
    (group,) = plan(SweepSpec(levels=(1,), strategies=("bptt",), clips=("norm",), seeds=(2,)), "unused")
    assert cli == group.runs[0].name == "cartpole-poles1-bptt-norm-seed2"
    assert comparison_name("cartpole", 2, "ppo", 0) == "cartpole-poles2-ppo-seed0"
    assert re.fullmatch(rf"cartpole-poles4-shac-norm-seed0-{HASH}", comparison_name("cartpole", 4, "shac:horizon=16", 0))
    assert run_name(TrainConfig(task="guidance")) == "guidance-rc0.01-combined-none-seed0"
    assert run_name(TrainConfig(task="QuantumControl", env_params={"target_state": 4})) == \
        "quantum-target4-combined-none-seed0"
    assert run_name(TrainConfig(strategy="truncated", truncate_every=10)) == "cartpole-poles1-truncated10-none-seed0"
    assert run_name(TrainConfig(strategy="es", es_population=64)) == "cartpole-poles1-es64-none-seed0"
    # epochs never: a larger --epochs continues the run in the same directory
    assert run_name(TrainConfig(epochs=7)) == run_name(TrainConfig(epochs=1000))
    # the default level given explicitly is the same run; any other option adds a hash of the options
    assert run_name(TrainConfig(env_params={"num_poles": 1})) == run_name(TrainConfig())
    variants = [dict(learning_rate=3e-4), dict(learning_rate=1e-4), dict(batch_size=4), dict(precision="float64"),
                dict(optimizer="sgd"), dict(checkpoint_every=5), dict(strategy="es", es_noise=0.05),
                dict(env_params={"loss_mode": "continuous"}), dict(strategy="shac", strategy_options={"horizon": 16})]
    names = [run_name(TrainConfig(**fields)) for fields in variants]
    assert all(re.fullmatch(rf"cartpole-poles1-(combined|es|shac)-none-seed0-{HASH}", name) for name in names), names
    assert len(set(names)) == len(names)
    # a config.json record names its run like the config it was written from
    assert run_name(config_record(study_preset("quantum", 5, strategy="bptt", learning_rate=3e-4))) == \
        run_name(study_preset("quantum", 5, strategy="bptt", learning_rate=3e-4))


def _write_run(path, record, epoch=3, loss=0.5):
    rundir.write_config(path, record)
    rundir.write_metrics(path, [{"epoch": e, "batch_loss": loss, "train_loss": loss, "test_loss": loss / (e + 1),
                                 "update_norm_squared": 1.0, "cosine": 0.0, "epoch_seconds": 0.1}
                                for e in range(epoch + 1)])


def test_runs_are_found_by_their_configuration_whatever_their_names(tmp_path, capsys):
    # names of three earlier schemes: a sweep's, a comparison's and diffenvs-train's
    old_sweep = tmp_path / "sweep" / "CartPole-num_poles2-bptt-none-seed0-1afe2944"
    _write_run(old_sweep, config_record(study_preset("cartpole", 2, strategy="bptt")))
    old_compare = tmp_path / "compare" / "cartpole-num_poles1-ppo-seed0"
    _write_run(old_compare, {"task": "cartpole", "env_params": {"num_poles": 1}, "strategy": "ppo", "algo": "ppo",
                             "clip": "none", "seed": 0})
    old_train = tmp_path / "cartpole-poles1-combined-none-seed1-lr0.0003"
    _write_run(old_train, {**TrainConfig(seed=1, learning_rate=3e-4).to_dict(), "controller": "study"})
    guidance = tmp_path / "guidance-rc0.1-bptt-norm-seed0"
    _write_run(guidance, {**TrainConfig(task="GuidanceByRepulsion", env_params={"regularization": 0.1},
                                        strategy="bptt", clip="norm").to_dict(), "controller": "study"})

    find = rundir.find_run_dirs
    assert find(tmp_path, task="cartpole") == sorted([old_train, old_compare, old_sweep])
    assert find(tmp_path, task="CartPole", level=2) == [old_sweep]
    assert find(tmp_path, num_poles=1) == [old_train, old_compare]        # the default level counts too
    assert find(tmp_path, strategy=["bptt", "ppo"]) == sorted([guidance, old_compare, old_sweep])
    assert find(tmp_path, learning_rate=3e-4) == [old_train]
    assert find(tmp_path, clip="norm", regularization=0.1) == [guidance]
    assert find(tmp_path, precision="float32", seed=1) == [old_train]      # omitted keys take their defaults
    assert find(tmp_path / "sweep") == [old_sweep]
    with pytest.raises(ValueError, match="task: name must be one of"):
        find(tmp_path, task="cartpol")

    capsys.readouterr()
    assert runs_main([str(tmp_path), "--strategy", "bptt", "--level", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{old_sweep}  epoch 3, test loss 0.125" and out[-1].startswith("diffenvs-runs: 1 runs")
    assert runs_main([str(tmp_path), "--where", "learning_rate=3e-4"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{old_train}  epoch 3")
    # the comparison finds its runs under their old names
    assert run_dir_for(tmp_path / "compare", "CartPole", 1, "ppo", 0) == old_compare
    assert run_dir_for(tmp_path / "compare", "CartPole", 2, "ppo", 0).name == "cartpole-poles2-ppo-seed0"


@pytest.mark.slow
def test_a_sweep_resumes_a_run_under_its_old_name(tmp_path):
    spec = SweepSpec(levels=(1,), strategies=("bptt",), clips=("none",), options={**TINY, "epochs": 1})
    run_sweep(spec, tmp_path, quiet=True)
    (new,) = list(tmp_path.iterdir())
    assert new.name == "cartpole-poles1-bptt-none-seed0-" + new.name.rsplit("-", 1)[1]
    old = tmp_path / "CartPole-num_poles1-bptt-none-seed0-1afe2944"                # an earlier version's name
    new.rename(old)
    first = [(row["epoch"], row["test_loss"], row["epoch_seconds"]) for row in rundir.read_metrics(old)]
    longer = SweepSpec(levels=(1,), strategies=("bptt",), clips=("none",), options={**TINY, "epochs": 2})
    (group,) = plan(longer, tmp_path)
    assert group.runs[0].run_dir == old
    (status,) = run_sweep(longer, tmp_path, quiet=True).runs
    assert status.status == "trained" and status.epoch == 2
    assert [path.name for path in tmp_path.iterdir()] == [old.name]                  # no second directory
    assert rundir.checkpoint_epoch(old) == 2
    rows = [(row["epoch"], row["test_loss"], row["epoch_seconds"]) for row in rundir.read_metrics(old)]
    assert rows[:2] == first and len(rows) == 3                     # resumed (epoch 1's time kept), not restarted


@pytest.mark.slow
def test_diffenvs_train_resumes_a_run_under_its_old_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "runs" / "cartpole-poles1-bptt-none-seed0-train8-test8"       # the earlier naming
    config = TrainConfig(task="CartPole", env_params={"num_poles": 1}, strategy="bptt", num_train=8, num_test=8, epochs=1)
    train(config, out=old, quiet=True)
    capsys.readouterr()
    argv = ["--strategy", "bptt", "--train-size", "8", "--test-size", "8", "--quiet", "--no-plot"]
    assert train_main([*argv, "--epochs", "1"]) == 0
    assert f"{old.relative_to(tmp_path)} is finished" in capsys.readouterr().out
    assert train_main([*argv, "--epochs", "2"]) == 0
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [old.name]
    assert rundir.checkpoint_epoch(old) == 2
