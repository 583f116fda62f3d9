"""Tests of the text datasets (IMDB, WikiText-2) and their registered environments, on tiny
corpora the tests write in the standard layouts."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import dynalay_env  # noqa: F401  (registers the ids)
from dynalay_env.data import DataNotFoundError, load_splits, training_provenance
from dynalay_env.data.text import EOS, PAD, UNK, build_vocabulary, load_text_splits, tokenize_review
from dynalay_env.models import model_config_for
from dynalay_env.vector_env import DynaLayVectorEnv
from main_model import DynaLaySeqNet, load_main_model, save_main_model
from main_model.train import new_main_model

WORDS = [f"w{i}" for i in range(30)]
SMALL = (4, 4, 4)


def write_wikitext(root: Path, splits=("train", "valid", "test"), style: str = "txt") -> Path:
    """A tiny WikiText-2 in its standard layout: lines of space-separated words."""
    folder = root / "wikitext-2"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, split in enumerate(splits):
        lines = [
            " " + " ".join(rng.choice(WORDS[: 20 + 5 * index], size=rng.integers(5, 15))) + " "
            for _ in range(40)
        ]
        name = f"{split}.txt" if style == "txt" else f"wiki.{split}.tokens"
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def write_imdb(root: Path, per_class: int = 12) -> Path:
    """A tiny IMDB in its standard layout: aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for label, mood in (("pos", "great"), ("neg", "awful")):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(per_class):
                words = " ".join(rng.choice(WORDS, size=rng.integers(3, 20)))
                text = f"A {mood} film!<br /><br />{words} It's {mood}."
                (folder / f"{number}_7.txt").write_text(text, encoding="utf-8")
    return root


def tiny_text_model(splits, seed: int = 0) -> DynaLaySeqNet:
    torch.manual_seed(seed)
    model = new_main_model(model_config_for(splits["train"], SMALL, embed_dim=4), splits["train"])
    with torch.no_grad():
        for block in model.blocks:
            block.loop_conv.weight.mul_(5.0)  # at the bound: loops take several iterations
    model.provenance = training_provenance(splits["train"])
    return model.eval()


# ----- loaders ------------------------------------------------------------------------------------
def test_vocabulary_is_by_count_then_alphabetical_with_specials_first():
    vocabulary = build_vocabulary([["b", "a", "c", "a", UNK], ["c", "d"]], (PAD, UNK), 4)
    assert vocabulary == (PAD, UNK, "a", "c")


def test_wikitext_windows_predict_the_next_token(tmp_path: Path):
    splits = load_text_splits("WikiText2", write_wikitext(tmp_path), holdout_size=5, seq_len=8)
    train, holdout, test = splits["train"], splits["holdout"], splits["test"]
    assert train.tokens.shape[1] == 8 and train.labels.shape == train.tokens.shape
    assert torch.equal(train.tokens[:, 1:], train.labels[:, :-1])  # labels = inputs shifted
    assert len(holdout) == 5 and not set(holdout.indices.tolist()) & set(train.indices.tolist())
    vocabulary = train.vocabulary
    assert vocabulary[:2] == (UNK, EOS) and set(vocabulary) == {UNK, EOS, *WORDS[:20]}
    assert test.vocabulary == vocabulary
    assert (test.tokens == 0).any()  # test words outside the training vocabulary -> <unk>
    assert train.source == "train.txt"
    again = load_text_splits("WikiText2", tmp_path, holdout_size=5, seq_len=8)
    assert torch.equal(again["holdout"].tokens, holdout.tokens)


def test_wikitext_official_layout_and_training_on_valid_when_train_is_missing(tmp_path: Path):
    write_wikitext(tmp_path, splits=("valid", "test"), style="tokens")
    with pytest.warns(UserWarning, match="training on its valid split"):
        splits = load_splits("WikiText2", tmp_path, holdout_size=5, seq_len=8)
    assert splits["train"].source == "wiki.valid.tokens"
    assert splits["test"].source == "wiki.test.tokens"


