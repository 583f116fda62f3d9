"""A diverging run stops loudly with nothing good lost: ``run_rl.py`` exits with code 3 and a
message naming the phase, the epoch or rollout and the step and what to try, no traceback; the
last verified phase's manifest still checks out and ``--resume`` continues after it. A phase whose
main model learned nothing says so in the log and the summary.

The first two runs are real ``python run_rl.py`` processes on a tiny MNIST-layout dataset.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits, write_mnist_files

import run_rl
from agents.files import RunDirectory
from agents.health import below_chance, chance_accuracy, check_finite_phase
from dynalay_env.core import DynaLayCore
from main_model.divergence import TrainingDiverged

REPO = Path(__file__).resolve().parents[2]
# One round: phases pretrain, round1/rl, round1/supervised, final/rl.
TINY_FLAGS = [
    "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--pretrain-epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
    "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
]  # fmt: skip
# Run in a child process: every forward of a supervised phase's training steps returns NaN
# logits (the first supervised step diverges), the rest of the run as it is.
NAN_IN_SUPERVISED_DRIVER = """
import sys
import agents.trainer as trainer
import run_rl
from main_model.training_forward import TrainingForward

forward, supervised = TrainingForward.forward, trainer.AlternatingTrainer._supervised_phase
poisoned = []

def nan_forward(self, *args, **kwargs):
    paths = forward(self, *args, **kwargs)
    if poisoned:
        paths.chosen = paths.chosen * float("nan")
    return paths

def poisoned_supervised(self, round_index):
    poisoned.append(round_index)
    return supervised(self, round_index)

TrainingForward.forward = nan_forward
trainer.AlternatingTrainer._supervised_phase = poisoned_supervised
sys.exit(run_rl.main(sys.argv[1:]))
"""


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    return tmp_path / "data"


def run_child(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``args`` (a script and its arguments) in a fresh Python, one thread, a private cache."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {**os.environ, **threads, "DYNALAY_CACHE": str(tmp_path / "cache"), "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def only_run_dir(logdir: Path) -> Path:
    (run_dir,) = list(logdir.iterdir())
    return run_dir


def assert_stopped_loudly(child: subprocess.CompletedProcess, where: str) -> str:
    """Exit code 3, the message in the project's words on stderr, no traceback."""
    assert child.returncode == run_rl.DIVERGED, child.stderr[-3000:]
    assert "Traceback" not in child.stderr, child.stderr[-3000:]
    (line,) = [line for line in child.stderr.splitlines() if line.startswith("run_rl.py: ")]
    assert line.startswith(f"run_rl.py: training diverged in {where}"), line
    return line


def test_a_huge_learning_rate_stops_the_supervised_phase_and_keeps_the_rl_phase(
    tiny_data, tmp_path
):
    """No pre-training, so the huge rate first trains in round 1's supervised phase."""
    logdir = tmp_path / "runs"
    flags = [*TINY_FLAGS, "--pretrain-epochs", "0", "--lr", "1e30"]
    child = run_child(
        ["run_rl.py", *flags, "--data-dir", str(tiny_data), "--logdir", str(logdir)], tmp_path
    )
    line = assert_stopped_loudly(child, "phase round1/supervised, epoch 1, step ")
    run_dir = only_run_dir(logdir)
    files = RunDirectory(run_dir)
    assert "a lower --lr (this run's: 1e+30)" in line
    assert f"--checkpoint {files.phase_folder('round1/rl') / 'main_model.pt'}" in line
    assert files.verify("round1/rl").phase == "round1/rl"
    assert not files.phase_folder("round1/supervised").exists()  # nothing of it was written
    assert not (run_dir / "summary.json").exists()
    assert (
        "stopped: training diverged in phase round1/supervised" in (run_dir / "log.txt").read_text()
    )


