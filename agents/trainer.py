"""The alternating trainer: pre-train the main model, then rounds of RL and supervised phases.

Phases, in order: ``pretrain``, then for each round r: ``round<r>/rl`` (the SB3 agent learns on
the batched env over the holdout split; the main model is frozen, BatchNorm in eval mode) and
``round<r>/supervised`` (the main model trains on the train split along the paths the current
agent picks, with a share ``exploration`` of uniformly random paths so no path is forgotten),
then ``final/rl``: the agent adapts to the main model the last supervised phase left, so the
agent that is evaluated and saved has acted on exactly the model saved beside it.

Run directory (layout and manifests: :mod:`agents.files`)::

    config.yaml            the full resolved configuration (and the algorithm's kwargs)
    checkpoints/<phase>/   main_model.pt, agent.zip, vecnormalize.json, replay_buffer.npz (DQN),
                           and manifest.json, written last, with their SHA-256 checksums
    progress.json          the phases completed so far (for people; the manifests decide)
    tb/                    TensorBoard events          log.txt   the run's log
    summary.json           the final test-split summary

Every phase starts from the previous phase's files, read back from disk, and from a seed of its
own, also in a run that was never interrupted: so ``resume`` (after Ctrl-C, a crash or SIGKILL)
re-runs the unfinished phase exactly as it would have run, and ends with the same weights.

A phase that diverges (a non-finite loss, weight or observation; :mod:`agents.health`) stops the
run with :class:`~main_model.divergence.TrainingDiverged`, naming the phase, the epoch or rollout
and the step and what to try, before it writes anything: the last verified phase stays intact.
A phase whose main model ends no better than chance on the holdout says so in the log, and the
summary lists it (``below_chance``).

Several processes (``torchrun --nproc_per_node=N run_rl.py ...``; :mod:`main_model.distributed`):
every rank runs the same phase loop in rank 0's run directory, which must be on a filesystem
all ranks see at the same path. The main model's phases (pre-training, supervised) train with
DDP, ``batch_size`` being the global batch shared by the ranks. An RL phase runs on rank 0
alone while the others wait at the barrier in :meth:`AlternatingTrainer._save_phase`; there
each rank takes the phase whose manifest rank 0 committed, and every phase starts by reading
its predecessor's files back from disk, so all ranks continue from rank 0's agent and model.
Only rank 0 writes: config.yaml, checkpoints, log.txt, progress.json, TensorBoard events and
summary.json (the others log warnings to stderr only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecNormalize
from torch.utils.tensorboard import SummaryWriter

import main_model.distributed as distributed
from agents.algorithms import ALGORITHMS, algo_hyperparams, load_agent
from agents.behaviour_cloning import clone_threshold_rule
from agents.callbacks import DynaLayMetricsCallback, LinearEntropySchedule
from agents.config import CONFIG_FILE, TrainConfig, check_run_config, write_run_config
from agents.evaluate import PolicyResult, first_decision_metrics, run_policy
from agents.files import (
    AGENT_FILE,
    MODEL_FILE,
    NORMALIZE_FILE,
    REPLAY_BUFFER_FILE,
    PhaseRecord,
    RunDirectory,
    refuse_pickles,
)
from agents.health import FiniteObservations, below_chance, check_finite_phase, divergence_advice
from agents.normalization import NormalizerState
from agents.replay_buffer import load_replay_buffer, write_replay_buffer
from agents.sb3_logging import configure_run_log, log, sb3_logger
from agents.vec_env import make_sb3_vec_env
from dynalay_env.build import sequential_core
from dynalay_env.data import load_splits
from dynalay_env.models import model_config_for
from dynalay_env.registry import dataset_of
from main_model import DynaLayConfig, DynaLayNet, DynaLaySeqConfig, load_main_model, save_main_model
from main_model.checkpoint import state_digest
from main_model.distributed import resolve_device
from main_model.divergence import TrainingDiverged
from main_model.io import atomic_write, write_json_atomic
from main_model.observation import first_observation
from main_model.progress import progress_bar
from main_model.train import EpochStats, fit, iterate_batches, new_main_model, pretrain_main_model


def phase_seed(seed: int, phase: str) -> int:
    """The seed a phase draws from: fixed by the run's seed and the phase's name alone, so a
    phase re-run after a crash draws exactly what it drew the first time."""
    digest = hashlib.sha256(f"{seed}:{phase}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class AlternatingTrainer:
    """Runs (or resumes) the phases of one training run in ``run_dir``.

    Raises :class:`~agents.config.RunConfigMismatch` when ``run_dir`` already holds a run made
    with other settings: its phases are never reused for, or mixed with, another config.
    """

    def __init__(self, config: TrainConfig, run_dir: Path) -> None:
        self.config = config
        # Under torchrun: join the process group (this rank's device, cuda:LOCAL_RANK on GPUs);
        # every rank then works in rank 0's run directory (a new run's name holds a time
        # stamp, which each rank would draw for itself).
        self.device = distributed.init_from_env(resolve_device(config.device))
        self.run_dir = Path(distributed.broadcast_object(str(run_dir)))
        self.files = RunDirectory(self.run_dir)
        self.dataset = dataset_of(config.env)
        self.phases = config.phases()
        self.algo_kwargs = {
            **algo_hyperparams(config.algo, config.env, config.conf),
            **config.algo_kwargs,
        }
        if config.ent_coef_schedule != "constant" and config.algo not in ("ppo", "a2c"):
            raise ValueError(
                f"--ent-coef-schedule {config.ent_coef_schedule} needs an actor-critic agent "
                f"with an entropy bonus (--algo ppo or a2c), not {config.algo}"
            )
        # rl-zoo3 convention: `normalize` in the hyperparameters wraps the env in VecNormalize.
        normalize = self.algo_kwargs.get("normalize", False)
        self.normalize: dict[str, Any] | None = (
            dict(normalize) if isinstance(normalize, dict) else ({} if normalize else None)
        )
        self._write_config()
        configure_run_log(self.run_dir, distributed.is_main_process())
        self.splits = self._load_data()
        self.model: DynaLayNet | None = None
        self.agent: BaseAlgorithm | None = None
        self.obs_normalizer: VecNormalize | None = None
        self.core = None
        self._sb3_logger: Logger | None = None
        self.completed: list[str] = []
        #: What a phase hands to the next beside its files (saved in its manifest):
        #: ``agent_model_digest``, the state_digest of the main model the agent last learned on
        #: (None before any RL phase), and ``last_rl_reward``, its mean episode reward.
        self.state: dict[str, Any] = {"agent_model_digest": None, "last_rl_reward": 0.0}
        self.phase_seed = config.seed  # the seed of the phase under way (phase_seed)

    # ----- setup ------------------------------------------------------------------------------
    def _write_config(self) -> None:
        """:meth:`_write_or_check_config`; then, under torchrun, every rank must see rank 0's."""
        self._write_or_check_config()
        distributed.barrier()
        if not (self.run_dir / CONFIG_FILE).is_file():
            raise RuntimeError(
                f"rank {distributed.rank()} does not see {self.run_dir / CONFIG_FILE}, which "
                "rank 0 wrote: with several nodes the run directory (--logdir) must be on a "
                "filesystem every node sees at the same path"
            )

    def _write_or_check_config(self) -> None:
        """Save the resolved config (rank 0), or check that the one already in ``run_dir`` is
        the same (every rank)."""
        resolved_config = dataclasses.replace(self.config, algo_kwargs=self.algo_kwargs)
        if check_run_config(self.run_dir, resolved_config) or not distributed.is_main_process():
            return
        write_run_config(self.run_dir, resolved_config, self.device)

    def _load_data(self):
        config = self.config
        # Under torchrun rank 0 reads (or downloads) first, the others then find it on disk.
        main = distributed.is_main_process()
        if not main:
            distributed.barrier()
        splits = load_splits(
            self.dataset,
            config.data_dir,
            config.holdout_size,
            config.data_seed,
            config.download,
            config.train_size,
        )
        if main:
            distributed.barrier()
        return {name: split.to(self.device) for name, split in splits.items()}

    def _make_env(self, stats: Path | None = None):
        """The SB3 env over the holdout; wrapped in VecNormalize when the hyperparameters ask.

        ``stats``: a saved ``vecnormalize.json`` whose statistics the wrapper continues from.
        """
        env = self._make_raw_env()
        self.core = env.venv.vector_env.unwrapped.core
        self.obs_normalizer = None
        if self.normalize is None:
            return env
        if stats is not None:
            self.obs_normalizer = NormalizerState.load(stats).wrap(env)
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
            mdp=config.mdp,
            device=str(self.device),
        )

    def _tensorboard_logger(self) -> Logger:
        """One SB3 logger per process (:func:`agents.sb3_logging.sb3_logger`): ``tb/`` on rank 0,
        nothing on the others."""
        if self._sb3_logger is None:
            main = distributed.is_main_process()
            self._sb3_logger = sb3_logger(self.run_dir / "tb" if main else None)
        return self._sb3_logger

    # ----- phases ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every phase not completed yet, then evaluate on the test split."""
        record = self._resume_point()
        start = 0 if record is None else self.phases.index(record.phase) + 1
        try:
            for phase in self.phases[start:]:
                self._load(record)
                log.info("phase %s", phase)
                started = time.time()
                self.phase_seed = phase_seed(self.config.seed, phase)
                set_random_seed(self.phase_seed)  # python, numpy, torch: whatever the phase draws
                if phase == "pretrain":
                    self._pretrain()
                elif phase.endswith("/rl"):
                    self._rl_phase()
                else:
                    self._supervised_phase(int(phase.split("/")[0][len("round") :]))
                self._check_holdout_accuracy(phase)
                record = self._save_phase(phase)
                log.info("phase %s done in %.1f s", phase, time.time() - started)
        except KeyboardInterrupt:
            log.info(
                "interrupted: phases %s are saved; continue with --resume %s",
                self.completed,
                self.run_dir,
            )
            raise
        except TrainingDiverged as error:
            error.phase = phase
            error.advice = divergence_advice(self.run_dir, self.config, record)
            log.error("stopped: %s", error, extra={"file_only": True})  # the caller prints it
            raise
        self._load(record)
        return self._summarise()

    def _resume_point(self) -> PhaseRecord | None:
        """The last phase whose manifest and files check out; says why later ones re-run.

        Under torchrun rank 0 decides and the others take that phase (checking its files), so
        no rank can see a phase that rank 0 finished after it decided.
        """
        if not distributed.is_main_process():
            phase = distributed.broadcast_object(None)
            if phase is None:
                return None
            self.completed = self.phases[: self.phases.index(phase) + 1]
            return self.files.verify(phase)
        record, problems = self.files.latest_complete(self.phases)
        distributed.broadcast_object(None if record is None else record.phase)
        origin = f"phase {record.phase}'s files" if record is not None else "the start"
        for problem in problems:
            log.warning("not trusted: %s; re-running from %s", problem, origin)
        if record is not None:
            self.completed = self.phases[: self.phases.index(record.phase) + 1]
            log.info("resuming %s after phase %s", self.run_dir, record.phase)
        return record

    def _load(self, record: PhaseRecord | None) -> None:
        """Everything the next phase starts from, read back from ``record``'s files.

        Read back even when the same objects are still in memory: an uninterrupted run and a
        resumed one then take one path (SB3's load re-seeds, VecNormalize and the replay buffer
        come from their plain files, the env starts afresh) and end with the same weights.
        Nothing is unpickled (:mod:`agents.files`): a phase folder from before that holds
        pickles is refused, with how to convert it.
        """
        self.model = self.agent = None
        self.obs_normalizer = self.core = None
        if record is None:
            return
        refuse_pickles(record.folder)
        self.state = dict(record.state)
        self.model, _ = load_main_model(record.path(MODEL_FILE), self.device)
        if not record.has(AGENT_FILE):
            return
        stats = record.path(NORMALIZE_FILE) if record.has(NORMALIZE_FILE) else None
        self.agent = load_agent(
            record.path(AGENT_FILE),
            self.config.algo,
            self.algo_kwargs,
            env=self._make_env(stats),
            device=self.device,
        )
        self.agent.set_logger(self._tensorboard_logger())
        # Only rank 0 runs RL phases: the others never need the (large) replay buffer.
        if record.has(REPLAY_BUFFER_FILE) and distributed.is_main_process():
            assert isinstance(self.agent, OffPolicyAlgorithm)
            load_replay_buffer(self.agent, record.path(REPLAY_BUFFER_FILE))

    def _model_config(self) -> DynaLayConfig | DynaLaySeqConfig:
        """The main model's config: the run's widths (and strides, images only) for its data."""
        return model_config_for(
            self.splits["train"], self.config.widths, strides=self.config.strides
        )

    def _pretrain(self) -> None:
        config = self.config
        if config.checkpoint is not None:
            self.model, _ = load_main_model(
                config.checkpoint,
                self.device,
                self._model_config(),
            )
            log.info("main model loaded from %s", config.checkpoint)
        elif config.pretrain_epochs == 0:  # no warm-up: the rounds start from the initialisation
            torch.manual_seed(config.seed)
            self.model = new_main_model(self._model_config(), self.splits["train"]).to(self.device)
            self.model.provenance = {
                **self.splits["train"].training_provenance(),  # the rounds train on these rows
                "recipe": config.recipe,
                "epochs": 0,
            }
            self.model.eval()
            log.info("no pre-training: the rounds start from an untrained main model")
        else:
            self.model = pretrain_main_model(
                self.splits["train"],
                epochs=config.pretrain_epochs,
                config=self._model_config(),
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                recipe=config.recipe,
                seed=config.seed,
                device=self.device,
                eval_split=self.splits["test"],
                progress=distributed.is_main_process(),  # torchrun: one progress bar
            )
        if not distributed.is_main_process():
            return
        writer = SummaryWriter(str(self.run_dir / "tb"))
        table = "\n".join(f"| {k} | {v} |" for k, v in self.config.to_dict().items())
        writer.add_text("hyperparameters", "| key | value |\n|---|---|\n" + table)
        writer.close()

    def _new_agent(self) -> BaseAlgorithm:
        """An untrained agent (the run's seed) on a fresh env over the holdout; with
        ``bc_epochs`` its action head is first fitted to the threshold rule."""
        kwargs = dict(self.algo_kwargs)
        kwargs.pop("normalize", None)
        policy = kwargs.pop("policy", "MlpPolicy")
        agent = ALGORITHMS[self.config.algo](
            policy, self._make_env(), seed=self.config.seed, device=self.device, **kwargs
        )
        agent.set_logger(self._tensorboard_logger())
        if self.config.bc_epochs > 0:  # a warm start, before its first phase
            self._behaviour_clone(agent)
        return agent

    def _rl_phase(self) -> None:
        if not distributed.is_main_process():
            return  # rank 0 learns alone; the others wait for its files in _save_phase
        if self.agent is None:
            self.agent = self._new_agent()
        self.agent._last_obs = None  # type: ignore[assignment]  # fresh episodes on a fresh env
        self.agent.set_random_seed(self.phase_seed)  # also its env's samples and its action space
        callbacks = [DynaLayMetricsCallback(self.core.n_actions, self.core.n_blocks)]
        callbacks.append(FiniteObservations())
        if self.config.ent_coef_schedule == "linear":
            callbacks.append(LinearEntropySchedule(self.algo_kwargs.get("ent_coef", 0.0)))
        self.agent.learn(
            self.config.total_timesteps,
            callback=callbacks,
            reset_num_timesteps=False,
            progress_bar=True,
        )
        rewards = [e["r"] for e in self.agent.ep_info_buffer] if self.agent.ep_info_buffer else []
        self.state["last_rl_reward"] = float(np.mean(rewards)) if rewards else 0.0
        self.state["agent_model_digest"] = state_digest(self.model)

    def _behaviour_clone(self, agent: BaseAlgorithm) -> None:
        """Fit a new agent's action head to the threshold rule on the holdout before its first
        phase (:func:`agents.behaviour_cloning.clone_threshold_rule`)."""
        config = self.config
        stats = None if self.obs_normalizer is None else self.obs_normalizer.obs_rms.update
        cloned = clone_threshold_rule(
            agent.policy, self.model, self.splits["holdout"], config.mdp, config.bc_tau,
            config.bc_epochs, seed=self.phase_seed, normalize=self.normalized, update_stats=stats,
        )  # fmt: skip
        self.state["bc_agreement"] = cloned["agreement"]
        log.info("behaviour cloning of the threshold rule: %s", cloned)

    def _agent_actions(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The agent's first decision on each image, with uniform exploration mixed in.

        The observation comes from an evaluation-mode straight pass, as in the env the agent
        learned on (and without a second running-statistics update from this batch).
        """
        self.model.eval()
        state = self.model.straight(images).state
        self.model.train()
        changes = self.config.observe_changes
        observations = first_observation(state, self.model.n_actions, changes).cpu().numpy()
        if not np.isfinite(observations).all():  # finite weights can still overflow
            raise TrainingDiverged(
                "the agent's observations of the batch are not finite: the main model's "
                "straight pass overflows (its weights grew too large)"
            )
        chosen, _ = self.agent.predict(self.normalized(observations), deterministic=True)
        actions = torch.as_tensor(chosen, device=images.device).long()
        explore = torch.rand(len(actions), device=images.device) < self.config.exploration
        uniform = torch.randint(0, self.model.n_actions, (len(actions),), device=images.device)
        return torch.where(explore, uniform, actions)

    def _supervised_phase(self, round_index: int) -> None:
        config = self.config
        if self.agent is None:  # no agent pre-training: follow an untrained agent's choices
            self.agent = self._new_agent()
        self.model.requires_grad_(True)
        # torchrun: DDP over the ranks (built after requires_grad_, DDP registers only what
        # trains), each taking its share of every global batch; the agent, read back from
        # rank 0's files on every rank, chooses for the whole global batch on each rank
        # (train_epoch), so exploration draws what one process would draw.
        distributed.check_batches(len(self.splits["train"]), config.batch_size)
        total = -(-len(self.splits["train"]) // config.batch_size)
        generator = torch.Generator().manual_seed(config.seed * 1000 + round_index)
        logger = self.agent.logger

        def log_epoch(epoch: int, stats: EpochStats) -> None:
            logger.record("supervised/loss", stats.loss)
            logger.record("supervised/accuracy", stats.accuracy)
            # The thesis's total loss L = CE - gamma * R; R (the agent's mean episode reward)
            # does not depend on the main model's weights, so it shifts L but adds no gradient.
            logger.record(
                "supervised/total_loss",
                stats.loss - config.gamma_loss * self.state["last_rl_reward"],
            )
            for action, value in stats.accuracy_per_action.items():
                logger.record(f"supervised/accuracy_path{action}", value)
                logger.record(f"supervised/loss_path{action}", stats.loss_per_action[action])
                logger.record(f"supervised/samples_path{action}", stats.samples_per_action[action])
            logger.dump(step=self.agent.num_timesteps)
            if config.track_test:
                test = self._test_metrics(config.track_test)
                logger.record("test/accuracy", test["accuracy"])
                logger.record("test/loss", test["loss"])
                logger.dump(step=(round_index - 1) * config.supervised_epochs + epoch)

        with progress_bar(
            total=total * config.supervised_epochs,
            desc=f"supervised round {round_index} ({config.supervised_epochs} epoch(s))",
            disable=not distributed.is_main_process(),
        ) as bar:
            # The pre-training's cosine schedule ended near zero: fine-tune with Adam from a
            # tenth of its peak rate, decayed over the phase, rather than jolting the model at
            # the peak rate; the agent chooses the paths, the run's recipe sets the loss.
            fit(
                self.model,
                lambda epoch: iterate_batches(self.splits["train"], config.batch_size, generator),
                epochs=config.supervised_epochs,
                batches_per_epoch=total,
                recipe=config.recipe,
                learning_rate=config.learning_rate / 10,
                optimizer="adam",
                choose_actions=self._agent_actions,
                solver="fpi",
                on_batch=lambda _: bar.update(1),
                on_epoch=log_epoch,
            )
        self.model.eval().requires_grad_(False)

    def _check_holdout_accuracy(self, phase: str) -> None:
        """After a phase that trained the main model: :func:`agents.health.below_chance`,
        warned in the log and kept in the state (for the summary) when it is."""
        config = self.config
        trained = (
            config.pretrain_epochs > 0 or config.checkpoint is not None
            if phase == "pretrain"
            else not phase.endswith("/rl") and config.supervised_epochs > 0
        )
        if trained and distributed.is_main_process():
            note = below_chance(self.model, self.splits["holdout"], phase, config.learning_rate)
            if note is not None:
                self.state["below_chance"] = [*self.state.get("below_chance", []), note]

    def _test_metrics(self, size: int) -> dict[str, float]:
        """The agent's first decision on the first ``size`` test images
        (:func:`agents.evaluate.first_decision_metrics`; the test curves of the thesis's
        Fig. 4.2, logged, never used to choose)."""

        def policy(observations: np.ndarray) -> np.ndarray:
            return self.agent.predict(self.normalized(observations), deterministic=True)[0]

        metrics = first_decision_metrics(
            self.model, policy, self.splits["test"], size, changes=self.config.observe_changes
        )
        self.model.train()
        return metrics

    def _save_phase(self, phase: str) -> PhaseRecord:
        """Write the phase's files into its own folder, then its manifest (the commit).

        Under torchrun rank 0 writes; the others wait for it (all through an RL phase), then
        check the phase's files and continue from them like rank 0 (the next phase reads them).
        """
        if not distributed.is_main_process():
            distributed.barrier()
            record = self.files.verify(phase)
            self.completed = self.phases[: self.phases.index(phase) + 1]
            return record
        record = self._write_phase(phase)
        distributed.barrier()
        return record

    def _write_phase(self, phase: str) -> PhaseRecord:
        """Rank 0's part of :meth:`_save_phase`."""
        check_finite_phase(self.model, self.agent, self.obs_normalizer)  # before any write
        folder = self.files.begin_phase(phase)
        files = [MODEL_FILE]
        save_main_model(self.model, folder / MODEL_FILE, metadata={"phase": phase})
        if self.agent is not None:
            files.append(AGENT_FILE)
            atomic_write(folder / AGENT_FILE, self.agent.save)
            if isinstance(self.agent, OffPolicyAlgorithm):
                files.append(REPLAY_BUFFER_FILE)
                buffer = self.agent.replay_buffer
                atomic_write(folder / REPLAY_BUFFER_FILE, lambda t: write_replay_buffer(buffer, t))
        if self.obs_normalizer is not None:
            files.append(NORMALIZE_FILE)
            NormalizerState.of(self.obs_normalizer).save(folder / NORMALIZE_FILE)
        record = self.files.commit_phase(phase, files, self.state, self.phases)
        self.completed = self.phases[: self.phases.index(phase) + 1]
        write_json_atomic(
            {"completed": self.completed, "agent_model_digest": self.state["agent_model_digest"]},
            self.run_dir / "progress.json",
        )
        return record

    # ----- summary ----------------------------------------------------------------------------
    def _summarise(self) -> dict[str, Any]:
        """The test-split summary, written to summary.json; under torchrun rank 0 evaluates
        and writes, and every rank returns its summary."""
        summary = self._test_summary() if distributed.is_main_process() else None
        return distributed.broadcast_object(summary)

    def _test_summary(self) -> dict[str, Any]:
        core, episodes = sequential_core(
            self.model,
            self.splits["test"],
            mdp=self.config.mdp,
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
            "agent_model_digest": self.state["agent_model_digest"],
            # Phases whose main model ended no better than chance on the holdout.
            "below_chance": self.state.get("below_chance", []),
            **result.to_json(),
        }
        write_json_atomic(summary, self.run_dir / "summary.json")
        return summary
