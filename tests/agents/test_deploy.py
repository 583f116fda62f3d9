"""The deployable classifier: equal to the env's evaluation, its file, and `run_rl.py predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import write_mnist_files
from torchvision.io import write_png

import run_rl
from agents.algorithms import load_agent_policy
from agents.config import load_run_config
from agents.deploy import classifier_from_run
from agents.evaluate import run_policy
from agents.files import MODEL_FILE, final_checkpoints
from dynalay_env.build import sequential_core
from dynalay_env.data import load_splits
from main_model import CheckpointError, load_main_model
from main_model.adaptive import FORMAT_VERSION, AdaptiveClassifier

N_TEST = 24
TINY_RUN = [
    "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "3", "3", "3",
    "--pretrain-epochs", "1", "--rounds", "1", "--supervised-epochs", "0",
    "--total-timesteps", "32", "--num-envs", "4", "--holdout-size", "10", "--eval-size", "8",
    "--batch-size", "8",
]  # fmt: skip
#: (algorithm, max_steps) of the runs the tests export; every one normalises observations
#: (agents/hyperparams.yml), so VecNormalize's folding is checked by all of them.
RUNS = (("ppo", 1), ("ppo", 2), ("dqn", 2))
DQN_SEED = 1  # its untrained Q-network picks NOP for all images with seed 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Tiny finished runs on random MNIST-shaped files, trained once for the whole module."""
    root = tmp_path_factory.mktemp("deploy")
    write_mnist_files(root / "data", n_train=30, n_test=N_TEST)
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DYNALAY_CACHE", str(root / "cache"))
        for algo, max_steps in RUNS:
            logdir = root / f"{algo}_{max_steps}"
            flags = ["--algo", algo, "--max-steps", str(max_steps), "--logdir", str(logdir)]
            flags += ["--seed", str(DQN_SEED if algo == "dqn" else 0)]
            assert run_rl.main([*TINY_RUN, *flags, "--data-dir", str(root / "data")]) == 0
            (made[algo, max_steps],) = list(logdir.iterdir())
    return made


def env_evaluation(run_dir: Path) -> tuple[dict[str, np.ndarray], torch.Tensor, torch.Tensor]:
    """The env's evaluation of the run's agent on the whole test split in one wave: the core's
    per-slot episode summaries (slot i = test image i), its final logits, and those images,
    normalised."""
    config = load_run_config(run_dir)
    splits = load_splits("MNIST", config.data_dir, config.holdout_size, config.data_seed)
    model, _ = load_main_model(final_checkpoints(run_dir) / MODEL_FILE)
    core, episodes = sequential_core(model, splits["test"], mdp=config.mdp, device="cpu")
    assert episodes == core.num_slots == N_TEST
    result = run_policy(core, load_agent_policy(run_dir, config.algo, "cpu"), episodes)
    # Every image once (in the order episodes ended: NOP answers before loops end).
    assert sorted(result.records["dataset_index"].tolist()) == list(range(N_TEST))
    images = splits["test"].normalized(torch.arange(N_TEST))
    return core.episode_info(), core.state.logits, images


@pytest.mark.parametrize("algo,max_steps", RUNS)
def test_classifier_answers_acts_and_spends_as_the_env_evaluation(runs, algo, max_steps):
    run_dir = runs[algo, max_steps]
    episode, logits, images = env_evaluation(run_dir)
    classifier = classifier_from_run(run_dir)
    assert classifier.normalizer is not None and classifier.max_steps == max_steps
    output = classifier(images)
    assert output.actions.shape == (N_TEST, max_steps)
    assert output.logits.argmax(dim=1).tolist() == episode["prediction"].tolist()
    assert output.actions.tolist() == episode["actions"].tolist()
    assert output.flops.tolist() == episode["flops"].tolist()
    assert len(set(episode["actions"][:, 0].tolist())) > 1  # mixed groups, not one batch
    # The answer is the very state the env ended in, bit for bit, not just the same class.
    assert torch.equal(output.logits, logits)
    assert torch.equal(classifier(images).logits, output.logits)  # deterministic
    # A parent's .train() leaves it in eval mode: no batch statistics, no running-stat update.
    running = [b.clone() for b in classifier.model.buffers()]
    assert torch.equal(classifier.train()(images).logits, output.logits)
    assert all(torch.equal(a, b) for a, b in zip(running, classifier.model.buffers(), strict=True))


def test_second_decisions_are_taken_only_after_loops(runs):
    classifier = classifier_from_run(runs["ppo", 2])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a decisive agent, whatever its tiny training left it as
        logits = classifier.policy.net[-1]
        logits.weight.copy_(torch.randn(logits.weight.shape, generator=generator))
    pixels = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=generator)
    actions = classifier.classify_pixels(pixels).actions
    first, second = actions[:, 0], actions[:, 1]
    assert (first >= 0).all()
    assert ((second >= 0) == (first > 0)).all()  # NOP answers; a loop is followed by a decision


