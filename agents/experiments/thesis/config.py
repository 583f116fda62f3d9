"""The reproduction's settings: :class:`ReproduceConfig` (one flag per field) and ``--quick``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from agents.cli import arg, positive_int
from dynalay_env.data import DEFAULT_IMAGE_HOLDOUT
from dynalay_env.registry import ENV_IDS

CONFIG_FILE = "reproduce_config.json"


class ReproductionError(ValueError):
    """A reproduction that cannot run as asked (a table without the rows an experiment reads);
    the message says what to do."""


@dataclass(frozen=True)
class ReproduceConfig:
    """Budget and settings shared by every experiment (the defaults: ``docs/reproduction.md``).

    The main model has the shipped model's shape (widths 16/32/64, strides 2/2/2) and the
    settled ``dynalay`` recipe; ``epochs`` is its pre-training (the thesis's warm-up).
    """

    env: str = arg("DynaLay-FashionMNIST-v0", f"one of {sorted(ENV_IDS.values())}")
    seeds: tuple[int, ...] = arg((0, 1, 2), "one run of every piece per seed")
    widths: tuple[int, ...] = arg((16, 32, 64), "channels of the blocks", type=positive_int)
    strides: tuple[int, ...] = arg((2, 2, 2), "one per width", type=positive_int)
    train_size: int | None = arg(10000, "training images", type=positive_int)
    epochs: int = arg(3, "pre-training epochs (and Fig. 4.4's training)", type=positive_int)
    rounds: int = arg(2, "alternating rounds (RL then supervised)", type=positive_int)
    supervised_epochs: int = arg(1, cli=False)
    total_timesteps: int = arg(
        10000, "env steps per RL phase and per agent on the frozen model", type=positive_int
    )
    num_envs: int = arg(64, "batched env slots", type=positive_int)
    alpha: float = arg(0.5, cli=False)  # thesis
    beta: float = arg(0.3, cli=False)  # thesis; the alternating runs' beta
    betas: tuple[float, ...] = arg((0.01, 0.03, 0.1, 0.3, 1.0), "Fig. 4.3b", type=float, sort=True)
    introspection_beta: float = arg(0.1, cli=False)
    max_steps: tuple[int, ...] = arg((1, 2, 3), cli=False)
    track_test: int = arg(2000, "test images behind Fig. 4.2's curves", type=positive_int)
    batch_size: int = arg(64, "main-model batch (thesis)", type=positive_int)
    learning_rate: float = arg(1e-2, cli=False)
    holdout_size: int = arg(DEFAULT_IMAGE_HOLDOUT, "the agents' images", type=positive_int)
    data_seed: int = arg(0, cli=False)
    eval_size: int | None = arg(
        None, "test images of every final number (None: all)", type=positive_int
    )
    data_dir: str | None = arg(None, "where to look for the dataset first")
    device: str = arg("auto", "auto (GPU when there is one), cpu, cuda")
    table_dir: str | None = arg(
        None, "a `run_rl.py table` directory for Table 4.1 (None: train one)"
    )
    out: str = arg("runs/reproduction", "results directory")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: ``--quick``: every experiment in minutes on 2 CPU cores (numbers too noisy to conclude from).
QUICK = {
    "train_size": 2000,
    "epochs": 1,
    "rounds": 1,
    "total_timesteps": 2048,
    "betas": (0.03, 0.3),
    "track_test": 500,
    "holdout_size": 1000,
    "eval_size": 1000,
}
