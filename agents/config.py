"""All hyperparameters of a DynaLay training run in one dataclass (CleanRL style), each field
declared once with its ``run_rl.py`` flag (:func:`agents.cli.arg`), and the run directory's
``config.yaml``: written once, checked on every resume (:func:`check_run_config` refuses a
directory made with other settings)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.cli import arg, non_negative_float, non_negative_int, positive_int
from dynalay_env import ENV_IDS, TEXT_ENV_IDS
from dynalay_env.mdp import PENALTIES, SHAPINGS, MDPConfig
from main_model.io import atomic_write
from main_model.recipes import RECIPES

CONFIG_FILE = "config.yaml"  # in a run directory: the run's resolved TrainConfig
#: What train and sweep accept: the image ids and the text ids (the table's baselines are CNNs).
TRAINABLE_ENV_IDS = sorted([*ENV_IDS.values(), *TEXT_ENV_IDS.values()])


#: ``--algo``'s choices: the keys of :data:`agents.algorithms.ALGORITHMS`, which imports this
#: module (so it cannot be imported here; a test holds the two equal).
ALGORITHM_NAMES = ("a2c", "dqn", "ppo")
#: How the entropy coefficient of an actor-critic agent moves during a phase
#: (:class:`agents.callbacks.LinearEntropySchedule`).
ENT_COEF_SCHEDULES = ("constant", "linear")
#: The hyperparameters each algorithm runs with unless ``--conf`` names another file.
HYPERPARAMS_FILE = Path(__file__).with_name("hyperparams.yml")


@dataclass
class TrainConfig:
    """A run of the alternating trainer. Defaults follow the thesis where it says something.

    RL phases use ``total_timesteps`` env steps each; supervised phases ``supervised_epochs``
    passes over the train split (capped at ``train_size`` samples per epoch when set).

    Each field is one flag of ``run_rl.py`` (:mod:`agents.cli`: its help is the field's).
    """

    algo: str = arg("ppo", "SB3 algorithm", choices=ALGORITHM_NAMES)
    env: str = arg("DynaLay-CIFAR10-v0", f"env id, one of {TRAINABLE_ENV_IDS}")
    seed: int = arg(0, "seed of the model and the agent")  # initialisation, path draws, agent
    data_seed: int = arg(
        0, "seed of the holdout (and --train-size subset) carved out of the training set"
    )
    device: str = arg("auto", "auto (GPU when there is one), cpu, cuda")
    num_envs: int = arg(64, "batched env slots", type=positive_int)
    total_timesteps: int = arg(50_000, "env steps per RL phase", type=positive_int)
    rounds: int = arg(3, "RL+supervised rounds", type=positive_int)
    pretrain_epochs: int = arg(
        20,
        "warm-up epochs on all paths (thesis: 20; 0: the rounds start from an untrained "
        "main model)",
        type=non_negative_int,
    )
    # thesis Sec. 4.0.5: the agent learns on the warmed-up model before round 1's supervised
    # phase; False: that phase follows an untrained agent, and each round is supervised, rl.
    agent_pretrain: bool = arg(
        True,
        "each round trains the main model first, so round 1 follows an untrained agent "
        "(default: the agent learns on the warmed-up model first; thesis Sec. 4.0.5)",
        flag="--no-agent-pretrain",
    )
    track_test: int = arg(  # Fig. 4.2's curves
        0,
        "after every supervised epoch, log the test accuracy and loss of the agent's paths "
        "on this many test images to TensorBoard (0: off)",
        type=non_negative_int,
    )
    recipe: str = arg(
        "dynalay", "main-model training recipe (main_model/train.py)", choices=sorted(RECIPES)
    )
    supervised_epochs: int = arg(
        1,
        "epochs per supervised phase (0: RL phases only, main model frozen)",
        type=non_negative_int,
    )
    exploration: float = arg(
        0.2, "share of random paths in supervised phases", type=non_negative_float
    )
    # The reward's settings (dynalay_env.mdp.MDPConfig, whose defaults are the thesis's); kept
    # flat here, as config.yaml has always written them; `mdp` gathers them.
    alpha: float = arg(MDPConfig.alpha, "reward per correct answer", type=non_negative_float)
    beta: float = arg(MDPConfig.beta, "compute penalty weight", type=non_negative_float)
    gamma_loss: float = arg(
        0.2,
        "gamma of the thesis's total loss L = CE - gamma * R (logged)",
        type=non_negative_float,
    )
    max_steps: int = arg(
        MDPConfig.max_steps, "decisions per episode (1 = one-shot)", type=positive_int
    )
    penalty: str = arg(
        MDPConfig.penalty,
        "what multiplies beta * cost in a loop's reward: the 'consecutive' count of the "
        "same choice (the thesis's equation) or the chosen 'layer' k (its text)",
        choices=PENALTIES,
    )
    shaping: str = arg(
        MDPConfig.shaping,
        "'nop': add the potential-based term alpha * (correct after - correct before) "
        "to each step (Ng et al. 1999: the optimal policy is unchanged); 'none': the thesis's",
        choices=SHAPINGS,
    )
    observe_changes: bool = arg(
        MDPConfig.observe_changes,
        "the observation also shows what the last loop changed (prediction changed, top "
        "probability change, total variation); for --max-steps > 1",
    )
    # Behaviour cloning when the agent is made: the policy's action head is fitted to the
    # confidence-threshold rule (NOP when the top probability >= bc_tau, else the holdout's
    # most accurate loop) on the holdout's observations (0 epochs: off, as before).
    bc_epochs: int = arg(
        0,
        "before the first RL phase, fit the policy to the confidence-threshold rule for "
        "this many epochs on the holdout's observations (0: off)",
        type=non_negative_int,
    )
    ent_coef_schedule: str = arg(
        "constant",
        "the entropy coefficient (ppo, a2c): 'constant' (SB3's), or 'linear': decayed from "
        "the run's ent_coef to 0 over each RL phase (explores early, exploits late)",
        choices=ENT_COEF_SCHEDULES,
    )
    bc_tau: float = arg(
        0.5,
        "the cloned threshold rule's tau: NOP when the top probability is >= tau",
        type=non_negative_float,
    )
    batch_size: int = arg(64, "main-model batch", type=positive_int)  # thesis
    # Adam peak, cosine decay (chosen on the holdout, docs/results.md)
    learning_rate: float = arg(1e-2, "main-model Adam learning rate", flag="--lr")
    widths: tuple[int, ...] = arg((64, 128, 256), "channels of the FPI blocks", type=positive_int)
    strides: tuple[int, ...] | None = arg(
        None, "stride of each block's injection conv (default: 1, then 2s)", type=positive_int
    )
    holdout_size: int | None = arg(  # the agent's split
        None,
        "training samples kept unseen for the agent (default: 5000 images, or the text "
        "dataset's own: 1000 WikiText-2 windows, 2500 IMDB reviews)",
        type=positive_int,
    )
    train_size: int | None = arg(None, "cap on train samples per epoch", type=positive_int)
    eval_size: int | None = arg(None, "test samples in the summary", type=positive_int)  # None: all
    data_dir: str | None = arg(None, "where to look for the dataset first")
    download: bool = arg(False, "let torchvision download the dataset")
    checkpoint: str | None = arg(None, "main-model checkpoint to start from (no pretraining)")
    logdir: str = arg("runs", "parent of the run directories")
    conf: str | None = arg(None, f"hyperparameter YAML (default: {HYPERPARAMS_FILE.name})")
    algo_kwargs: dict[str, Any] = arg(factory=dict, cli=False)

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
