"""Tests of ``run_rl.py reproduce`` (agents/experiments/thesis/) end to end on tiny data, and
of the trainer options it relies on. The verdicts on hand-made numbers: test_verdicts.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_mnist_files

import run_rl
from agents.config import TrainConfig
from agents.experiments.thesis import EXPERIMENTS, ReproduceConfig, Reproduction, pieces
from agents.experiments.thesis.pieces import verdict_of
from agents.report import scalars_from_events
from agents.trainer import AlternatingTrainer
from dynalay_env.models import config_for
from main_model import load_main_model
from main_model.paths import path_statistics
from main_model.recipes import first_blocks_recipe, recipe_actions

TINY = [
    "--env", "DynaLay-MNIST-v0", "--seeds", "0", "1", "--widths", "2", "2", "2",
    "--strides", "1", "2", "2", "--train-size", "20", "--holdout-size", "10", "--eval-size", "10",
    "--epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
    "--batch-size", "8", "--track-test", "10", "--betas", "0.03", "0.3", "--device", "cpu",
]  # fmt: skip


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    return tmp_path / "data"


def test_every_experiment_runs_on_tiny_data_resumes_and_refuses_other_settings(
    tiny_data, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "rep"
    argv = ["reproduce", "all", *TINY, "--data-dir", str(tiny_data), "--out", str(out)]
    assert run_rl.main(argv) == 0
    printed = capsys.readouterr().out
    for name in EXPERIMENTS:
        folder = out / name
        section = (folder / f"{name}.md").read_text()
        assert "Verdict: **" in section and section in printed
        assert (folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert json.loads((folder / "results.json").read_text())
    assert (out / "reproduction.md").read_text().count("Verdict: **") == len(EXPERIMENTS)
    # Each section's verdict is the one its own numbers give.
    for name in EXPERIMENTS:
        payload = json.loads((out / name / "results.json").read_text())
        if "claims" in payload:
            expected = verdict_of(payload["claims"])
        else:  # Fig. 4.2 and Sec. 4.0.5: the first arm against the second
            first, second = list(payload["arms"])[:2]
            wins = payload[f"seeds won by {first}"][second]
            better = (
                payload["final"][first]["accuracy"]["mean"]
                > (payload["final"][second]["accuracy"]["mean"])
            )
            expected = "reproduced" if better and wins > 1 else "not reproduced"
        assert f"Verdict: **{expected}**" in (out / name / f"{name}.md").read_text(), name

    # Fig. 4.2's curves: one test point per supervised epoch, for each arm and seed.
    fig42 = json.loads((out / "fig4.2" / "results.json").read_text())
    rounds = {"pre-trained": [1], "not pre-trained": [1], "not pre-trained, equal budget": [1, 2]}
    for arm, epochs in rounds.items():  # the equal-budget arm: one round per warm-up epoch more
        for seed in ("0", "1"):
            curve = fig42["curves"][arm][seed]
            assert curve["epochs"] == epochs and len(curve["accuracy"]) == len(epochs)
            # each point is a share of the 10 tracked test images (--track-test 10)
            assert all(0 <= a <= 1 and np.isclose(10 * a, round(10 * a)) for a in curve["accuracy"])
    assert [fig42["final"][arm]["main_model_epochs"] for arm in rounds] == [2, 1, 2]
    # Introspection: episodes of up to max_steps decisions, both penalties.
    rows = json.loads((out / "introspection" / "results.json").read_text())["results"]
    assert len(rows) == 6
    for row in rows.values():
        steps = row["mean_steps"]["mean"]
        assert steps == 1.0 if row["max_steps"] == 1 else 1.0 <= steps <= row["max_steps"]
        assert row["accuracy"]["n"] == 2  # one agent per seed

    # A rerun trains nothing: every piece is found on disk.
    def refuse(*args, **kwargs):
        raise AssertionError("a finished reproduction was trained again")

    monkeypatch.setattr(pieces, "train_main_model", refuse)
    monkeypatch.setattr(AlternatingTrainer, "run", refuse)
    before = (out / "fig4.4" / "results.json").read_text()
    assert run_rl.main(argv) == 0
    assert (out / "fig4.4" / "results.json").read_text() == before

    # Other settings in the same directory are refused before anything runs.
    capsys.readouterr()
    changed = [*argv[:-2], "--epochs", "2", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main(changed)
    assert exit_info.value.code == 2
    assert "epochs: 1 there, 2 now" in capsys.readouterr().err


def test_fig_4_4_batch_numbers_equal_an_independent_recomputation(tmp_path):
    write_mnist_files(tmp_path / "data", n_train=30, n_test=150)  # test batches of 100 and 50
    config = ReproduceConfig(
        env="DynaLay-MNIST-v0",
        seeds=(0,),
        widths=(2, 2, 2),
        strides=(1, 2, 2),
        train_size=20,
        holdout_size=10,
        eval_size=None,
        epochs=1,
        batch_size=8,
        data_dir=str(tmp_path / "data"),
        device="cpu",
        out=str(tmp_path / "rep"),
    )
    rep = Reproduction(config)
    payload = EXPERIMENTS["fig4.4"](rep)
    test = rep.splits["test"]
    for m in range(4):
        path = rep.pretrained_model(0) if m == 3 else tmp_path / "rep/fig4.4/seed0" / f"fpi{m}.pt"
        model, _ = load_main_model(path, "cpu")
        rows = torch.arange(len(test))
        whole = path_statistics(model, [(test.normalized(rows), test.labels)], actions=[m])[m]
        seed0 = payload["per_seed"][str(m)]["0"]
        assert len(seed0["accuracy"]) == 2
        sizes = np.array([100, 50])
        assert sizes @ np.array(seed0["accuracy"]) / 150 == pytest.approx(whole["accuracy"])
        assert sizes @ np.array(seed0["loss"]) / 150 == pytest.approx(whole["loss"])
        assert seed0["relative_flops"] == pytest.approx(whole["flops"] / model.straight_flops())
        assert model.provenance["recipe"] == ("dynalay" if m == 3 else first_blocks_recipe(m).name)


def test_first_blocks_recipe_never_loops_past_its_blocks():
    for blocks in range(4):
        recipe = first_blocks_recipe(blocks)
        choose = recipe_actions(recipe, 4, torch.Generator().manual_seed(0))
        actions = choose(torch.zeros(500, 1), torch.zeros(500))
        expected = {0} if blocks == 0 else set(range(1, blocks + 1))
        assert set(actions.tolist()) == expected
    with pytest.raises(ValueError, match="blocks must be >= 0"):
        first_blocks_recipe(-1)


def test_table_4_1_reads_a_table_directory_and_says_what_holds(tmp_path):
    def row(accuracy: float, seconds: float, share: float) -> dict:
        return {
            "accuracy": {"mean": accuracy, "std": 0.0},
            "epoch_seconds": {"mean": seconds, "std": 0.0},
            "backward_share": {"mean": share, "std": 0.0},
        }

    table = tmp_path / "table"
    table.mkdir()
    rows = {
        "plain": row(0.87, 10.0, 0.4),  # backward 4 s / epoch
        "deq": row(0.86, 100.0, 0.7),  # 70 s
        "DynaLay static NOP (plain CNN)": row(0.86, 50.0, 0.6),  # 30 s
        "DynaLay agent beta=0.1": {"accuracy": {"mean": 0.90, "std": 0.0}},
        "DynaLay agent beta=0.3": {"accuracy": {"mean": 0.88, "std": 0.01}},
    }
    config = {"seeds": [0], "epochs": 3, "train_size": 100}
    (table / "tradeoff.json").write_text(json.dumps({"config": config, "rows": rows}))
    rep = Reproduction(ReproduceConfig(table_dir=str(table), out=str(tmp_path / "rep")))
    payload = EXPERIMENTS["table4.1"](rep)
    measured = payload["measured"]
    assert measured["DynaLay"]["backward_seconds_per_epoch"] == pytest.approx(30.0)
    assert measured["3-layer CNN"]["backward_seconds_per_epoch"] == pytest.approx(4.0)
    assert measured["DEQ (Anderson)"]["backward_seconds_per_epoch"] == pytest.approx(70.0)
    assert payload["dynalay_agent_row"] == "DynaLay agent beta=0.3"  # the thesis's beta
    assert payload["claims"] == {
        "DynaLay has the shortest backward pass": False,
        "DynaLay is the most accurate": True,
    }
    assert "**partly reproduced**" in (tmp_path / "rep/table4.1/table4.1.md").read_text()


def test_table_4_1_on_a_table_without_the_deq_says_how_to_make_one(tmp_path, capsys):
    table = tmp_path / "table"
    table.mkdir()
    rows = {"plain": {}, "DynaLay static NOP (plain CNN)": {}, "DynaLay agent beta=0.3": {}}
    (table / "tradeoff.json").write_text(json.dumps({"config": {}, "rows": rows}))
    argv = ["reproduce", "table4.1", "--table-dir", str(table), "--out", str(tmp_path / "rep")]
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "has no row for deq" in error and "--models plain deq" in error


def test_phase_order_with_and_without_agent_pretraining():
    with_agent = TrainConfig(rounds=2)
    assert with_agent.phases() == [
        "pretrain", "round1/rl", "round1/supervised", "round2/rl", "round2/supervised", "final/rl"
    ]  # fmt: skip
    without = TrainConfig(rounds=2, agent_pretrain=False)
    assert without.phases() == [
        "pretrain", "round1/supervised", "round1/rl", "round2/supervised", "round2/rl"
    ]  # fmt: skip
    frozen = TrainConfig(rounds=1, supervised_epochs=0, agent_pretrain=False)
    assert frozen.phases() == ["pretrain", "round1/rl"]


def test_untrained_start_and_test_tracking(tiny_data, tmp_path):
    config = TrainConfig(
        env="DynaLay-MNIST-v0",
        widths=(2, 2, 2),
        pretrain_epochs=0,
        agent_pretrain=False,
        rounds=2,
        total_timesteps=32,
        num_envs=4,
        holdout_size=10,
        eval_size=8,
        batch_size=8,
        track_test=6,
        data_dir=str(tiny_data),
        device="cpu",
    )
    trainer = AlternatingTrainer(config, tmp_path / "run")
    # No pre-training: the rounds start from the seed's initialisation.
    trainer._pretrain()
    torch.manual_seed(0)
    fresh = type(trainer.model)(config_for(trainer.splits["train"].spec, (2, 2, 2)))
    for a, b in zip(fresh.state_dict().values(), trainer.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert trainer.model.provenance["epochs"] == 0

    untrained = trainer.run()
    assert untrained["phases"][1] == "round1/supervised"
    epochs, accuracy = scalars_from_events(tmp_path / "run" / "tb", "test/accuracy")
    _, loss = scalars_from_events(tmp_path / "run" / "tb", "test/loss")
    assert epochs == [1, 2]
    # Each logged accuracy is a share of the 6 tracked test images.
    assert all(np.isclose(6 * a, round(6 * a)) for a in accuracy)
    assert all(value > 0 for value in loss)
