"""The command-line tools as a new user meets them: run names, finished runs, errors and --help."""

from __future__ import annotations

import re

import pytest

from trainers import rundir
from trainers.experiments.baseline import _parser as baseline_parser
from trainers.experiments.baseline import main as baseline_main
from trainers.cli import _train_parser, default_run_dir, eval_main, plot_main, runs_main, sweep_main, train_main
from trainers.experiments.diagnostics import main as diagnose_main
from trainers.experiments.rl_study import main as rl_study_main
from trainers.experiments.comparison import main as compare_main
from trainers.experiments.sweep import _parser as sweep_parser
from trainers.training import TrainConfig

pytestmark = pytest.mark.usefixtures("fast_compilation")  # compilation dominates the training here

TINY = ["--epochs", "1", "--train-size", "8", "--test-size", "8", "--quiet", "--no-plot"]


def _error_line(capsys, function, argv) -> str:
    """The one error line of ``function(argv)``, which must exit with status 2 and no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        function(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0].split(": error: ", 1)[1]


@pytest.mark.slow
def test_default_run_directories_name_the_level_and_never_collide(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--strategy", "bptt", *TINY]) == 0
    first = tmp_path / default_run_dir(TrainConfig(task="CartPole", strategy="bptt", num_train=8, num_test=8))
    assert rundir.read_config(first)["env_params"] == {"num_poles": 1}
    # the README's next step: another level is another run, not a clash with the first
    assert train_main(["--poles", "2", "--strategy", "bptt", *TINY]) == 0
    second = tmp_path / default_run_dir(TrainConfig(task="CartPole", env_params={"num_poles": 2}, strategy="bptt",
                                                    num_train=8, num_test=8))
    assert rundir.read_config(second)["env_params"] == {"num_poles": 2}
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == sorted([first.name, second.name])
    # the default level given explicitly is the same run (finished: nothing trains)
    capsys.readouterr()
    assert train_main(["--poles", "1", "--strategy", "bptt", *TINY]) == 0
    assert "is finished" in capsys.readouterr().out


def test_run_names_carry_every_non_default_option_but_epochs():
    def name(**fields):
        return default_run_dir(TrainConfig(task="CartPole", **fields)).name

    assert name() == "cartpole-poles1-combined-none-seed0"
    assert name(epochs=30) == name(epochs=1000) == name()
    others = [name(learning_rate=3e-4), name(env_params={"loss_mode": "continuous"}, batch_size=4),
              name(optimizer="sgd", checkpoint_every=5), name(strategy="es", es_population=64, es_noise=0.05)]
    assert [other.rsplit("-", 1)[0] for other in others] == ["cartpole-poles1-combined-none-seed0"] * 3 + \
        ["cartpole-poles1-es64-none-seed0"]
    assert all(re.fullmatch("[0-9a-f]{8}", other.rsplit("-", 1)[1]) for other in others) and len(set(others)) == 4
    assert name(env_params={"num_poles": 2}, clip="norm", seed=3) == "cartpole-poles2-combined-norm-seed3"


@pytest.mark.slow
def test_a_finished_run_says_so_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    arguments = ["--strategy", "bptt", "--out", str(out), *TINY[:-2]]       # with progress output and plot
    assert train_main(arguments) == 0
    metrics = (out / rundir.METRICS_FILE).read_text()
    capsys.readouterr()
    assert train_main(arguments) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and captured.err == ""
    assert lines[0].startswith(f"diffenvs-train: {out} is finished (epoch 1")
    assert str(out / "metrics.csv") in lines[0] and str(out / "test_loss.png") in lines[0]
    assert (out / rundir.METRICS_FILE).read_text() == metrics
    # --resume on a finished run is no error either
    assert train_main([*arguments, "--resume"]) == 0
    assert "is finished" in capsys.readouterr().out


@pytest.mark.slow
def test_strategy_accepts_the_sweeps_spellings(tmp_path):
    out = tmp_path / "truncated"
    assert train_main(["--strategy", "truncated:10", "--out", str(out), *TINY]) == 0
    config = rundir.read_config(out)
    assert (config["strategy"], config["truncate_every"]) == ("truncated", 10)
    out = tmp_path / "es"
    assert train_main(["--strategy", "es:4", "--out", str(out), *TINY]) == 0
    config = rundir.read_config(out)
    assert (config["strategy"], config["es_population"]) == ("es", 4)


@pytest.mark.slow
def test_out_errors_name_the_flag_without_a_traceback(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    message = _error_line(capsys, train_main, ["--out", str(a_file), *TINY])
    assert message.startswith("--out: ") and "not a directory" in message
    message = _error_line(capsys, train_main, ["--out", str(a_file / "run"), *TINY])
    assert message.startswith("--out: ") and "is a file" in message
    out = tmp_path / "run"
    assert train_main(["--strategy", "bptt", "--out", str(out), *TINY]) == 0
    message = _error_line(capsys, train_main, ["--poles", "2", "--strategy", "bptt", "--out", str(out), *TINY])
    assert message == (f"--out: {out} holds a run with a different configuration (differs in ['env_params']); "
                       f"choose another --out or pass --overwrite (see diffenvs-train --help)")
    assert "overwrite=True" not in message
    (out / rundir.CHECKPOINT_FILE).write_bytes(b"garbage")
    message = _error_line(capsys, train_main, ["--strategy", "bptt", "--out", str(out), *TINY])
    assert message.startswith("--out: ") and "--overwrite" in message


@pytest.mark.parametrize("argv, start", [
    (["--strategy", "foo"], "--strategy must be one of ['bptt', 'combined', 'modified', 'network_only', "
                            "'one_step'"),
    (["--strategy", "es:size=2"], "--strategy: es has no option 'size'; allowed: ['noise', 'population']"),
    (["--strategy", "truncated"], "--strategy truncated needs the steps between cuts"),
    (["--strategy", "truncated:x"], "--truncate-every (or truncated:K) must be an integer >= 1, got 'x'"),
    (["--strategy", "truncated:0"], "--truncate-every (or truncated:K) must be an integer >= 1, got 0"),
    (["--strategy", "es:3"], "--es-population (or es:P) must be an even integer >= 2 (perturbations per estimate), got 3"),
    (["--strategy", "bptt", "--truncate-every", "3"], "--truncate-every applies to --strategy truncated"),
    (["--strategy", "truncated:3", "--truncate-every", "4"], "--truncate-every 4 contradicts"),
    (["--es-noise", "0.1"], "--es-noise applies to --strategy es"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--batch-size", "500"], "--batch-size must be at most --train-size = 256, got 500"),
    (["--poles", "0"], "--poles must be an integer"),
    (["--rc", "0.1"], "--rc applies to the guidance task, not to cartpole"),
    (["guidance", "--rc", "-1"], "--rc must be a finite number >= 0"),
    (["--clip-threshold", "0"], "--clip-threshold must be > 0"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1"),
    (["--test-size", "0"], "--test-size must be an integer >= 1"),
    (["--minutes", "nan"], "--minutes must be a finite number > 0, got nan"),
    (["--resume", "--out", "nowhere/run"], "--resume: nowhere/run holds no run to resume"),
])
def test_train_errors_are_one_line_naming_the_flag(argv, start, capsys):
    assert _error_line(capsys, train_main, argv).startswith(start)


@pytest.mark.slow
def test_plot_compare_baseline_and_sweep_errors_are_one_line_naming_the_flag(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    runs = tmp_path / "runs"
    rundir.write_config(runs / "ppo", {"task": "cartpole", "env_params": {}, "strategy": "ppo", "algo": "ppo",
                                       "clip": "none", "seed": 0})
    rundir.write_metrics(runs / "ppo", [{"epoch": e, "env_steps": 100 * e, "wall_seconds": e, "train_loss": 1.0,
                                         "test_loss": 1.0 / (1 + e)} for e in range(3)],
                         ("epoch", "env_steps", "wall_seconds", "train_loss", "test_loss"))
    cases = [
        (plot_main, [str(runs), "--x", "epoch", "--out", str(tmp_path / "x.png")], "--x: the RL baseline runs (ppo)"),
        (plot_main, [str(runs), "--out", str(tmp_path)], "--out: "),
        (plot_main, [str(runs), "--out", str(a_file / "x.png")], "--out: "),
        (plot_main, [str(runs), "--study", "cartpol"], "--study: name must be one of ['cartpole', 'guidance', "
                                                       "'quantum']"),
        (plot_main, [str(runs), "--table", str(tmp_path / "t.csv"), "--last", "0"], "--last must be an integer"),
        (plot_main, [str(tmp_path / "missing")], "RUNS: "),
        (compare_main, [str(a_file)], "OUT: "),
        (compare_main, [str(tmp_path / "c"), "--cases", "cartpole:7"], "--cases: 'cartpole:7'"),
        (compare_main, [str(tmp_path / "c"), "--methods", "dqn"], "--methods: 'dqn'"),
        (compare_main, [str(tmp_path / "c"), "--at-steps", "0"], "--at-steps: "),
        (compare_main, [str(tmp_path / "c"), "--table", str(tmp_path)], "--table: "),
        (baseline_main, ["cartpole", "--algo", "dqn"], "argument --algo: invalid choice: 'dqn'"),
        (baseline_main, ["cartpole", "--algo", "ppo", "--out", str(a_file)], "--out: "),
        (baseline_main, ["cartpole", "--algo", "ppo", "--action-scale", "nan"], "--action-scale must be"),
        (baseline_main, ["cartpole", "--algo", "ppo", "--set", "num_envs=0"], "--set num_envs must be an integer"),
        (sweep_main, [str(a_file)], "OUT: "),
        (sweep_main, [str(tmp_path / "s"), "--tasks", "cartpol"], "--tasks: name must be one of"),
        (sweep_main, [str(tmp_path / "s"), "--strategies", "foo"], "--strategies: "),
        (sweep_main, [str(tmp_path / "s"), "--levels", "9"], "--levels must be one of (1, 2, 3, 4)"),
        (sweep_main, [str(tmp_path / "s"), "--part", "3/2"], "--part must be"),
        (sweep_main, [str(tmp_path / "s"), "--export", str(a_file / "x.csv.gz")], "--export: "),
    ]
    for function, argv, start in cases:
        message = _error_line(capsys, function, argv)
        assert message.startswith(start), (argv, message)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("function, argv, prog, message", [
    (train_main, ["--epochs", "many"], "diffenvs-train", "argument --epochs: invalid int value: 'many'"),
    (train_main, ["--lr", "-1"], "diffenvs-train", "--lr must be a finite number > 0, got -1.0"),
    (plot_main, [], "diffenvs-plot", "the following arguments are required: runs"),
    (sweep_main, ["out", "--seeds", "zero"], "diffenvs-sweep", "argument --seeds: invalid int value: 'zero'"),
    (baseline_main, ["cartpole", "--algo", "dqn"], "diffenvs-baseline", "argument --algo: invalid choice: 'dqn'"),
    (compare_main, ["out", "--minutes", "soon"], "diffenvs-compare", "argument --minutes: invalid float value"),
    (diagnose_main, ["--no-such-flag"], "diffenvs-diagnose", "unrecognized arguments: --no-such-flag"),
    (runs_main, ["--seed", "x"], "diffenvs-runs", "argument --seed: invalid int value: 'x'"),
    (eval_main, ["run", "--episodes", "x"], "diffenvs-eval", "argument --episodes: invalid int value: 'x'"),
    (rl_study_main, ["plan", "--cases", "nope"], "diffenvs-rl-study plan", "argument --cases: invalid choice"),
])
def test_a_bad_value_is_one_line_without_the_usage(function, argv, prog, message, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as raised:
        function(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err, err
    assert err.startswith(f"{prog}: error: {message}") and err.endswith(f" (see {prog} --help)\n"), err


def _option_help(parser) -> dict[str, str]:
    """Each option's help text as --help prints it (wrapped lines joined)."""
    text = parser.format_help()
    blocks = re.split(r"\n  (?=-|\{|[a-z])", text)
    return {block.split()[0]: " ".join(block.split()) for block in blocks[1:]}