def test_imdb_reviews_are_cut_or_padded_and_labelled(tmp_path: Path):
    splits = load_text_splits("IMDB", write_imdb(tmp_path), holdout_size=4, seq_len=10)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(splits["holdout"]) == 24 and len(test) == 24
    assert train.tokens.shape == (20, 10) and train.labels.shape == (20,)
    assert test.labels.tolist() == [0] * 12 + [1] * 12  # neg then pos
    vocabulary = train.vocabulary
    assert vocabulary[:2] == (PAD, UNK)
    first = tokenize_review((tmp_path / "aclImdb/test/neg/0_7.txt").read_text())
    assert first[:4] == ["a", "awful", "film", "!"] and "br" not in first
    ids = {token: i for i, token in enumerate(vocabulary)}
    expected = [ids.get(token, 1) for token in first[:10]] + [0] * max(0, 10 - len(first))
    assert test.tokens[0].tolist() == expected


def test_missing_text_data_says_where_it_looked_and_what_to_run(tmp_path: Path):
    for name in ("IMDB", "WikiText2"):
        with pytest.raises(DataNotFoundError) as error:
            load_splits(name, tmp_path / "nowhere")
        message = str(error.value)
        assert str(tmp_path / "nowhere") in message and "download=False" in message
        assert "pip install 'dynalay[text]'" in message and "--data-dir" in message


def test_download_without_hugging_face_datasets_says_how_to_get_it(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # as if not installed
    with pytest.raises(DataNotFoundError, match=r"needs Hugging Face datasets: pip install"):
        load_splits("WikiText2", tmp_path / "nowhere", download=True)


# ----- environments ---------------------------------------------------------------------------
@pytest.fixture
def text_data(tmp_path: Path):
    """Per dataset: the data root, its splits and a checkpoint of a tiny model trained on it."""

    def make(name: str, seq_len: int):
        root = write_wikitext(tmp_path) if name == "WikiText2" else write_imdb(tmp_path)
        splits = load_splits(name, root, holdout_size=6, seq_len=seq_len)
        checkpoint = save_main_model(tiny_text_model(splits), tmp_path / f"{name}.pt")
        return root, splits, checkpoint

    return make


@pytest.mark.parametrize("name", ["IMDB", "WikiText2"])
def test_registered_text_envs_pass_the_gymnasium_and_sb3_checkers(name, text_data):
    root, _, checkpoint = text_data(name, 8)
    kwargs = {"data_dir": root, "checkpoint": checkpoint, "holdout_size": 6, "seq_len": 8}
    env = gym.make(f"dynalay_env:DynaLay-{name}-v0", **kwargs, max_steps=2)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)
    vector = gym.make_vec(
        f"DynaLay-{name}-v0", num_envs=3, vectorization_mode="vector_entry_point", **kwargs
    )
    assert isinstance(vector.unwrapped, DynaLayVectorEnv)
    observations, _ = vector.reset(seed=0)
    assert observations.shape == (3, env.observation_space.shape[0])
    assert vector.single_observation_space.contains(observations[0])


def test_wikitext_reward_is_alpha_times_the_share_of_right_tokens(text_data):
    root, splits, checkpoint = text_data("WikiText2", 8)
    env = gym.make(
        "DynaLay-WikiText2-v0",
        data_dir=root,
        checkpoint=checkpoint,
        holdout_size=6,
        seq_len=8,
        alpha=0.5,
    )
    model = env.unwrapped.core.model
    for row in range(len(splits["holdout"])):
        env.reset(options={"index": row})
        _, reward, terminated, _, info = env.step(0)
        tokens = splits["holdout"].tokens[row : row + 1]
        labels = splits["holdout"].labels[row]
        with torch.no_grad():
            logits = model(tokens)[0]  # (V, T)
        share = float((logits.argmax(dim=0) == labels).double().mean())
        nll = float(torch.nn.functional.cross_entropy(logits.T, labels))
        assert terminated and 0.0 <= reward <= 0.5
        assert reward == pytest.approx(0.5 * share, abs=1e-6)
        assert info["correct"] == pytest.approx(share)
        assert info["perplexity"] == pytest.approx(math.exp(nll), rel=1e-5)
        assert info["prediction"].shape == info["label"].shape == (8,)


def test_imdb_reward_pays_alpha_for_a_right_label(text_data):
    root, splits, checkpoint = text_data("IMDB", 8)
    env = gym.make(
        "DynaLay-IMDB-v0", data_dir=root, checkpoint=checkpoint, holdout_size=6, seq_len=8
    )
    env.reset(options={"index": 0})
    _, reward, _, _, info = env.step(3)
    assert isinstance(info["correct"], bool) and reward <= 0.5 * info["correct"]
    assert "perplexity" not in info


