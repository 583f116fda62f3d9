"""Tests of the SB3 side: the CLI end to end, resume, bad flags, and that PPO learns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits, write_mnist_files
from stable_baselines3 import PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import run_rl
from agents import make_sb3_vec_env
from agents.evaluate import (
    evaluate_all,
    random_policy,
    run_policy,
    static_policy,
    threshold_policy,
)
from agents.experiments.demo import demo_report
from agents.files import final_checkpoints
from agents.trainer import AlternatingTrainer
from dynalay_env.core import DynaLayCore
from dynalay_env.data import get_spec, load_splits, split_training_set
from dynalay_env.mdp import MDPConfig
from dynalay_env.models import config_for
from main_model import DynaLayNet, StepOutput, load_main_model
from main_model.checkpoint import state_digest

TINY_RUN = [
    "--env", "DynaLay-MNIST-v0", "--algo", "ppo", "--device", "cpu", "--widths", "2", "2", "2",
    "--pretrain-epochs", "1", "--rounds", "2", "--total-timesteps", "32", "--num-envs", "4",
    "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
]  # fmt: skip


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    return tmp_path / "data"


def run_cli(tiny_data: Path, logdir: Path, *extra: str) -> int:
    return run_rl.main([*TINY_RUN, "--data-dir", str(tiny_data), "--logdir", str(logdir), *extra])


def only_run_dir(logdir: Path) -> Path:
    (run_dir,) = list(logdir.iterdir())
    return run_dir


def test_cli_end_to_end_writes_run_directory_and_tensorboard_tags(tiny_data, tmp_path, capsys):
    assert run_cli(tiny_data, tmp_path / "runs") == 0
    run_dir = only_run_dir(tmp_path / "runs")
    out = capsys.readouterr().out
    assert "test accuracy" in out and f"run directory: {run_dir}" in out
    progress = json.loads((run_dir / "progress.json").read_text())["completed"]
    assert progress == [
        "pretrain",
        "round1/rl",
        "round1/supervised",
        "round2/rl",
        "round2/supervised",
        "final/rl",  # the agent adapts to the model the last supervised phase left
    ]
    final = final_checkpoints(run_dir)
    assert final == run_dir / "checkpoints" / "final" / "rl"
    assert {p.name for p in final.iterdir()} == {
        "main_model.pt",
        "agent.zip",
        "vecnormalize.json",  # hyperparams.yml: normalize observations (plain statistics)
        "manifest.json",  # the phase's files and their checksums, written last
    }
    # The last phase and the one before it (to re-run the last from) are kept.
    kept = {str(p.relative_to(run_dir / "checkpoints")) for p in run_dir.glob("checkpoints/*/*")}
    assert kept == {"final/rl", "round2/supervised"}
    summary = json.loads((run_dir / "summary.json").read_text())
    # 8 one-shot answers: the accuracy is a count of right answers over 8, and every episode's
    # return is alpha * correct - beta * cost (one decision, consecutive count 1).
    assert summary["episodes"] == 8 and (8 * summary["accuracy"]) % 1 == 0
    expected_reward = 0.5 * summary["accuracy"] - 0.3 * summary["mean_cost"]
    assert summary["mean_reward"] == pytest.approx(expected_reward, abs=1e-6)
    # The evaluated agent learned on exactly the saved and evaluated main model.
    saved_model, _ = load_main_model(final / "main_model.pt")
    assert summary["agent_model_digest"] == summary["main_model_digest"]
    assert summary["main_model_digest"] == state_digest(saved_model)
    assert sum(summary["action_frequencies"]) == pytest.approx(1.0)
    assert "beta: 0.3" in (run_dir / "config.yaml").read_text()
    assert "phase round2/supervised done" in (run_dir / "log.txt").read_text()

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"tensors": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {
        "rollout/ep_rew_mean",
        "dynalay/accuracy",
        "dynalay/mean_cost",
        "dynalay/episode_length",
        "dynalay/action_freq_0",
        "dynalay/action_freq_3",
        "fpi/iterations_block1",
        "fpi/residual_block3",
        "supervised/loss",
        "supervised/accuracy",
        "supervised/total_loss",
        "time/fps",
    }
    assert expected <= scalars, expected - scalars
    assert any(tag.startswith("supervised/accuracy_path") for tag in scalars)
    assert "dynalay/actions" in events.Tags()["histograms"]
    assert any("hyperparameters" in tag for tag in events.Tags()["tensors"])


def test_interrupted_run_resumes_to_the_same_end_as_an_uninterrupted_one(
    tiny_data, tmp_path, monkeypatch
):
    assert run_cli(tiny_data, tmp_path / "whole") == 0
    whole = only_run_dir(tmp_path / "whole")

    original = AlternatingTrainer._rl_phase

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(AlternatingTrainer, "_rl_phase", interrupt)
    assert run_cli(tiny_data, tmp_path / "cut") == 130
    cut = only_run_dir(tmp_path / "cut")
    assert json.loads((cut / "progress.json").read_text())["completed"] == ["pretrain"]
    assert not (cut / "summary.json").exists()

    monkeypatch.setattr(AlternatingTrainer, "_rl_phase", original)
    assert run_rl.main(["--resume", str(cut)]) == 0
    completed = [json.loads((d / "progress.json").read_text())["completed"] for d in (cut, whole)]
    assert completed[0] == completed[1]
    assert sorted(p.relative_to(cut) for p in cut.rglob("checkpoints/**/*")) == sorted(
        p.relative_to(whole) for p in whole.rglob("checkpoints/**/*")
    )
    summaries = [json.loads((d / "summary.json").read_text()) for d in (cut, whole)]
    assert summaries[0]["episodes"] == 8
    # Same end, not just the same files: tests/test_faults.py compares every tensor.
    for key in ("main_model_digest", "agent_model_digest", "accuracy", "action_frequencies"):
        assert summaries[0][key] == summaries[1][key], key


def test_a_resumed_run_continues_the_csv_log_instead_of_emptying_it(
    tiny_data, tmp_path, monkeypatch
):
    assert run_cli(tiny_data, tmp_path / "whole") == 0
    whole = only_run_dir(tmp_path / "whole")

    original = AlternatingTrainer._supervised_phase
    calls = []

    def stop_in_round_2(self, round_index):
        calls.append(round_index)
        if round_index == 2:  # round 1's RL and supervised phases and round 2's RL have logged
            raise KeyboardInterrupt
        original(self, round_index)

    monkeypatch.setattr(AlternatingTrainer, "_supervised_phase", stop_in_round_2)
    assert run_cli(tiny_data, tmp_path / "cut") == 130
    cut = only_run_dir(tmp_path / "cut")
    before = (cut / "tb" / "progress.csv").read_text().splitlines()
    assert len(before) > 2 and calls == [1, 2]

    monkeypatch.setattr(AlternatingTrainer, "_supervised_phase", original)
    assert run_rl.main(["--resume", str(cut)]) == 0
    lines = {d: (d / "tb" / "progress.csv").read_text().splitlines() for d in (cut, whole)}
    # The rows written before the interruption are still there, first, under the same header
    # (extended when a later phase logs a new column); then the resumed process's rows.
    assert len(lines[cut]) == len(lines[whole])
    assert sorted(lines[cut][0].split(",")) == sorted(lines[whole][0].split(","))
    old_columns = before[0].split(",")
    assert lines[cut][0].split(",")[: len(old_columns)] == old_columns
    for old, kept in zip(before[1:], lines[cut][1 : len(before)], strict=True):
        assert kept.startswith(old)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--algo", "sac"], "invalid choice: 'sac'"),
        (["--env", "DynaLay-SVHN-v0"], "unknown --env 'DynaLay-SVHN-v0'"),
        (["--total-timesteps", "-5"], "must be a positive integer, got -5"),
        (["--checkpoint", "/nonexistent/model.pt"], "--checkpoint /nonexistent/model.pt does not"),
        (["--resume", "/nonexistent/run"], "no config.yaml there"),
    ],
)
def test_bad_flags_exit_with_code_2_and_a_clear_message(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_exits_with_code_2_and_says_what_to_run(tmp_path, capsys):
    code = run_rl.main(
        ["--env", "DynaLay-CIFAR10-v0", "--data-dir", str(tmp_path), "--logdir", str(tmp_path)]
    )
    assert code == 2
    assert "dynalay_env.pretrain --dataset CIFAR10 --download" in capsys.readouterr().err


def test_help_documents_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        run_rl.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--algo", "--beta", "--gamma-loss", "--max-steps", "--resume", "--conf"):
        assert flag in text
    assert "(default: 0.3)" in text and "(default: ppo)" in text


# ----- learning on a rigged task ------------------------------------------------------------------
class RiggedNet(DynaLayNet):
    """Straight answers are right for bright images (class 0) and wrong for dark ones (class 1);
    any loop answers right. Loop-k costs k units of 3, so the optimal policy is NOP on bright
    images and loop-1 on dark ones. Block 1 averages pixels, so brightness is in the observation.
    """

    def __init__(self) -> None:
        super().__init__(config_for(get_spec("MNIST"), (2, 2, 2)))
        with torch.no_grad():
            self.blocks[0].inject_conv.weight.fill_(1.0 / 9.0)
        self.eval()

    @staticmethod
    def _bright(state) -> torch.Tensor:
        return state.injection[0].mean(dim=(1, 2, 3)) > 0

    def straight(self, images):
        output = super().straight(images)
        logits = torch.zeros_like(output.state.logits)
        logits[:, 0] = 5.0  # always "class 0"
        output.state.logits = logits
        return output

    def step(self, state, actions, solver="fpi"):
        output = super().step(state, actions, solver)
        looped = actions > 0
        truth = torch.where(self._bright(state), 0, 1)
        logits = output.state.logits.clone()
        logits[looped] = 0.0
        logits[looped, truth[looped]] = 5.0
        output.state.logits = logits
        flops = actions.long() * 100
        return StepOutput(output.state, flops, output.iterations, output.diverged)

    def max_step_flops(self) -> int:
        return 300


def rigged_splits():
    spec = get_spec("MNIST")
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=generator)
    noise = torch.randint(0, 30, (400, 1, 28, 28), generator=generator)
    images = torch.where(labels.view(-1, 1, 1, 1) == 0, 220 - noise, noise).to(torch.uint8)
    return split_training_set(spec, images[:300], labels[:300], images[300:], labels[300:], 200)


def test_ppo_learns_the_optimal_policy_on_a_rigged_task():
    alpha, beta = 0.5, 0.9
    # Optimal: bright -> NOP (0.5); dark -> loop-1 (0.5 - 0.9 * 1/3 = 0.2). Mean 0.35.
    # Always NOP gets 0.25, always loop-1 gets 0.2: only telling the classes apart reaches 90%.
    optimal = 0.5 * alpha + 0.5 * (alpha - beta / 3)
    model, splits = RiggedNet(), rigged_splits()
    env = make_sb3_vec_env(
        "DynaLay-MNIST-v0", 16, model=model, splits=splits, device="cpu", alpha=alpha, beta=beta
    )
    agent = PPO("MlpPolicy", env, n_steps=32, batch_size=128, learning_rate=1e-3, seed=0)
    agent.learn(8192)
    core = DynaLayCore(
        model, splits["test"], 100, mdp=MDPConfig(alpha=alpha, beta=beta), sequential=True
    )
    result = run_policy(core, lambda obs: agent.predict(obs, deterministic=True)[0], 100)
    labels = splits["test"].labels.numpy()
    best_possible = float(np.mean(np.where(labels == 0, alpha, alpha - beta / 3)))
    assert best_possible == pytest.approx(optimal, abs=0.05)
    assert result.mean_reward >= 0.9 * best_possible, result
    assert result.accuracy == 1.0


def test_run_policy_counts_every_sample_once_in_order():

    splits = make_splits("MNIST", n_test=10)
    core = DynaLayCore(
        make_model("MNIST"), splits["test"], 4, sequential=True, mdp=MDPConfig(max_steps=2)
    )
    result = run_policy(core, lambda obs: np.full(len(obs), 1), 10)
    assert result.episodes == 10
    assert result.action_frequencies == [0.0, 1.0, 0.0, 0.0]  # loop-1 twice per episode
    assert result.relative_flops > 1.0


# ----- evaluation and results -----------------------------------------------------------------
def test_baseline_policies_choose_what_they_claim():

    observations = np.zeros((6, 10), dtype=np.float32)
    for k in range(4):
        assert static_policy(k)(observations).tolist() == [k] * 6
    actions = random_policy(4, seed=0)(np.zeros((400, 10)))
    assert set(actions.tolist()) == {0, 1, 2, 3}

    core = DynaLayCore(
        make_model("MNIST"), make_splits("MNIST")["test"], 2, mdp=MDPConfig(max_steps=2)
    )
    layout = core.observation_layout
    obs = np.zeros((3, core.observation_size), dtype=np.float32)
    obs[:, layout["class_probabilities"].start] = [0.95, 0.5, 0.5]
    obs[2, layout["step_index"]] = 1  # already looped once: answer now
    assert threshold_policy(layout, 0.9, 2)(obs).tolist() == [0, 2, 0]


def test_oracle_is_never_wrong_where_some_path_is_right_and_never_costlier():

    splits = make_splits("CIFAR10", n_test=24)
    core = DynaLayCore(make_model("CIFAR10"), splits["test"], 8, sequential=True)
    results = evaluate_all(core, {}, 24, taus=[0.2, 0.9], threshold_loop=3)
    by_name = {r.name: r for r in results}
    statics = [r for r in results if r.name.startswith("static")]
    assert [r.name for r in statics] == [
        "static NOP (plain CNN)",
        "static loop-1",
        "static loop-2",
        "static loop-3",
    ]
    assert statics[2].action_frequencies == [0.0, 0.0, 1.0, 0.0]
    oracle = by_name["oracle"]
    correct = np.stack([r.records["correct"] for r in statics])
    cost = np.stack([r.records["cost"] for r in statics])
    assert np.array_equal(oracle.records["correct"], correct.any(axis=0))
    for sample in range(24):
        chosen = oracle.records["first_action"][sample]
        right = np.flatnonzero(correct[:, sample])
        if right.size:
            assert correct[chosen, sample]
            assert cost[chosen, sample] <= cost[right, sample].min() + 1e-12
    assert oracle.accuracy >= max(r.accuracy for r in statics)
    deq = next(r for r in results if r.name == "loop-all with anderson")
    assert deq.action_frequencies == [0.0, 0.0, 0.0, 1.0]
    assert abs(deq.accuracy - statics[3].accuracy) <= 1 / 24 + 1e-9


def test_evaluation_accuracy_and_cost_equal_a_brute_force_recomputation():

    model, splits = make_model("MNIST"), make_splits("MNIST", n_test=12)
    test = splits["test"]
    core = DynaLayCore(model, test, 5, sequential=True, mdp=MDPConfig(beta=0.3))
    result = run_policy(core, static_policy(2), 12)
    correct, flops = [], []
    with torch.no_grad():
        for row in range(12):
            state = model.straight(test.normalized(torch.tensor([row]))).state
            output = model.step(state, torch.tensor([2]))
            correct.append(output.state.logits.argmax().item() == test.labels[row].item())
            flops.append(model.straight_flops() + output.flops.item())
    assert result.records["dataset_index"].tolist() == list(range(12))
    assert result.accuracy == pytest.approx(np.mean(correct))
    assert result.relative_flops == pytest.approx(np.mean(flops) / model.straight_flops())
    expected_cost = (np.array(flops) - model.straight_flops()) / model.max_step_flops()
    assert result.mean_cost == pytest.approx(expected_cost.mean())


def test_eval_command_writes_tables_and_plots(tiny_data, tmp_path, capsys):
    assert run_cli(tiny_data, tmp_path / "runs") == 0
    run_dir = only_run_dir(tmp_path / "runs")
    assert run_rl.main(["eval", str(run_dir), "--device", "cpu", "--taus", "0.5", "0.9"]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    names = [p["name"] for p in results["policies"]]
    assert names[:4] == [
        "static NOP (plain CNN)",
        "static loop-1",
        "static loop-2",
        "static loop-3",
    ]
    assert {"random", "oracle"} <= set(names)
    assert "loop-all with anderson" in names
    assert sum(n.startswith("threshold tau=") for n in names) == 2
    assert [n for n in names if n.startswith("router beta=")] == names[-6:-1]  # 5, before the agent
    assert results["router_holdout_cross_fit"]["folds"] == 5
    assert names[-1].startswith("agent (ppo")
    table = (run_dir / "results.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(names)  # header + one row per policy
    for plot in ("pareto.png", "action_frequencies.png", "reward_curve.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| oracle |" in capsys.readouterr().out
    # A run copied without its TensorBoard events (as docs/results keeps them) evaluates too.
    shutil.rmtree(run_dir / "tb")
    assert run_rl.main(["eval", str(run_dir), "--device", "cpu", "--taus", "0.5"]) == 0
    assert (run_dir / "reward_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_command_refuses_an_unfinished_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main(["eval", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "config.yaml is missing" in capsys.readouterr().err


def test_beta_sweep_reuses_one_main_model_and_plots_against_beta(tiny_data, tmp_path):
    code = run_rl.main(
        [
            "sweep",
            "--betas",
            "0.1",
            "1.0",
            *TINY_RUN,
            "--data-dir",
            str(tiny_data),
            "--logdir",
            str(tmp_path),
            "--taus",
            "0.9",
        ]  # fmt: skip
    )
    assert code == 0
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("sweep_")]
    results = json.loads((sweep_dir / "results.json").read_text())
    agents = [p for p in results["policies"] if p["name"].startswith("agent beta=")]
    assert [a["parameter"] for a in agents] == [0.1, 1.0]
    first = torch.load(final_checkpoints(sweep_dir / "beta_0.1") / "main_model.pt")["state_dict"]
    second = torch.load(final_checkpoints(sweep_dir / "beta_1") / "main_model.pt")["state_dict"]
    for key, value in first.items():
        if "power_vector" not in key and "weight_norm" not in key:  # power-iteration state
            assert torch.equal(value, second[key]), key  # one shared, frozen main model
    for plot in ("pareto.png", "beta_sweep.png", "action_frequencies.png", "reward_curve.png"):
        assert (sweep_dir / plot).stat().st_size > 1000


@pytest.mark.parametrize("algo", ["a2c", "dqn"])
def test_cli_trains_with_every_supported_algorithm(algo, tiny_data, tmp_path):
    flags = [*TINY_RUN, "--data-dir", str(tiny_data), "--logdir", str(tmp_path / "runs")]
    flags[flags.index("--algo") + 1] = algo
    flags[flags.index("--rounds") + 1] = "1"
    assert run_rl.main(flags) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    assert f"algo: {algo}" in (run_dir / "config.yaml").read_text()
    assert (final_checkpoints(run_dir) / "agent.zip").is_file()
    # Off-policy agents keep their replay buffer with the phase's files.
    assert (final_checkpoints(run_dir) / "replay_buffer.npz").is_file() == (algo == "dqn")


def test_conf_file_without_normalisation_trains_and_evaluates(tiny_data, tmp_path):
    conf = tmp_path / "conf.yml"
    conf.write_text("ppo:\n  default:\n    policy: MlpPolicy\n    n_steps: 8\n    batch_size: 32\n")
    flags = [*TINY_RUN, "--data-dir", str(tiny_data), "--logdir", str(tmp_path / "runs")]
    flags[flags.index("--rounds") + 1] = "1"
    assert run_rl.main([*flags, "--conf", str(conf)]) == 0
    run_dir = only_run_dir(tmp_path / "runs")
    assert not (final_checkpoints(run_dir) / "vecnormalize.json").exists()
    assert "n_steps: 8" in (run_dir / "config.yaml").read_text()
    assert run_rl.main(["eval", str(run_dir), "--device", "cpu", "--taus", "0.9"]) == 0


def test_checkpoint_trained_on_the_holdout_is_refused(tiny_data, tmp_path, capsys):
    flags = ["--rounds", "1", "--supervised-epochs", "0", "--penalty", "layer"]
    assert run_cli(tiny_data, tmp_path / "runs", *flags) == 0
    assert "penalty: layer" in (only_run_dir(tmp_path / "runs") / "config.yaml").read_text()
    checkpoint = final_checkpoints(only_run_dir(tmp_path / "runs")) / "main_model.pt"
    # Same data seed: its holdout is the one the model was trained beside.
    flags = ["--checkpoint", str(checkpoint), "--rounds", "1", "--supervised-epochs", "0"]
    assert run_cli(tiny_data, tmp_path / "same", *flags) == 0
    # Another data seed draws another holdout, made mostly of the model's training images.
    capsys.readouterr()
    assert run_cli(tiny_data, tmp_path / "other", *flags, "--data-seed", "1") == 2
    message = capsys.readouterr().err
    assert str(checkpoint) in message and "MNIST holdout" in message
    assert "was trained on" in message and "images of this" in message


TINY_TABLE = [
    "table", "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--epochs", "1", "--train-size", "16", "--batch-size", "8", "--holdout-size", "10",
    "--eval-size", "8", "--total-timesteps", "32", "--num-envs", "4", "--betas", "0.3",
    "--seeds", "0", "1",
]  # fmt: skip


def test_table_trains_every_baseline_per_seed_resumes_and_refuses_other_settings(
    tiny_data, tmp_path, capsys
):
    out = tmp_path / "table"
    flags = [*TINY_TABLE, "--data-dir", str(tiny_data), "--out", str(out)]
    assert run_rl.main(flags) == 0
    summary = json.loads((out / "tradeoff.json").read_text())
    rows = summary["rows"]

    # Every row's mean and spread are those of its per-seed results, recomputed here (sample
    # std, ddof=1): the trained baselines' from their records, the static NOP path's from the
    # seeds' policy evaluations.
    def per_seed(name: str) -> list[float]:
        if name.startswith("DynaLay "):
            policies = [
                json.loads((out / f"seed{s}" / "policies.json").read_text()) for s in (0, 1)
            ]
            return [next(p for p in ps if p["name"] == name[8:])["accuracy"] for ps in policies]
        records = [json.loads((out / f"seed{s}" / f"{name}.json").read_text()) for s in (0, 1)]
        path = str(max(int(a) for a in records[0]["paths"])) if name == "deq" else "0"
        return [record["paths"][path]["accuracy"] for record in records]

    for name in ("plain", "plain-2x", "plain-4x", "deq", "DynaLay static NOP (plain CNN)"):
        values = per_seed(name)
        assert rows[name]["accuracy"]["mean"] == pytest.approx(np.mean(values)), name
        assert rows[name]["accuracy"]["std"] == pytest.approx(np.std(values, ddof=1)), name
    assert "DynaLay agent beta=0.3" in rows and "DynaLay oracle" in rows
    assert rows["plain"]["relative_flops"]["mean"] == pytest.approx(1.0)
    assert 1.5 < rows["plain-2x"]["relative_flops"]["mean"] < 2.5
    assert 0.0 < rows["deq"]["backward_share"]["mean"] < 1.0
    assert len(summary["targets"]) == 5 and (out / "tradeoff.png").is_file()
    assert "| target |" in (out / "tradeoff.md").read_text()

    # The plain row is the separately trained plain CNNs' test accuracy, recomputed here.
    test = load_splits("MNIST", tiny_data, holdout_size=10)["test"].subset(torch.arange(8))
    accuracies = []
    for seed in (0, 1):
        plain, _ = load_main_model(out / f"seed{seed}" / "plain.pt")
        assert plain.provenance["recipe"] == "plain"
        with torch.no_grad():
            predicted = plain(test.normalized(slice(None))).argmax(1)
        accuracies.append(float((predicted == test.labels).float().mean()))
    assert rows["plain"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert rows["plain"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))

    # `run_rl.py eval` on a committed agent directory reproduces the table's agent row.
    agent_dir = out / "seed1" / "agent_beta_0.3"
    assert run_rl.main(["eval", str(agent_dir), "--device", "cpu", "--eval-size", "8"]) == 0
    evaluated = json.loads((agent_dir / "results.json").read_text())["policies"]
    table_row = next(
        p
        for p in json.loads((out / "seed1" / "policies.json").read_text())
        if p["name"] == "agent beta=0.3"
    )
    agent_row = next(p for p in evaluated if p["name"].startswith("agent"))
    for key in ("accuracy", "relative_flops", "mean_cost", "action_frequencies"):
        assert agent_row[key] == pytest.approx(table_row[key]), key

    # A rerun with the same settings reuses every finished model and agent.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")}
    assert run_rl.main(flags) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.pt")} == stamps

    # Other settings in the same directory are refused, not silently mixed.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main([*flags[:-2], "--out", str(out), "--epochs", "2"])
    assert exit_info.value.code == 2
    assert "other settings (epochs" in capsys.readouterr().err


def test_table_on_a_given_dynalay_model_trains_only_the_chosen_baselines(tiny_data, tmp_path):
    """What `run_rl.py demo` does with the shipped model, on tiny files: the given DynaLay model
    is used as is, the plain CNN is trained and timed like every policy, and a DynaLay model of
    another shape than the baselines is refused."""
    trained = tmp_path / "dynalay.pt"
    base = [*TINY_TABLE[:-3], "--seeds", "0", "--data-dir", str(tiny_data)]
    assert run_rl.main([*base, "--models", "plain", "--out", str(tmp_path / "first")]) == 0
    shutil.copy(tmp_path / "first" / "seed0" / "dynalay.pt", trained)
    flags = [*base, "--models", "plain", "--dynalay-checkpoint", str(trained)]
    assert run_rl.main([*flags, "--out", str(tmp_path / "given")]) == 0
    seed_dir = tmp_path / "given" / "seed0"
    # the models trained: the given one and the chosen baseline; router.pt is the evaluation's
    # full-information router (fitted on the holdout), not a main model
    assert sorted(p.name for p in seed_dir.glob("*.pt")) == ["dynalay.pt", "plain.pt", "router.pt"]
    given, _ = load_main_model(trained)
    used, _ = load_main_model(seed_dir / "dynalay.pt")
    assert state_digest(used) == state_digest(given)
    summary = json.loads((tmp_path / "given" / "tradeoff.json").read_text())
    rows = summary["rows"]
    assert "plain-2x" not in rows and "deq" not in rows
    assert rows["plain"]["ms_per_sample"]["mean"] > 0
    assert "epoch_seconds" not in rows["DynaLay static NOP (plain CNN)"]  # not trained here
    assert "not trained here" in (tmp_path / "given" / "tradeoff.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main([*flags, "--widths", "3", "3", "3", "--out", str(tmp_path / "other")])
    assert exit_info.value.code == 2


def test_demo_report_says_for_each_agent_whether_it_beats_the_plain_cnn():
    def row(kind, accuracy, flops, ms=0.1):
        return {
            "kind": kind,
            "accuracy": {"mean": accuracy, "std": 0.0},
            "relative_flops": {"mean": flops, "std": 0.0},
            "ms_per_sample": {"mean": ms, "std": 0.0},
        }

    summary = {
        "rows": {
            "plain": row("separately trained", 0.88, 1.0),
            "plain-2x": row("separately trained", 0.884, 2.0),
            "DynaLay static NOP (plain CNN)": row("static", 0.879, 1.0),
            "DynaLay static loop-1": row("static", 0.882, 3.0),
            "DynaLay static loop-3": row("static", 0.886, 7.0),
            "DynaLay threshold tau=0.7": row("threshold", 0.885, 2.5),
            "DynaLay agent beta=0.1": row("agent", 0.8835, 2.0),
            "DynaLay agent beta=1": row("agent", 0.879, 1.1),
        }
    }
    report = demo_report(summary)
    assert "DynaLay static loop-3" in report and "DynaLay static loop-1" not in report
    assert "plain CNN (trained here, same budget)" in report and "plain-2x" in report
    assert "DynaLay agent beta=0.1: +0.35 points over the plain CNN at 2.00x" in report
    assert (
        "beta=0.1: +0.35 points over the plain CNN at 2.00x its FLOPs -> at least as accurate: yes"
        in report
    )
    assert (
        "beta=1: -0.10 points over the plain CNN at 1.10x its FLOPs -> at least as accurate: NO"
        in report
    )