@pytest.mark.parametrize("make_parser", [_train_parser, baseline_parser, sweep_parser])
def test_help_shows_each_default_once_and_never_none(make_parser):
    parser = make_parser()
    if make_parser is sweep_parser:                        # diffenvs-sweep runs through trainers.cli.sweep_main
        from trainers.cli import HelpFormatter
        parser.formatter_class = HelpFormatter
    options = _option_help(parser)
    for option, text in options.items():
        assert "(default: None)" not in text and "(default: False)" not in text, text
        assert text.count("default:") <= 1, text
    if make_parser is _train_parser:
        for option in ("--poles", "--rc", "--target", "--loss-mode"):
            assert options[option].count("default: ") == 1, options[option]
        assert "default: 1)" in options["--poles"] and "(default: final)" in options["--loss-mode"]
        assert "(default: 0)" in options["--seed"] and "(default: 30)" in options["--epochs"]
    if make_parser is baseline_parser:
        assert "default" not in options["--algo"]


def test_help_of_plot_and_compare(capsys):
    for function in (plot_main, compare_main, sweep_main):
        with pytest.raises(SystemExit):
            function(["--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "(default: False)" not in text


def test_diffenvs_train_and_train_share_their_defaults():
    import dataclasses

    from trainers.cli import FIELD_FLAGS

    from trainers.cli import _data_defaults

    parser = _train_parser()
    parsed = vars(parser.parse_args([]))
    # the data flags default to None and are resolved per task: for a study task to TrainConfig's values
    defaults = {**parsed, **{name: value for name, value in _data_defaults("CartPole").items()
                             if parsed[name] is None}}
    destinations = {action.option_strings[0] if action.option_strings else action.dest: action.dest
                    for action in parser._actions}
    compared = []
    for field in dataclasses.fields(TrainConfig):
        flag = FIELD_FLAGS.get(field.name)
        if flag is None or defaults[destinations[flag]] is None:
            continue
        compared.append(field.name)
        assert defaults[destinations[flag]] == getattr(TrainConfig(), field.name), (field.name, flag)
    assert {"epochs", "batch_size", "num_train", "num_test", "learning_rate", "optimizer", "clip", "seed",
            "checkpoint_every", "strategy", "clip_threshold"} <= set(compared)
    assert defaults["precision"] == TrainConfig().precision and TrainConfig().epochs == 30
