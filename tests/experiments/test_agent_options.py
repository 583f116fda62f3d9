"""The PPO-options study (agents.experiments.agent_options) on a tiny finished table: the
``thesis`` option retrains the table's agent exactly, each option changes only what it names,
max_steps=2 agents are compared with the cascade, and a rerun trains nothing again."""

from __future__ import annotations

import json

import pytest
from conftest import write_mnist_files

import run_rl
from agents.config import load_run_config
from agents.experiments import agent_options

TINY = [
    "table", "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--epochs", "1", "--train-size", "16", "--batch-size", "8", "--holdout-size", "10",
    "--eval-size", "8", "--total-timesteps", "32", "--num-envs", "4", "--betas", "0.3",
    "--seeds", "0", "--models", "plain",
]  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    write_mnist_files(root / "data", n_train=30, n_test=10)
    table = root / "table"
    assert run_rl.main([*TINY, "--data-dir", str(root / "data"), "--out", str(table)]) == 0
    out = root / "options"
    argv = ["--table", str(table), "--betas", "0.3", "--out", str(out), "--device", "cpu",
            "--options", "thesis", "shaping", "max_steps=2"]  # fmt: skip
    assert run_rl.main(["options", *argv]) == 0
    return table, out, argv


def test_the_thesis_option_retrains_the_tables_agent_exactly(study):
    table, out, _ = study
    rows = json.loads((out / "options.json").read_text())["rows"]
    thesis = next(r for r in rows if r["option"] == "thesis")
    policies = json.loads((table / "seed0" / "policies.json").read_text())
    agent = next(p for p in policies if p["name"] == "agent beta=0.3")
    assert thesis["accuracy"] == agent["accuracy"] == thesis["table_agent_accuracy"]
    assert thesis["relative_flops"] == pytest.approx(agent["relative_flops"])
    assert "each equals its table row exactly" in (out / "report.md").read_text()


def test_each_option_changes_only_what_it_names(study):
    table, out, _ = study
    base = load_run_config(table / "seed0" / "agent_beta_0.3").to_dict()
    for option, changes in [("shaping", {"shaping": "nop"}), ("max_steps=2", {"max_steps": 2})]:
        config = load_run_config(out / "seed0" / f"{option}_beta_0.3").to_dict()
        differing = {k: v for k, v in config.items() if base[k] != v}
        assert differing == changes, option


def test_max_steps_2_is_compared_with_the_cascade_and_a_rerun_trains_nothing(study, capsys):
    _, out, argv = study
    rows = json.loads((out / "options.json").read_text())["rows"]
    two = next(r for r in rows if r["option"] == "max_steps=2")
    assert "vs_cascade" in two and len(two["cascade"]) == len(agent_options.CASCADE_TAUS)
    assert all("vs_cascade" not in r for r in rows if r["option"] != "max_steps=2")
    for row in rows:
        for key in ("vs_threshold", "vs_router"):
            assert row[key]["low"] <= row[key]["mean"] <= row[key]["high"]
    capsys.readouterr()
    assert run_rl.main(["options", *argv]) == 0
    assert "training" not in capsys.readouterr().err
    assert json.loads((out / "options.json").read_text())["rows"] == rows


def test_the_ppo_options_change_only_their_sb3_argument():
    """On a committed table agent's settings: ``ent_coef=0`` and ``4x rollout`` change the
    resolved SB3 arguments they name and nothing else (the base stays untouched)."""
    import dataclasses
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    base = load_run_config(repo / "docs/results/tradeoff/seed0/agent_beta_0.1")
    kwargs = dict(base.algo_kwargs)
    for option, changed in [
        ("ent_coef=0", {"ent_coef": 0.0}),
        ("4x rollout", {"n_steps": 4 * kwargs["n_steps"], "batch_size": 4 * kwargs["batch_size"]}),
    ]:
        config = dataclasses.replace(base, **agent_options.OPTIONS[option](base))
        assert config.algo_kwargs == {**kwargs, **changed}, option
        assert dataclasses.replace(config, algo_kwargs=kwargs) == base
    assert base.algo_kwargs == kwargs
