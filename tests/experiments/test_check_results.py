"""``make check-results``: its comparisons of files that cannot be byte-stable, and the recorded
commands, which must give exactly the settings saved beside the committed results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.cli import add_config_flags, config_from_flags
from agents.experiments import check_results
from agents.experiments.thesis import ReproduceConfig
from agents.experiments.tradeoff import TableConfig

REPO = Path(__file__).resolve().parents[2]


def _json(value) -> bytes:
    return json.dumps(value).encode()


def test_data_comparisons_drop_only_what_they_name():
    same = check_results._same_data("ms_per_sample")
    old = {"policies": [{"accuracy": 0.5, "perplexity": 390.0, "ms_per_sample": 1.0}]}
    timed = {"policies": [{"accuracy": 0.5, "perplexity": 390.0 * (1 + 1e-9), "ms_per_sample": 9}]}
    assert same(_json(old), _json(timed))
    for changed in ({"accuracy": 0.51}, {"perplexity": 391.0}, {"extra": 1}):
        other = {"policies": [{**timed["policies"][0], **changed}]}
        assert not same(_json(old), _json(other)), changed
    assert not check_results._same_data()(_json(old), _json(timed))  # timing kept: differs
    assert not same(_json([1, 2]), _json([1, 2, 3])) and not same(_json([1]), _json([1.0]))


def test_markdown_comparison_drops_the_last_column_only():
    same = check_results._same_but_last_column
    table = b"# t\n\n| policy | accuracy | ms / sample |\n| a | 0.5 | 1.234 |\nnote\n"
    assert same(table, table.replace(b"1.234", b"9.999"))
    assert not same(table, table.replace(b"0.5 ", b"0.6 "))
    assert not same(table, table.replace(b"note", b"other"))


def _config(cls, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_flags(parser, cls)
    return config_from_flags(cls, parser.parse_known_args(argv)[0])


def test_the_recorded_commands_give_the_committed_settings():
    reproduction = check_results.CHECKS["reproduction"]
    config = _config(ReproduceConfig, reproduction.command[2:])
    saved = json.loads((REPO / reproduction.committed / "reproduce_config.json").read_text())
    assert config.to_dict() == saved
    tradeoff = check_results.CHECKS["tradeoff"]
    table = _config(TableConfig, tradeoff.command[1:])
    recorded = json.loads((REPO / tradeoff.committed / "tradeoff.json").read_text())["config"]
    assert json.loads(json.dumps(table.__dict__)) == recorded
    assert set(check_results.CHECKS) == {
        "tradeoff",
        "demo",
        "reproduction",
        "text",
        "agent_options",
    }
    # the options study's recorded command is the one its report names
    options = check_results.CHECKS["agent_options"]
    report = (REPO / options.committed / "report.md").read_text()
    assert f"`python run_rl.py {' '.join(options.command)}`" in report


def test_replaying_a_run_directory_reproduces_its_summary_and_names_one_that_does_not(
    tmp_path, capsys
):
    from conftest import write_mnist_files

    import run_rl

    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    flags = [
        "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
        "--pretrain-epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
        "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
        "--data-dir", str(tmp_path / "data"), "--logdir", str(tmp_path / "runs"),
    ]  # fmt: skip
    assert run_rl.main(flags) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert check_results.replay_runs(tmp_path / "runs") == []
    assert "1 run directories replayed" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["accuracy"] = summary["accuracy"] + 0.125  # one more of the 8 images right
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (problem,) = check_results.replay_runs(tmp_path / "runs")
    assert str(run_dir) in problem and "accuracy" in problem
