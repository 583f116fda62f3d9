"""All hyperparameters of a DynaLay training run in one dataclass (CleanRL style), and the
run directory's ``config.yaml``: written once, checked on every resume (:func:`check_run_config`
refuses a directory made with other settings)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dynalay_env.mdp import MDPConfig
from main_model.io import atomic_write

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
    # The reward's settings (dynalay_env.mdp.MDPConfig, whose defaults are the thesis's); kept
    # flat here, as config.yaml has always written them; `mdp` gathers them.
    alpha: float = MDPConfig.alpha
    beta: float = MDPConfig.beta
    gamma_loss: float = 0.2  # thesis: L = CE - gamma * R
    max_steps: int = MDPConfig.max_steps  # 1 = the thesis's one-shot choice
    penalty: str = MDPConfig.penalty  # reward's last factor: "consecutive" count or "layer" k
    shaping: str = MDPConfig.shaping  # "nop": potential-based reward relative to NOP
    observe_changes: bool = MDPConfig.observe_changes  # observation: what the last loop changed
    # Behaviour cloning when the agent is made: the policy's action head is fitted for this
    # many epochs to the confidence-threshold rule (NOP when the top probability >= bc_tau,
    # else the holdout's most accurate loop) on the holdout's observations (0: off, as before).
    bc_epochs: int = 0
    bc_tau: float = 0.5
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

    @property
    def mdp(self) -> MDPConfig:
        """The run's reward settings as one object (checked: a bad value raises here)."""
        return MDPConfig(
            self.alpha,
            self.beta,
            self.max_steps,
            self.penalty,
            shaping=self.shaping,
            observe_changes=self.observe_changes,
        )

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


def check_run_config(run_dir: Path, config: TrainConfig) -> bool:
    """Whether ``run_dir`` already holds a run of ``config``: True when its config.yaml is
    ``config``, False when it has none; :class:`RunConfigMismatch` (naming every difference)
    when it was made with other settings, whose phases must never be reused or mixed."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return False
    differences = load_run_config(run_dir).differences(config)
    if differences:
        raise RunConfigMismatch(run_dir, differences)
    return True


def write_run_config(run_dir: Path, config: TrainConfig, resolved_device: Any) -> Path:
    """Save ``config`` as ``run_dir/config.yaml`` (atomically), with the device it resolved to."""
    resolved = {**config.to_dict(), "resolved_device": str(resolved_device)}
    text = yaml.safe_dump(resolved, sort_keys=False)
    return atomic_write(Path(run_dir) / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))


def _plain(values: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(values))
