"""The shared pieces of every experiment, each trained once under the results directory, and the
helpers that turn an experiment's numbers into its files.

Per seed one main model pre-trained with the settled recipe (``models/seed<s>.pt``: Fig. 4.4's
Model 3, the start of the alternating runs, the frozen model of the agents), alternating runs
per arm (``alternating/<arm>/seed<s>``) and agents on the frozen model
(``agents/seed<s>/<setting>``). Every piece is a file or an
:class:`~agents.trainer.AlternatingTrainer` run directory, written atomically: a rerun skips what
finished (a run directory counts as finished once it has its ``summary.json``) and resumes what
did not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from agents.report import save_figure
from agents.trainer import AlternatingTrainer
from dynalay_env.data import get_spec
from dynalay_env.models import config_for
from dynalay_env.registry import dataset_of
from main_model import save_main_model
from main_model.distributed import resolve_device
from main_model.io import write_json_atomic
from main_model.recipes import first_blocks_recipe, get_recipe
from main_model.train import train_main_model

from ..cli import refuse_other_settings
from ..common import experiment_splits, json_scalar, say, train_config_from, write_text
from .config import CONFIG_FILE, ReproduceConfig

#: The reproduction's settings its runs train with as they are (TrainConfig fields of the same
#: name; its ``max_steps`` and ``betas`` are lists of runs', not one run's).
TRAINER_FIELDS = (
    "env", "data_seed", "num_envs", "total_timesteps", "rounds", "supervised_epochs", "alpha",
    "beta", "batch_size", "learning_rate", "widths", "strides", "holdout_size", "train_size",
    "eval_size", "data_dir", "device", "track_test",
)  # fmt: skip


def _say(message: str) -> None:
    say("reproduce", message)


class Reproduction:
    """The shared pieces of every experiment, each trained once under ``config.out``."""

    #: Alternating-run arms (:meth:`alternating_run`).
    ARMS = ("pretrained", "no-pretrain", "no-pretrain-equal-budget", "no-agent-pretrain")

    def __init__(self, config: ReproduceConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.dataset = dataset_of(config.env)
        self._splits: dict[str, Any] | None = None
        refuse_other_settings(
            self.out / CONFIG_FILE,
            config.to_dict(),
            "reproduction",
            "rerun with those settings to resume, or choose another --out",
            ignore=("out",),
        )

    @property
    def splits(self) -> dict[str, Any]:
        if self._splits is None:
            self._splits = experiment_splits(self.config, self.device)
        return self._splits

    def model_config(self):
        config = self.config
        return config_for(get_spec(self.dataset), config.widths, strides=config.strides)

    def trained_model(self, path: Path, seed: int, fpi_blocks: int) -> Path:
        """A main model with FPI in its first ``fpi_blocks`` blocks, pre-trained for ``epochs``
        on the train split (the settled ``dynalay`` recipe when every block has FPI)."""
        if path.is_file():
            return path
        every_block = fpi_blocks == len(self.config.widths)
        recipe = get_recipe("dynalay") if every_block else first_blocks_recipe(fpi_blocks)
        _say(f"training {path} ({recipe.name}, seed {seed}, {self.config.epochs} epochs)")
        model, history = train_main_model(
            self.splits["train"],
            epochs=self.config.epochs,
            config=self.model_config(),
            batch_size=self.config.batch_size,
            learning_rate=self.config.learning_rate,
            recipe=recipe,
            seed=seed,
            device=self.device,
        )
        metadata = {"seed": seed, "fpi_blocks": fpi_blocks, "epoch_seconds": history[-1].seconds}
        save_main_model(model, path, metadata=metadata)
        return path

    def pretrained_path(self, seed: int) -> Path:
        """Where :meth:`pretrained_model` keeps the seed's model (trained or not)."""
        return self.out / "models" / f"seed{seed}.pt"

    def pretrained_model(self, seed: int) -> Path:
        """``models/seed<s>.pt``: every block FPI, the settled recipe (Fig. 4.4's Model 3)."""
        return self.trained_model(self.pretrained_path(seed), seed, len(self.config.widths))

    def train_config(self, seed: int, **changes: Any) -> TrainConfig:
        """A PPO run of the seed with the reproduction's :data:`TRAINER_FIELDS`, and ``changes``."""
        return train_config_from(self.config, TRAINER_FIELDS, algo="ppo", seed=seed, **changes)

    def _run(self, run_dir: Path, config: TrainConfig) -> dict[str, Any]:
        """An alternating-trainer run: its summary, trained (or resumed) when not finished."""
        summary = run_dir / "summary.json"
        if summary.is_file():
            return json.loads(summary.read_text())
        _say(f"training {run_dir}")
        return AlternatingTrainer(config, run_dir).run()

    def warmup_epochs(self, arm: str) -> int:
        """Epochs the arm's main model trained before its rounds (the shared pre-training)."""
        return 0 if arm.startswith("no-pretrain") else self.config.epochs

    def alternating_config(self, arm: str, seed: int) -> tuple[Path, TrainConfig]:
        """The run directory and config of :meth:`alternating_run` (nothing trained)."""
        config = self.config
        if arm not in self.ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose one of {self.ARMS}")
        if arm == "no-pretrain":
            changes: dict[str, Any] = {"pretrain_epochs": 0}
        elif arm == "no-pretrain-equal-budget":
            extra_rounds = -(-config.epochs // config.supervised_epochs)
            changes = {"pretrain_epochs": 0, "rounds": config.rounds + extra_rounds}
        else:
            changes = {"checkpoint": str(self.pretrained_path(seed))}
            if arm == "no-agent-pretrain":
                changes["agent_pretrain"] = False
        run_dir = self.out / "alternating" / arm / f"seed{seed}"
        return run_dir, self.train_config(seed, **changes)

    def alternating_run(self, arm: str, seed: int) -> tuple[Path, dict[str, Any]]:
        """``alternating/<arm>/seed<s>``: the thesis's alternating training, one of :data:`ARMS`:
        from the seed's pre-trained model (``pretrained``), from its initialisation with the
        same rounds (``no-pretrain``, the thesis's comparison) or with as many more rounds as
        the pre-training had epochs (``no-pretrain-equal-budget``), or from the pre-trained
        model with each round's supervised phase first (``no-agent-pretrain``)."""
        run_dir, config = self.alternating_config(arm, seed)
        if config.checkpoint is not None:
            self.pretrained_model(seed)  # trained first when missing
        return run_dir, self._run(run_dir, config)

    def frozen_agent_config(
        self, seed: int, beta: float, max_steps: int = 1, penalty: str = "consecutive"
    ) -> tuple[Path, TrainConfig]:
        """The run directory and config of :meth:`frozen_agent` (nothing trained)."""
        name = f"beta{beta:g}_steps{max_steps}_{penalty}"
        config = self.train_config(
            seed,
            checkpoint=str(self.pretrained_path(seed)),
            beta=beta,
            max_steps=max_steps,
            penalty=penalty,
            rounds=1,
            supervised_epochs=0,
            track_test=0,
        )
        return self.out / "agents" / f"seed{seed}" / name, config

    def frozen_agent(
        self, seed: int, beta: float, max_steps: int = 1, penalty: str = "consecutive"
    ) -> dict[str, Any]:
        """An agent trained on the seed's frozen pre-trained model; its test summary."""
        self.pretrained_model(seed)  # trained first when missing
        return self._run(*self.frozen_agent_config(seed, beta, max_steps, penalty))


# ----- from numbers to files ----------------------------------------------------------------------
def verdict(held: int, total: int) -> str:
    """``reproduced`` when all ``total`` parts of a claim hold, ``partly reproduced`` when some
    do, ``not reproduced`` when none does."""
    if held == total:
        return "reproduced"
    return "partly reproduced" if held else "not reproduced"


def verdict_of(claims: dict[str, bool]) -> str:
    """The :func:`verdict` on an experiment's claims (each part True when it holds)."""
    return verdict(sum(bool(held) for held in claims.values()), len(claims))


def pm(stats: dict[str, float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of a :func:`~agents.experiments.common.mean_std`, scaled."""
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"


def yes(held: bool) -> str:
    return "yes" if held else "no"


def finish(
    rep: Reproduction, name: str, payload: dict[str, Any], markdown: list[str], fig
) -> dict[str, Any]:
    """Write ``out/<name>/``: ``results.json``, ``<name>.png`` and ``<name>.md``."""
    folder = rep.out / name
    folder.mkdir(parents=True, exist_ok=True)
    payload = json.loads(json.dumps(payload, default=json_scalar))
    write_json_atomic(payload, folder / "results.json")
    save_figure(fig, folder / f"{name}.png")
    write_text(folder / f"{name}.md", "\n".join(markdown) + "\n")
    _say(f"{name}: wrote {folder}/ ({name}.md, {name}.png, results.json)")
    return payload
