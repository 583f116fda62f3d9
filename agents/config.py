"""All hyperparameters of a DynaLay training run in one dataclass (CleanRL style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")
CONFIG_FILE = "config.yaml"  # in a run directory: the run's resolved TrainConfig


@dataclass
class TrainConfig:
    """A run of the alternating trainer. Defaults follow the thesis where it says something.

    RL phases use ``total_timesteps`` env steps each; supervised phases ``supervised_epochs``
    passes over the train split (capped at ``train_size`` samples per epoch when set).
    """

    algo: str = "ppo"
    env: str = "DynaLay-CIFAR10-v0"
    seed: int = 0  # model initialisation, path draws, agent
    data_seed: int = 0  # which training images form the holdout (and the train_size subset)
    device: str = "auto"
    num_envs: int = 64
    total_timesteps: int = 50_000
    rounds: int = 3
    pretrain_epochs: int = 20  # thesis: 20 warm-up epochs on all paths (0: start untrained)
    agent_pretrain: bool = True  # the agent learns on the warmed-up model before round 1's
    #                              supervised phase (thesis Sec. 4.0.5); False: that phase
    #                              follows an untrained agent, and each round is supervised, rl
    track_test: int = 0  # after every supervised epoch, log test/accuracy and test/loss of the
    #                      agent's paths on this many test images (0: off; Fig. 4.2's curves)
    recipe: str = "dynalay"  # main-model training recipe (main_model.train.RECIPES)
    supervised_epochs: int = 1
    exploration: float = 0.2  # share of uniformly random paths in supervised phases
    alpha: float = 0.5  # thesis
    beta: float = 0.3  # thesis
    gamma_loss: float = 0.2  # thesis: L = CE - gamma * R
    max_steps: int = 1  # 1 = the thesis's one-shot choice
    penalty: str = "consecutive"  # reward's last factor: "consecutive" count or chosen "layer"
    batch_size: int = 64  # thesis
    learning_rate: float = 1e-2  # Adam peak, cosine decay (chosen on the holdout, docs/results.md)
    widths: tuple[int, ...] = (64, 128, 256)  # thesis
    strides: tuple[int, ...] | None = None  # of the blocks' injection convs; None = 1, then 2s
    holdout_size: int | None = None  # the agent's split; None: the dataset's default
    train_size: int | None = None
    eval_size: int | None = None  # test samples in the final summary (None = all)
    data_dir: str | None = None
    download: bool = False
    checkpoint: str | None = None
    logdir: str = "runs"
    conf: str | None = None
    algo_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["widths"] = list(self.widths)
        values["strides"] = None if self.strides is None else list(self.strides)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        values = dict(values)
        for key in ("widths", "strides"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def phases(self) -> list[str]:
        """The run's phases in order; each names its checkpoint folder (``agents.trainer``)."""
        if self.supervised_epochs == 0:
            kinds: tuple[str, ...] = ("rl",)
        else:
            kinds = ("rl", "supervised") if self.agent_pretrain else ("supervised", "rl")
        phases = ["pretrain"] + [f"round{r}/{k}" for r in range(1, self.rounds + 1) for k in kinds]
        if phases[-1].endswith("/supervised"):
            phases.append("final/rl")  # the agent adapts to the model the last phase left
        return phases

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (this value, other's value)}`` for every field where the two differ.

        Compared as YAML-plain data (tuples as lists), the form a saved config.yaml reads back.
        """
        mine, theirs = _plain(self.to_dict()), _plain(other.to_dict())
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


class RunConfigMismatch(ValueError):
    """A run directory holds a run made with other settings than the ones asked for."""

    def __init__(
        self,
        run_dir: Path,
        differences: dict[str, tuple[Any, Any]],
        advice: str = "choose another directory or delete it",
    ) -> None:
        self.run_dir = Path(run_dir)
        self.differences = differences
        changed = "; ".join(
            f"{key}: {saved!r} there, {given!r} now" for key, (saved, given) in differences.items()
        )
        super().__init__(f"{run_dir} holds a run made with other settings ({changed}); {advice}")


def load_run_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig saved in ``run_dir/config.yaml`` (its resolved device left out)."""
    saved = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text())
    saved.pop("resolved_device", None)
    return TrainConfig.from_dict(saved)


def _plain(values: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(values))


def algo_hyperparams(algo: str, env_id: str, conf: str | None = None) -> dict[str, Any]:
    """The algorithm's keyword arguments: ``default`` then the env's own, from the YAML file."""
    path = Path(conf) if conf else HYPERPARAMS_FILE
    with open(path) as handle:
        table = yaml.safe_load(handle) or {}
    per_algo = table.get(algo, {})
    return {**per_algo.get("default", {}), **per_algo.get(env_id, {})}
