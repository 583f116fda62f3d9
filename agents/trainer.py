"""The alternating trainer: pre-train the main model, then rounds of RL and supervised phases.

Phases, in order: ``pretrain``, then for each round r: ``round<r>/rl`` (the SB3 agent learns on
the batched env over the holdout split; the main model is frozen, BatchNorm in eval mode) and
``round<r>/supervised`` (the main model trains on the train split along the paths the current
agent picks, with a share ``exploration`` of uniformly random paths so no path is forgotten),
then ``final/rl``: the agent adapts to the main model the last supervised phase left, so the
agent that is evaluated and saved has acted on exactly the model saved beside it.

Run directory::

    config.yaml            the full resolved configuration (and the algorithm's kwargs)
    progress.json          the phases completed so far (written atomically after each phase)
    checkpoints/main_model.pt, checkpoints/agent.zip   after every phase (atomic)
    tb/                    TensorBoard events          log.txt   the run's log
    summary.json           the final test-split summary

``resume`` continues after the last completed phase; Ctrl-C keeps what finished.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecNormalize
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from agents.callbacks import DynaLayMetricsCallback
from agents.config import TrainConfig, algo_hyperparams
from agents.evaluate import PolicyResult, run_policy, sequential_core
from agents.files import atomic_write, write_json_atomic
from agents.vec_env import make_sb3_vec_env
from dynalay_env import ENV_IDS
from dynalay_env.core import first_observation
from dynalay_env.data import get_spec, load_splits
from dynalay_env.models import config_for, iterate_batches, pretrain_main_model, resolve_device
from main_model import DynaLayNet, load_main_model, save_main_model
from main_model.checkpoint import state_digest
from main_model.train import get_recipe, train_epoch

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
NORMALIZE_FILE = "vecnormalize.pkl"
log = logging.getLogger("dynalay")


def dataset_of(env_id: str) -> str:
    for dataset, known_id in ENV_IDS.items():
        if known_id == env_id:
            return dataset
    raise ValueError(f"unknown env id {env_id!r}; choose one of {sorted(ENV_IDS.values())}")


class AlternatingTrainer:
    """Runs (or resumes) the phases of one training run in ``run_dir``."""

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(config.device)
        self.dataset = dataset_of(config.env)
        kinds = ("rl", "supervised") if config.supervised_epochs > 0 else ("rl",)
        self.phases = ["pretrain"] + [
            f"round{r}/{kind}" for r in range(1, config.rounds + 1) for kind in kinds
        ]
        if config.supervised_epochs > 0:
            self.phases.append("final/rl")
        self.algo_kwargs = {
            **algo_hyperparams(config.algo, config.env, config.conf),
            **config.algo_kwargs,
        }
        # rl-zoo3 convention: `normalize` in the hyperparameters wraps the env in VecNormalize.
        normalize = self.algo_kwargs.get("normalize", False)
        self.normalize: dict[str, Any] | None = (
            dict(normalize) if isinstance(normalize, dict) else ({} if normalize else None)
        )
        self.obs_normalizer: VecNormalize | None = None
        self.core = None
        self.progress_file = self.run_dir / "progress.json"
        progress = (
            json.loads(self.progress_file.read_text()) if self.progress_file.is_file() else {}
        )
        self.completed: list[str] = progress.get("completed", [])
        #: state_digest of the main model the agent last learned on (None before any RL phase).
        self.agent_model_digest: str | None = progress.get("agent_model_digest")
        self._setup_logging()
        self._write_config()
        self.splits = self._load_data()
        self.model: DynaLayNet | None = None
        self.agent: BaseAlgorithm | None = None
        self.last_rl_reward = 0.0

    # ----- setup ------------------------------------------------------------------------------
    def _setup_logging(self) -> None:
        handler = logging.FileHandler(self.run_dir / "log.txt")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.handlers = [handler, logging.StreamHandler(sys.stderr)]
        log.setLevel(logging.INFO)

    def _write_config(self) -> None:
        resolved = {**self.config.to_dict(), "algo_kwargs": self.algo_kwargs}
        resolved["resolved_device"] = str(self.device)
        text = yaml.safe_dump(resolved, sort_keys=False)
        atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))

    def _load_data(self):
        config = self.config
        splits = load_splits(
            self.dataset,
            config.data_dir,
            config.holdout_size,
            config.data_seed,
            config.download,
            config.train_size,
        )
        return {name: split.to(self.device) for name, split in splits.items()}

    def _make_env(self):
        """The SB3 env over the holdout; wrapped in VecNormalize when the hyperparameters ask.

        Normalisation statistics are restored from the run's checkpoint when there is one.
        """
        env = self._make_raw_env()
        self.core = env.venv.vector_env.unwrapped.core
        if self.normalize is None:
            return env
        stats = self.checkpoints / NORMALIZE_FILE
        if stats.is_file():
            self.obs_normalizer = VecNormalize.load(str(stats), env)
        else:
            self.obs_normalizer = VecNormalize(env, **self.normalize)
        return self.obs_normalizer

    def normalized(self, observations: np.ndarray) -> np.ndarray:
        """Observations as the agent sees them (normalised when the env is)."""
        if self.obs_normalizer is None:
            return observations
        return self.obs_normalizer.normalize_obs(observations)

    def _make_raw_env(self):
        config = self.config
        return make_sb3_vec_env(
            config.env,
            config.num_envs,
            model=self.model,
            splits=self.splits,
            split="holdout",
            alpha=config.alpha,
            beta=config.beta,
            max_steps=config.max_steps,
            penalty=config.penalty,
            device=str(self.device),
        )

    def _tensorboard_logger(self):
        return configure(str(self.run_dir / "tb"), ["tensorboard", "log", "csv"])

    # ----- phases ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every phase not completed yet, then evaluate on the test split."""
        self._restore()
        try:
            for phase in self.phases:
                if phase in self.completed:
                    continue
                log.info("phase %s", phase)
                started = time.time()
                if phase == "pretrain":
                    self._pretrain()
                elif phase.endswith("/rl"):
                    self._rl_phase()
                else:
                    self._supervised_phase(int(phase.split("/")[0][len("round") :]))
                self._save_phase(phase)
                log.info("phase %s done in %.1f s", phase, time.time() - started)
        except KeyboardInterrupt:
            log.info(
                "interrupted: phases %s are saved; continue with --resume %s",
                self.completed,
                self.run_dir,
            )
            raise
        return self._summarise()

    def _restore(self) -> None:
        model_file = self.checkpoints / "main_model.pt"
        if "pretrain" in self.completed:
            self.model, _ = load_main_model(model_file, self.device)
            log.info("resuming %s after phase %s", self.run_dir, self.completed[-1])
        agent_file = self.checkpoints / "agent.zip"
        if agent_file.is_file() and any(p.endswith("/rl") for p in self.completed):
            self.agent = ALGORITHMS[self.config.algo].load(
                agent_file, env=self._make_env(), device=self.device
            )
            self.agent.set_logger(self._tensorboard_logger())

    def _pretrain(self) -> None:
        config = self.config
        if config.checkpoint is not None:
            self.model, _ = load_main_model(
                config.checkpoint, self.device, config_for(get_spec(self.dataset), config.widths)
            )
            log.info("main model loaded from %s", config.checkpoint)
        else:
            self.model = pretrain_main_model(
                self.splits["train"],
                epochs=config.pretrain_epochs,
                config=config_for(get_spec(self.dataset), config.widths),
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                recipe=config.recipe,
                seed=config.seed,
                device=self.device,
                eval_split=self.splits["test"],
            )
        writer = SummaryWriter(str(self.run_dir / "tb"))
        table = "\n".join(f"| {k} | {v} |" for k, v in self.config.to_dict().items())
        writer.add_text("hyperparameters", "| key | value |\n|---|---|\n" + table)
        writer.close()

    def _rl_phase(self) -> None:
        if self.agent is None:
            kwargs = dict(self.algo_kwargs)
            kwargs.pop("normalize", None)
            policy = kwargs.pop("policy", "MlpPolicy")
            self.agent = ALGORITHMS[self.config.algo](
                policy, self._make_env(), seed=self.config.seed, device=self.device, **kwargs
            )
            self.agent.set_logger(self._tensorboard_logger())
        else:
            self.agent._last_obs = None  # type: ignore[assignment]  # fresh episodes: the model changed
        callback = DynaLayMetricsCallback(self.core.n_actions, self.core.n_blocks)
        self.agent.learn(
            self.config.total_timesteps,
            callback=callback,
            reset_num_timesteps=False,
            progress_bar=True,
        )
        rewards = [e["r"] for e in self.agent.ep_info_buffer] if self.agent.ep_info_buffer else []
        self.last_rl_reward = float(np.mean(rewards)) if rewards else 0.0
        self.agent_model_digest = state_digest(self.model)

    def _agent_actions(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The agent's first decision on each image, with uniform exploration mixed in.

        The observation comes from an evaluation-mode straight pass, as in the env the agent
        learned on (and without a second running-statistics update from this batch).
        """
        self.model.eval()
        state = self.model.straight(images).state
        self.model.train()
        observations = first_observation(state, self.model.n_actions).cpu().numpy()
        chosen, _ = self.agent.predict(self.normalized(observations), deterministic=True)
        actions = torch.as_tensor(chosen, device=images.device).long()
        explore = torch.rand(len(actions), device=images.device) < self.config.exploration
        uniform = torch.randint(0, self.model.n_actions, (len(actions),), device=images.device)
        return torch.where(explore, uniform, actions)

    def _supervised_phase(self, round_index: int) -> None:
        config = self.config
        self.model.requires_grad_(True)
        # The pre-training's cosine schedule ended near zero: fine-tune from a tenth of its
        # peak rate, decayed over the phase, rather than jolting the model at the peak rate.
        optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate / 10)
        total = -(-len(self.splits["train"]) // config.batch_size)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, total * config.supervised_epochs
        )
        generator = torch.Generator().manual_seed(config.seed * 1000 + round_index)
        logger = self.agent.logger
        for epoch in range(config.supervised_epochs):
            batches = iterate_batches(self.splits["train"], config.batch_size, generator)
            with tqdm(total=total, desc=f"supervised round {round_index} epoch {epoch + 1}") as bar:
                stats = train_epoch(
                    self.model,
                    optimizer,
                    batches,
                    self._agent_actions,
                    lambda _: bar.update(1),
                    train_straight=get_recipe(config.recipe).train_straight,
                    scheduler=scheduler,
                )
            logger.record("supervised/loss", stats.loss)
            logger.record("supervised/accuracy", stats.accuracy)
            # The thesis's total loss L = CE - gamma * R; R (the agent's mean episode reward)
            # does not depend on the main model's weights, so it shifts L but adds no gradient.
            logger.record(
                "supervised/total_loss", stats.loss - config.gamma_loss * self.last_rl_reward
            )
            for action, value in stats.accuracy_per_action.items():
                logger.record(f"supervised/accuracy_path{action}", value)
                logger.record(f"supervised/loss_path{action}", stats.loss_per_action[action])
                logger.record(f"supervised/samples_path{action}", stats.samples_per_action[action])
            logger.dump(step=self.agent.num_timesteps)
        self.model.eval().requires_grad_(False)

    def _save_phase(self, phase: str) -> None:
        save_main_model(self.model, self.checkpoints / "main_model.pt", metadata={"phase": phase})
        if self.agent is not None:
            atomic_write(self.checkpoints / "agent.zip", self.agent.save)
        if self.obs_normalizer is not None:
            atomic_write(self.checkpoints / NORMALIZE_FILE, self.obs_normalizer.save)
        self.completed.append(phase)
        write_json_atomic(
            {"completed": self.completed, "agent_model_digest": self.agent_model_digest},
            self.progress_file,
        )

    # ----- summary ----------------------------------------------------------------------------
    def _summarise(self) -> dict[str, Any]:
        core, episodes = sequential_core(
            self.model,
            self.splits["test"],
            alpha=self.config.alpha,
            beta=self.config.beta,
            max_steps=self.config.max_steps,
            penalty=self.config.penalty,
            device=self.device,
            episodes=self.config.eval_size,
        )

        def policy(observations: np.ndarray) -> np.ndarray:
            return self.agent.predict(self.normalized(observations), deterministic=True)[0]

        result: PolicyResult = run_policy(core, policy, episodes, "agent")
        summary = {
            "run_dir": str(self.run_dir),
            "phases": self.completed,
            # Equal digests: the evaluated agent learned on exactly the evaluated main model.
            "main_model_digest": state_digest(self.model),
            "agent_model_digest": self.agent_model_digest,
            **result.to_json(),
        }
        write_json_atomic(summary, self.run_dir / "summary.json")
        return summary
