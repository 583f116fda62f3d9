"""Multi-process training (torchrun, DDP; :mod:`main_model.distributed`) on CPU processes (gloo).

(a) Two processes that train the main model on their halves of every global batch end with the
    parameters of one process trained on the whole batches: the gradient averaging, the loss
    scaling of uneven shards, loop paths unused on one rank or on all, and the implicit (IFT)
    backward through TorchDEQ's backward all agree with the single-process computation.
(b) ``torchrun --nproc_per_node=2 run_rl.py ...`` writes one complete run directory, once, and
    ``--resume`` on it works.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from conftest import write_mnist_files

from agents.config import TrainConfig
from dynalay_env.data import get_spec
from dynalay_env.models import config_for
from main_model import DynaLayNet, distributed
from main_model.recipes import get_recipe, recipe_actions
from main_model.train import train_epoch
from main_model.training_forward import training_forward

REPO = Path(__file__).resolve().parents[2]
WORLD = 2

# Global batches of 8, 8 and 5 samples; the ranks take rows 0-3 / 4-7 (the last: 0-2 / 3-4).
# Fixed actions make the awkward cases happen for sure:
#   batch 1: loop-3 is used on rank 0 only (rank 1 contributes zeros for its loop conv);
#   batch 2: rank 1 is all NOP (runs no loop at all) and no rank loops block 3, so its loop
#            conv gets no gradient anywhere and Adam must skip it, as in one process, even
#            though batch 1 gave it momentum;
#   batch 3: uneven shards (3 and 2 samples): the loss scaling N / global rows matters.
# Batch 4 draws its actions with the dynalay recipe's generator (loop-1..3, seeded).
FIXED_ACTIONS = [[1, 2, 3, 3, 1, 1, 2, 2], [0, 1, 2, 1, 0, 0, 0, 0], [3, 0, 1, 2, 3]]
BATCH_SIZES = [8, 8, 5, 8]


# The dynalay recipe's loss without its loop weighting, whose mean is each rank's (the
# documented difference from one process), so one process and two compute the same loss.
UNWEIGHTED_DYNALAY = dataclasses.replace(get_recipe("dynalay"), loop_weighting="uniform")


def tiny_model(norm: str) -> DynaLayNet:
    """Widths 4/4/4 on MNIST's shape, the injections normalised by ``norm``: ``group``
    (GroupNorm, per sample: nothing depends on the batch) or ``batch`` (StraightStatsBatchNorm,
    whose statistics under torchrun are the global batch's, summed over the ranks: plain DDP
    would normalise each rank's half with its own statistics and differ by design). The
    backward solve runs its full 200 iterations (tolerance 1e-12 is never met) instead of
    stopping at 1e-6 on whichever batch it is given: a rank's half and the whole batch would
    stop at different iterations, and the gradients differ by up to that tolerance. The loop
    weights are scaled up so the loops iterate several times."""
    torch.manual_seed(0)
    config = config_for(
        get_spec("MNIST"),
        (4, 4, 4),
        norm=norm,
        backward_tol=1e-12,
        backward_max_iter=200,
    )
    model = DynaLayNet(config)
    with torch.no_grad():
        for block in model.blocks:
            block.loop_conv.weight.mul_(5.0)
    return model


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 1, 28, 28, generator=generator), torch.randint(0, 10, (size,)))
        for size in BATCH_SIZES
    ]


def train_a_few_steps(norm: str) -> DynaLayNet:
    """Four Adam steps of the dynalay recipe's loss (straight + chosen path) on the global
    batches; in a distributed process, on this rank's shares."""
    model = tiny_model(norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    drawn = recipe_actions(get_recipe("dynalay"), model.n_actions, torch.Generator().manual_seed(2))
    fixed = iter(FIXED_ACTIONS)

    def choose(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        actions = next(fixed, None)
        return drawn(images, labels) if actions is None else torch.tensor(actions)

    train_epoch(
        model,
        optimizer,
        global_batches(),
        choose,
        recipe=UNWEIGHTED_DYNALAY,
        forward=training_forward(model, UNWEIGHTED_DYNALAY),
    )
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_trains(rank: int, port: int, out: str, norm: str) -> None:
    """One of the ``WORLD`` processes (torch.multiprocessing.spawn's entry): torchrun's
    environment variables by hand, then the same code path as under torchrun."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    device = distributed.init_from_env("cpu")
    assert device == torch.device("cpu") and distributed.world_size() == WORLD
    model = train_a_few_steps(norm)
    torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_two_processes_train_to_the_parameters_of_one_process_on_the_whole_batches(norm, tmp_path):
    mp.spawn(_rank_trains, args=(free_port(), str(tmp_path), norm), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    torch.set_num_threads(1)
    assert not distributed.is_distributed()
    alone = train_a_few_steps(norm).state_dict()
    initial = tiny_model(norm).state_dict()

    worst = 0.0
    for name, expected in alone.items():
        # The ranks applied the same averaged gradient to the same weights: bit-identical.
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks differ in {name}"
        if not expected.is_floating_point():
            assert torch.equal(ranks[0][name], expected), name
            continue
        # Not bit-identical to one process, and cannot be: the two ranks' gradients are summed
        # in another order than one process's sum over the whole batch, the loss is a scaled
        # sum instead of a mean, and the implicit backward solves on halves of the batch; in
        # float32 that changes the last bits (~1e-7 relative), which Adam's g / sqrt(v) carries
        # into the update. Measured: max |difference| 9.5e-7 after four steps (on weights of
        # order 0.1-1); allowed 1e-5 + 1e-5 relative. (Touching every parameter with a dummy
        # `0 * param` term instead of find_unused_parameters=True differs by 8e-3 here: Adam
        # then moves the loop conv no sample used in batch 2 by its momentum.)
        torch.testing.assert_close(ranks[0][name], expected, rtol=1e-5, atol=1e-5, msg=name)
        worst = max(worst, float((ranks[0][name] - expected).abs().max()))
    print(f"norm={norm}: max |parameter difference| 2 processes vs 1: {worst:.3g}")
    # The check has teeth: training moved every parameter far beyond the tolerance (block 3's
    # loop conv too: batch 1 used it), and a globally unused step left nothing to compare.
    for name, tensor in initial.items():
        if name.endswith("weight") or name.endswith("bias"):
            assert (alone[name] - tensor).abs().max() > 1e-3, f"{name} did not train"


# ----- (b) torchrun end to end ------------------------------------------------------------------
# One round (pre-training, one RL and one supervised phase, and an RL phase last) on 30 tiny
# MNIST-layout images, 10 of them the holdout: the 20 training images make global batches of
# 8, 8 and 4.
TINY_FLAGS = [
    "--env", "DynaLay-MNIST-v0", "--algo", "ppo", "--device", "cpu", "--widths", "2", "2", "2",
    "--pretrain-epochs", "1", "--rounds", "1", "--total-timesteps", "32", "--num-envs", "4",
    "--holdout-size", "10", "--eval-size", "8", "--batch-size", "8",
]  # fmt: skip


def torchrun(flags: list[str], cache: Path, log: Path) -> str:
    """``torchrun --standalone --nproc_per_node=2 run_rl.py FLAGS`` (a free port of its own)
    to the end, one torch thread per process; returns the output of both ranks."""
    threads = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env = {**os.environ, **threads, "DYNALAY_CACHE": str(cache), "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={WORLD}", "run_rl.py", *flags]
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the children
        process = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=out, timeout=300)
    output = log.read_text()
    assert process.returncode == 0, output[-4000:]
    return output


def test_torchrun_writes_one_complete_run_directory_once_and_resumes(tmp_path):
    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    logdir = tmp_path / "runs"
    flags = [*TINY_FLAGS, "--data-dir", str(tmp_path / "data"), "--logdir", str(logdir)]
    output = torchrun(flags, tmp_path, tmp_path / "run.log")

    (run_dir,) = list(logdir.iterdir())  # rank 0's directory, used by both ranks
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config.pop("resolved_device")
    phases = TrainConfig.from_dict(config).phases()
    assert "round1/supervised" in phases and phases[-1].endswith("/rl")
    progress = json.loads((run_dir / "progress.json").read_text())
    assert progress["completed"] == phases
    for phase in phases[-2:]:  # the last two phases are kept (agents.files.KEPT_PHASES)
        manifest = json.loads((run_dir / "checkpoints" / phase / "manifest.json").read_text())
        assert {"main_model.pt", "agent.zip"} <= set(manifest["files"])
    # Written once, by rank 0: each phase logged once, TensorBoard events from one process.
    log_text = (run_dir / "log.txt").read_text()
    for phase in phases:
        assert log_text.count(f"phase {phase} done") == 1, log_text
    events = list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert events and len({name.name.split(".")[5] for name in events}) == 1  # one pid
    assert "supervised/loss" in (run_dir / "tb" / "progress.csv").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["phases"] == phases and summary["episodes"] == 8
    assert output.count(f"run directory: {run_dir}") == 1  # rank 0 alone prints the summary

    # A crash in the last phase, RL (its manifest never written): --resume re-runs that phase
    # alone, on rank 0 while rank 1 waits, from the files of the one before, and ends as the
    # uninterrupted run did.
    (run_dir / "checkpoints" / phases[-1] / "manifest.json").unlink()
    (run_dir / "summary.json").unlink()
    output = torchrun(["--resume", str(run_dir)], tmp_path, tmp_path / "resumed.log")
    assert f"re-running from phase {phases[-2]}'s files" in output
    assert f"phase {phases[-1]} done" in output and f"phase {phases[-2]} done" not in output
    resumed = json.loads((run_dir / "summary.json").read_text())
    for result in (summary, resumed):
        del result["ms_per_sample"]  # how long evaluating took may differ
    assert resumed == summary
