"""Faults survived, nothing half-written: SIGKILL mid-phase, damaged phase files, contradicting
flags on --resume, and sweeps re-run with other settings.

The training runs here are real ``python run_rl.py`` processes on a tiny MNIST-layout dataset
(CPU, one thread, so they are deterministic and two of them can be compared bit for bit).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_mnist_files

import run_rl
from agents.algorithms import load_saved_agent
from agents.config import TrainConfig, load_run_config
from agents.files import final_checkpoints

REPO = Path(__file__).resolve().parents[2]
# One round: phases pretrain, round1/rl, round1/supervised, final/rl.
TINY_FLAGS = [
    "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--pretrain-epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
    "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
]  # fmt: skip
# DQN that learns within 32 steps (the shipped hyperparameters wait 500 steps first).
TINY_DQN_CONF = """dqn:
  default:
    policy: MlpPolicy
    normalize: {norm_obs: true, norm_reward: false}
    buffer_size: 1000
    learning_starts: 8
    batch_size: 8
    train_freq: 1
    target_update_interval: 16
    policy_kwargs: {net_arch: [16]}
"""
# Run in a child process: pause right after `pause_after` (a path ending) is saved, touching the
# file `marker`, so the test can SIGKILL it there, with one phase file written and the rest not.
PAUSING_DRIVER = """
import sys, time
from pathlib import Path
import agents.trainer as trainer
import run_rl

pause_after, marker, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
save = trainer.save_main_model

def save_then_pause(model, path, **kwargs):
    written = save(model, path, **kwargs)
    if Path(path).as_posix().endswith(pause_after):
        marker.touch()
        time.sleep(600)
    return written

trainer.save_main_model = save_then_pause
sys.exit(run_rl.main(argv))
"""


# ----- helpers ------------------------------------------------------------------------------------
def child_env(cache: Path) -> dict[str, str]:
    """One thread (deterministic float sums, and kind to a 2-core machine), a private cache."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {**os.environ, **threads, "DYNALAY_CACHE": str(cache), "TQDM_DISABLE": "1"}