def test_export_load_round_trip_gives_equal_outputs(runs, tmp_path, capsys):
    run_dir = runs["ppo", 2]
    output = tmp_path / "dynalay.pt"
    assert run_rl.main(["export", str(run_dir), "--output", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    loaded = AdaptiveClassifier.load(output)
    original = classifier_from_run(run_dir)
    _, _, images = env_evaluation(run_dir)
    a, b = original(images), loaded(images)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.actions, b.actions)
    assert torch.equal(a.flops, b.flops)
    assert loaded.max_steps == 2 and loaded.metadata["algo"] == "ppo"
    assert loaded.class_names == torchvision.datasets.MNIST.classes
    assert loaded.pixel_mean == (0.1307,) and loaded.pixel_std == (0.3081,)


def test_loading_needs_neither_stable_baselines3_nor_the_env(runs, tmp_path):
    output = tmp_path / "dynalay.pt"
    classifier_from_run(runs["ppo", 1]).save(output)
    script = (
        "import sys, torch\n"
        "from main_model.adaptive import AdaptiveClassifier\n"
        f"c = AdaptiveClassifier.load(r'{output}')\n"
        "out = c.classify_pixels(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('stable_baselines3', 'gymnasium', 'dynalay_env', 'agents')]\n"
        "assert not bad, bad\n"
        "print(out.actions.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([2, 1])" in done.stdout


def test_bad_files_raise_checkpoint_errors_that_say_what_to_do(runs, tmp_path):
    good = classifier_from_run(runs["ppo", 1]).save(tmp_path / "good.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        AdaptiveClassifier.load(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        AdaptiveClassifier.load(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated.*export it again"):
        AdaptiveClassifier.load(truncated)
    payload = torch.load(good, weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="format version 2.*upgrade DynaLay"):
        AdaptiveClassifier.load(newer)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({k: v for k, v in payload.items() if k != "policy"}, incomplete)
    with pytest.raises(CheckpointError, match=r"lacks \['policy'\]"):
        AdaptiveClassifier.load(incomplete)
    main_model_file = final_checkpoints(runs["ppo", 1]) / MODEL_FILE
    with pytest.raises(CheckpointError, match="not a DynaLay adaptive classifier"):
        AdaptiveClassifier.load(main_model_file)


def test_predict_on_a_run_file_says_what_the_file_is_not_in_the_projects_words(runs, capsys):
    """A run directory's file (the observation statistics' JSON, the agent's zip) given as the
    classifier: the message names the file, says it is not an exported classifier and how to
    make one, without torch's multi-paragraph ``weights_only`` text."""
    folder = final_checkpoints(runs["ppo", 1])
    for name in ("vecnormalize.json", "agent.zip"):
        if not (folder / name).is_file():
            continue
        assert run_rl.main(["predict", str(folder / name), "image.png"]) == 2
        err = capsys.readouterr().err
        assert f"{folder / name} is not a readable DynaLay classifier" in err
        assert "run_rl.py export RUN_DIR --output FILE" in err
        assert "Weights only load failed" not in err and "WeightsUnpickler" not in err
        assert len(err.splitlines()) == 1


def test_predict_prints_and_writes_json_for_png_files(runs, tmp_path, capsys):
    classifier_file = tmp_path / "dynalay.pt"
    classifier_from_run(runs["ppo", 2]).save(classifier_file)
    generator = torch.Generator().manual_seed(1)
    paths = []
    for name, shape in (("right.png", (1, 28, 28)), ("rgb_big.png", (3, 40, 36))):
        pixels = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        write_png(pixels, str(tmp_path / name))
        paths.append(str(tmp_path / name))
    assert run_rl.main(["predict", str(classifier_file), *paths]) == 0
    captured = capsys.readouterr()
    assert "rgb_big.png is 36x40 pixels, resized to the model's 28x28" in captured.err
    assert "right.png" not in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and all("confidence" in line and "FLOPs" in line for line in lines)

    assert run_rl.main(["predict", str(classifier_file), *paths, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    predictions = document["predictions"]
    assert [p["image"] for p in predictions] == paths
    # The same answers as the classifier on the pixels predict read (the first as written).
    classifier = AdaptiveClassifier.load(classifier_file)
    generator = torch.Generator().manual_seed(1)
    first = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8, generator=generator)
    expected = classifier.classify_pixels(first)
    record = predictions[0]
    assert record["label"] == int(expected.logits.argmax())
    assert record["actions"] == [a for a in expected.actions[0].tolist() if a >= 0]
    assert record["flops"] == int(expected.flops[0])
    plain = classifier.model.straight_flops()
    assert record["relative_flops"] == pytest.approx(record["flops"] / plain)
    assert 0.0 < record["confidence"] <= 1.0
    assert record["class_name"] == torchvision.datasets.MNIST.classes[record["label"]]


def test_predict_exits_2_on_bad_images_and_bad_classifier_files(runs, tmp_path, capsys):
    classifier_file = classifier_from_run(runs["ppo", 1]).save(tmp_path / "dynalay.pt")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    assert run_rl.main(["predict", str(classifier_file), str(tmp_path / "nope.png")]) == 2
    assert "nope.png: no such file" in capsys.readouterr().err
    assert run_rl.main(["predict", str(classifier_file), str(not_an_image)]) == 2
    assert "notes.png: not a readable image" in capsys.readouterr().err
    assert run_rl.main(["predict", str(not_an_image), str(not_an_image)]) == 2
    assert "not a readable DynaLay classifier" in capsys.readouterr().err