def test_a_model_with_another_vocabulary_is_refused(text_data, tmp_path: Path):
    root, splits, _ = text_data("WikiText2", 8)
    model = tiny_text_model(splits)
    vocabulary = list(model.vocabulary)
    vocabulary[2], vocabulary[3] = vocabulary[3], vocabulary[2]  # same size, other ids
    model.vocabulary = tuple(vocabulary)
    other = save_main_model(model, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="vocabulary is not the one this WikiText2 data"):
        gym.make("DynaLay-WikiText2-v0", data_dir=root, checkpoint=other, holdout_size=6, seq_len=8)
    with pytest.raises(ValueError, match="seq_len"):
        gym.make("DynaLay-WikiText2-v0", data_dir=root, checkpoint=other, holdout_size=6, seq_len=9)


# ----- training and evaluation end to end -------------------------------------------------------
def test_run_rl_trains_and_evaluates_on_wikitext_trained_on_valid(tmp_path: Path, capsys):
    import json

    import run_rl

    root = write_wikitext(tmp_path / "data", splits=("valid", "test"))
    flags = [
        "--env", "DynaLay-WikiText2-v0", "--algo", "ppo", "--device", "cpu",
        "--widths", "3", "3", "3", "--pretrain-epochs", "1", "--rounds", "1",
        "--total-timesteps", "32", "--num-envs", "4", "--holdout-size", "6", "--eval-size", "8",
        "--batch-size", "8", "--data-dir", str(root), "--logdir", str(tmp_path / "runs"),
    ]  # fmt: skip
    with pytest.warns(UserWarning, match="training on its valid split"):
        assert run_rl.main(flags) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["episodes"] == 8 and summary["perplexity"] > 1.0
    assert "perplexity" in capsys.readouterr().out
    eval_flags = ["eval", str(run_dir), "--device", "cpu", "--taus", "0.1", "--eval-size", "8"]
    with pytest.warns(UserWarning, match="training on its valid split"):
        assert run_rl.main(eval_flags) == 0
    results = json.loads((run_dir / "results.json").read_text())
    by_name = {p["name"]: p for p in results["policies"]}
    # The run's summary is the agent's row of an evaluation on the same 8 windows, recomputed
    # by `eval` from the saved files: its share of right tokens and its perplexity.
    agent = next(p for name, p in by_name.items() if name.startswith("agent"))
    assert agent["accuracy"] == pytest.approx(summary["accuracy"])
    assert agent["perplexity"] == pytest.approx(summary["perplexity"])
    assert by_name["static NOP (plain CNN)"]["perplexity"] > 1.0
    assert "perplexity" not in by_name["oracle"]  # no token likelihoods behind the oracle
    assert "| perplexity |" in (run_dir / "results.md").read_text()


def test_pretrain_command_trains_a_text_model_with_its_vocabulary(tmp_path: Path, capsys):
    from dynalay_env.pretrain import main as pretrain

    root = write_wikitext(tmp_path / "data")
    output = tmp_path / "wiki.pt"
    flags = ["--dataset", "WikiText2", "--data-dir", str(root), "--widths", "3", "3", "3"]
    flags += ["--epochs", "1", "--holdout-size", "6", "--device", "cpu", "--output", str(output)]
    assert pretrain(flags) == 0
    assert "perplexity" in capsys.readouterr().err
    splits = load_splits("WikiText2", root, holdout_size=6)
    model, _ = load_main_model(output)
    assert splits["train"].model_mismatch(model) is None  # same vocabulary, same shapes


def test_the_threshold_baseline_defaults_to_thresholds_a_language_model_reaches():
    from agents.experiments import DEFAULT_TAUS, TEXT_TAUS, default_taus

    assert default_taus("DynaLay-WikiText2-v0") == TEXT_TAUS
    assert default_taus("DynaLay-IMDB-v0") == DEFAULT_TAUS  # two classes: top p >= 0.5
    assert default_taus("DynaLay-FashionMNIST-v0") == DEFAULT_TAUS
    assert max(TEXT_TAUS) < min(DEFAULT_TAUS)