def test_a_nan_forward_stops_the_run_and_resume_after_the_fix_continues_from_the_last_phase(
    tiny_data, tmp_path
):
    logdir = tmp_path / "runs"
    driver = tmp_path / "nan_in_supervised.py"
    driver.write_text(NAN_IN_SUPERVISED_DRIVER)
    flags = [*TINY_FLAGS, "--data-dir", str(tiny_data), "--logdir", str(logdir)]
    child = run_child([str(driver), *flags], tmp_path)
    line = assert_stopped_loudly(
        child, "phase round1/supervised, epoch 1, step 1: the loss is nan."
    )
    run_dir = only_run_dir(logdir)
    files = RunDirectory(run_dir)
    assert files.verify("round1/rl").phase == "round1/rl"
    assert f"--resume {run_dir}" in line
    assert not files.phase_folder("round1/supervised").exists()

    # "The fix": the same run, resumed without the NaN; it continues after round1/rl.
    resumed = run_child(["run_rl.py", "--resume", str(run_dir)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run_dir / "log.txt").read_text()
    assert f"resuming {run_dir} after phase round1/rl" in log
    assert log.count("phase pretrain done") == 1  # never re-run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["phases"] == ["pretrain", "round1/rl", "round1/supervised", "final/rl"]


def test_non_finite_observations_stop_the_rl_phase_naming_rollout_and_step(
    tiny_data, tmp_path, monkeypatch, capsys
):
    """From the core's third observation on (after the first reset and step of round1/rl),
    every observation is NaN, the fresh episodes' included."""
    calls = []

    def nan_after_two(method):
        def observed(self, *args, **kwargs):
            calls.append(1)
            observations = method(self, *args, **kwargs)
            if len(calls) > 2:
                observations[:] = np.nan
            return observations

        return observed

    for name in ("observe", "reset_and_observe"):
        monkeypatch.setattr(DynaLayCore, name, nan_after_two(getattr(DynaLayCore, name)))
    logdir = tmp_path / "runs"
    code = run_rl.main([*TINY_FLAGS, "--data-dir", str(tiny_data), "--logdir", str(logdir)])
    assert code == run_rl.DIVERGED
    err = capsys.readouterr().err
    assert re.search(r"run_rl.py: training diverged in phase round1/rl, rollout 1, step \d+: ", err)
    assert "the observations of 4 of 4 env slots (slots [0, 1, 2, 3]) are not finite" in err
    files = RunDirectory(only_run_dir(logdir))
    assert files.verify("pretrain").phase == "pretrain"
    assert not files.phase_folder("round1/rl").exists()


def test_nothing_non_finite_reaches_a_checkpoint():
    model = make_model("MNIST")
    check_finite_phase(model, None, None)  # finite: nothing to say
    name, statistic = next((n, b) for n, b in model.named_buffers() if n.endswith("running_var"))
    statistic[0] = float("inf")
    with pytest.raises(TrainingDiverged, match=f"main model {name} is not finite at the end"):
        check_finite_phase(model, None, None)


def test_a_model_no_better_than_chance_on_the_holdout_is_noted_and_summarised(caplog):
    holdout = make_splits("MNIST", n_train=40)["holdout"]
    holdout.labels[:] = 3  # one class: only a model that always answers 3 beats "chance" (1.0)
    assert chance_accuracy(holdout.labels) == 1.0
    assert chance_accuracy(torch.tensor([0, 1, 1, 2])) == 0.5
    note = below_chance(make_model("MNIST"), holdout, "round2/supervised", 0.5)
    assert note is not None and note["phase"] == "round2/supervised" and note["chance"] == 1.0
    assert "round2/supervised: the main model's straight pass is no better than chance" in (
        caplog.text
    )
    summary = {
        "accuracy": 0.1, "episodes": 8, "mean_cost": 0.0, "relative_flops": 1.0,
        "action_frequencies": [1.0], "run_dir": "runs/x", "below_chance": [note],
    }  # fmt: skip
    assert "warning: after phase round2/supervised the main model was no better than chance" in (
        run_rl.format_summary(summary)
    )


def test_a_sub_command_that_diverges_exits_with_its_message(monkeypatch, capsys):
    def diverging(argv):
        raise TrainingDiverged("the loss is nan", epoch=2, step=5, advice="Try a lower --lr.")

    monkeypatch.setitem(run_rl.SUBCOMMANDS, "table", diverging)
    assert run_rl.main(["table"]) == run_rl.DIVERGED
    assert capsys.readouterr().err == (
        "run_rl.py table: training diverged in epoch 2, step 5: the loss is nan. "
        "Try a lower --lr.\n"
    )