def start(args: list[str], cache: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the child
        return subprocess.Popen(args, cwd=REPO, env=child_env(cache), stdout=out, stderr=out)


def train(flags: list[str], cache: Path, log: Path) -> str:
    """``python run_rl.py FLAGS`` to the end; returns its output."""
    process = start([sys.executable, "run_rl.py", *flags], cache, log)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


def only_run_dir(logdir: Path) -> Path:
    (run_dir,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run_dir


def assert_same_end(run_dir: Path, reference: Path, algo: str) -> None:
    """Same main-model tensors, agent parameters, normalisation statistics and summary."""
    mine, theirs = final_checkpoints(run_dir), final_checkpoints(reference)
    assert mine.relative_to(run_dir) == theirs.relative_to(reference)
    weights = [torch.load(d / "main_model.pt")["state_dict"] for d in (mine, theirs)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), f"main model {name} differs"
    config = load_run_config(run_dir)
    assert config.algo == algo
    loaded = [load_saved_agent(d, config) for d in (mine, theirs)]
    agents, stats = [agent for agent, _ in loaded], [s.obs_rms for _, s in loaded]
    assert agents[0].num_timesteps == agents[1].num_timesteps
    policies = [agent.policy.state_dict() for agent in agents]
    for name, tensor in policies[0].items():
        assert torch.equal(tensor, policies[1][name]), f"agent {name} differs"
    assert (stats[0].mean == stats[1].mean).all() and (stats[0].var == stats[1].var).all()
    summaries = [json.loads((d / "summary.json").read_text()) for d in (run_dir, reference)]
    for summary in summaries:  # where it ran, and how long evaluating took, may differ
        del summary["run_dir"], summary["ms_per_sample"]
    assert summaries[0] == summaries[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_mnist_files(root / "data", n_train=30, n_test=10)
    (root / "dqn.yml").write_text(TINY_DQN_CONF)
    return root


def run_flags(workspace: Path, logdir: str, algo: str) -> list[str]:
    flags = [*TINY_FLAGS, "--algo", algo, "--data-dir", str(workspace / "data")]
    if algo == "dqn":
        flags += ["--conf", str(workspace / "dqn.yml")]
    return [*flags, "--logdir", str(workspace / logdir)]


@pytest.fixture(scope="module")
def uninterrupted(workspace):
    """The finished run each algorithm's faulted runs must end equal to (made once)."""
    made: dict[str, Path] = {}

    def get(algo: str) -> Path:
        if algo not in made:
            logdir = f"whole-{algo}"
            train(run_flags(workspace, logdir, algo), workspace, workspace / f"{logdir}.log")
            made[algo] = only_run_dir(workspace / logdir)
        return made[algo]

    return get


# ----- SIGKILL and damaged files --------------------------------------------------------------
def test_sigkill_in_the_middle_of_a_phase_then_resume_ends_as_an_uninterrupted_run(
    workspace, uninterrupted, tmp_path
):
    reference = uninterrupted("ppo")
    marker = tmp_path / "paused"
    process = start(
        [sys.executable, "-c", PAUSING_DRIVER, "round1/supervised/main_model.pt", str(marker)]
        + run_flags(workspace, "killed", "ppo"),
        workspace,
        tmp_path / "killed.log",
    )
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the run never reached round1/supervised's save"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL

    run_dir = only_run_dir(workspace / "killed")
    phase = run_dir / "checkpoints" / "round1" / "supervised"
    # Half-written: the phase's new main model is there, its agent and manifest are not.
    assert (phase / "main_model.pt").is_file() and not (phase / "manifest.json").exists()
    assert not (run_dir / "summary.json").exists()

    output = train(["--resume", str(run_dir)], workspace, tmp_path / "resumed.log")
    assert f"{phase / 'manifest.json'} is missing" in output
    assert "re-running from phase round1/rl's files" in output
    assert_same_end(run_dir, reference, "ppo")


@pytest.mark.parametrize(
    "algo, damaged, how",
    [("ppo", "agent.zip", "corrupted"), ("dqn", "replay_buffer.npz", "missing")],
)
def test_damaged_file_of_the_last_phase_is_detected_and_the_phase_re_run(
    algo, damaged, how, workspace, uninterrupted, tmp_path
):
    reference = uninterrupted(algo)
    run_dir = tmp_path / reference.name
    shutil.copytree(reference, run_dir)
    target = run_dir / "checkpoints" / "final" / "rl" / damaged
    if how == "corrupted":
        data, middle = bytearray(target.read_bytes()), target.stat().st_size // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        target.write_bytes(bytes(data))
    else:
        target.unlink()

    output = train(["--resume", str(run_dir)], workspace, tmp_path / "resumed.log")
    assert f"{target} is {how}" in output
    assert "re-running from phase round1/supervised's files" in output
    assert "phase final/rl done" in output and "phase round1/rl done" not in output
    assert target.is_file()
    assert_same_end(run_dir, reference, algo)


def test_replay_buffer_is_carried_from_phase_to_phase(uninterrupted):
    run_dir = uninterrupted("dqn")
    final = final_checkpoints(run_dir)
    manifest = json.loads((final / "manifest.json").read_text())
    assert "replay_buffer.npz" in manifest["files"]
    with np.load(final / "replay_buffer.npz", allow_pickle=False) as buffer:  # arrays only
        pos, n_envs = int(buffer["pos"]), buffer["observations"].shape[1]
    agent, _ = load_saved_agent(final, load_run_config(run_dir))
    # Both RL phases' transitions: the buffer came back from round1's files for final/rl.
    assert pos * n_envs == agent.num_timesteps >= 2 * 32


# ----- contradicting flags and stale sweeps ----------------------------------------------------
def saved_run(run_dir: Path, config: TrainConfig) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return run_dir


def test_resume_refuses_flags_that_contradict_the_saved_config(tmp_path, capsys):
    run_dir = saved_run(tmp_path / "run", TrainConfig(beta=0.3, seed=0))
    argv = ["--resume", str(run_dir), "--beta", "0.5", "--seed", "0", "--lr", "0.5"]
    with pytest.raises(SystemExit) as exit_info:
        run_rl.main([*argv, "--widths", "4", "4", "4", "--algo", "ppo"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.split("error: ")[-1]  # after argparse's usage lines
    assert "contradict" in message and str(run_dir) in message
    assert "--beta 0.5 (saved: 0.3)" in message and "--lr 0.5 (saved: 0.01)" in message
    assert "--widths [4, 4, 4] (saved: [64, 128, 256])" in message
    assert "--seed" not in message and "--algo" not in message  # equal to the saved values


def test_resume_accepts_flags_equal_to_the_saved_config(tmp_path):
    saved = TrainConfig(beta=0.3, widths=(4, 4, 4))
    argv = ["--resume", "x", "--beta", "0.3", "--widths", "4", "4", "4", "--lr", "0.01"]
    args = run_rl.build_parser().parse_args(argv)
    assert run_rl.resume_conflicts(args, saved) == []


def test_sweep_refuses_to_reuse_a_run_made_with_other_settings(workspace, tmp_path, capsys):
    sweep = ["sweep", "--betas", "0.3", *TINY_FLAGS, "--data-dir", str(workspace / "data")]
    sweep += ["--logdir", str(tmp_path), "--taus", "0.9"]
    assert run_rl.main(sweep) == 0
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("sweep_")]
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()}
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        run_rl.main([*sweep, "--total-timesteps", "64"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert f"{sweep_dir / 'beta_0.3'} holds a run made with other settings" in message
    assert "total_timesteps: 32 there, 64 now" in message
    assert "another --logdir" in message and f"delete {sweep_dir}" in message
    # Nothing was trained, rewritten or mixed: not even config.yaml.
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.rglob("*") if p.is_file()} == before
