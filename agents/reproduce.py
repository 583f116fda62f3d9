"""Reproduce the thesis's Chapter 4, one command per table or figure, each with a verdict.

    python run_rl.py reproduce all [--seeds 0 1 2] [--quick] [--out runs/reproduction]
    python run_rl.py reproduce fig4.4 table4.1 --table-dir docs/results/tradeoff

Experiments (:data:`EXPERIMENTS`), each writing ``out/<name>/`` (``results.json`` with the raw
numbers, ``<name>.png``, ``<name>.md`` with the claim, the measurement and a verdict):

- ``table4.1``: accuracy and backward-pass time of DynaLay, the plain 3-layer CNN and the DEQ
  with Anderson, read from a ``run_rl.py table`` directory (the separately trained baselines),
  which is trained first when it holds no table yet.
- ``fig4.1``: the agent's action frequencies over training, from the TensorBoard events of the
  alternating runs (one per seed).
- ``fig4.2``: pre-training on vs off: test accuracy and loss of the agent's paths after every
  supervised epoch of the alternating rounds, per seed.
- ``fig4.3``: (a) mean episode reward over training per seed; (b) action frequencies and test
  accuracy of agents trained on the frozen pre-trained model against beta.
- ``fig4.4``: models with FPI in the first 0..3 blocks (the others plain conv layers), trained
  identically; test loss and accuracy of each model's all-FPI path over test batches of 100.
- ``sec4.0.5``: the agent learns on the pre-trained model before the first supervised phase
  (agent pre-training) vs a first supervised phase that follows an untrained agent.
- ``introspection``: ``max_steps`` 1, 2, 3 under both readings of the reward's last factor
  (``consecutive`` count, ``layer`` index) at one beta, on the frozen pre-trained model.

Everything is built from a few shared pieces, each trained once and reused: per seed one main
model pre-trained with the settled recipe (``models/seed<s>.pt``: Fig. 4.4's Model 3, the start
of the alternating runs, the frozen model of the agents), alternating runs per arm
(``alternating/<arm>/seed<s>``) and agents on the frozen model (``agents/seed<s>/<setting>``).
Every piece is a file or an :class:`~agents.trainer.AlternatingTrainer` run directory, written
atomically: a rerun skips what finished (a run directory counts as finished once it has its
``summary.json``) and resumes what did not. The settings of a results directory are saved in
``reproduce_config.json``; a rerun with other settings is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import RunConfigMismatch, TrainConfig
from agents.files import atomic_write, write_json_atomic
from agents.report import plt, save_figure, scalars_from_events
from agents.tradeoff import TableConfig, TableConfigMismatch, experiment_splits, run_table
from agents.trainer import AlternatingTrainer, dataset_of
from dynalay_env import ENV_IDS, DataNotFoundError
from dynalay_env.data import DEFAULT_IMAGE_HOLDOUT, SplitOverlapError, get_spec
from dynalay_env.models import config_for, iterate_batches, resolve_device, train_main_model
from main_model import load_main_model, save_main_model
from main_model.train import first_blocks_recipe, get_recipe, path_name, path_statistics

CONFIG_FILE = "reproduce_config.json"


class ReproductionError(ValueError):
    """A reproduction that cannot run as asked (other settings in its directory, a table
    without the rows an experiment reads); the message says what to do."""


@dataclass(frozen=True)
class ReproduceConfig:
    """Budget and settings shared by every experiment (the defaults: ``docs/reproduction.md``).

    The main model has the shipped model's shape (widths 16/32/64, strides 2/2/2) and the
    settled ``dynalay`` recipe; ``epochs`` is its pre-training (the thesis's warm-up).
    """

    env: str = "DynaLay-FashionMNIST-v0"
    seeds: tuple[int, ...] = (0, 1, 2)
    widths: tuple[int, ...] = (16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    train_size: int | None = 10000
    epochs: int = 3  # main-model pre-training epochs (and Fig. 4.4's training)
    rounds: int = 2  # alternating rounds (RL then supervised)
    supervised_epochs: int = 1
    total_timesteps: int = 10000  # env steps per RL phase and per agent on the frozen model
    num_envs: int = 64
    alpha: float = 0.5  # thesis
    beta: float = 0.3  # thesis; the alternating runs' beta
    betas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)  # Fig. 4.3b
    introspection_beta: float = 0.1
    max_steps: tuple[int, ...] = (1, 2, 3)
    track_test: int = 2000  # test images behind Fig. 4.2's per-epoch curves
    batch_size: int = 64  # thesis
    learning_rate: float = 1e-2
    holdout_size: int = DEFAULT_IMAGE_HOLDOUT
    data_seed: int = 0
    eval_size: int | None = None  # test images of every final number (None: all 10,000)
    data_dir: str | None = None
    device: str = "auto"
    table_dir: str | None = None  # Table 4.1's `run_rl.py table` directory (default: out/...)
    out: str = "runs/reproduction"

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


def _say(message: str) -> None:
    print(f"reproduce: {message}", file=sys.stderr, flush=True)


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


class Reproduction:
    """The shared pieces of every experiment, each trained once under ``config.out``."""

    def __init__(self, config: ReproduceConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.device = resolve_device(config.device)
        self.dataset = dataset_of(config.env)
        self._splits: dict[str, Any] | None = None
        self._check_settings()

    def _check_settings(self) -> None:
        """Save the settings, or refuse a results directory made with other ones."""
        path = self.out / CONFIG_FILE
        mine = self.config.to_dict()
        if path.is_file():
            saved = json.loads(path.read_text())
            changed = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            changed.pop("out", None)
            if changed:
                listed = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in changed.items())
                raise ReproductionError(
                    f"{self.out} holds a reproduction made with other settings ({listed}); "
                    "rerun with those settings to resume, or choose another --out"
                )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(mine, path)

    # ----- data and the shared pieces ---------------------------------------------------------
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

    def pretrained_model(self, seed: int) -> Path:
        """``models/seed<s>.pt``: every block FPI, the settled recipe (Fig. 4.4's Model 3)."""
        return self.trained_model(
            self.out / "models" / f"seed{seed}.pt", seed, len(self.config.widths)
        )

    def train_config(self, seed: int, **changes: Any) -> TrainConfig:
        config = self.config
        base = TrainConfig(
            algo="ppo",
            env=config.env,
            seed=seed,
            data_seed=config.data_seed,
            num_envs=config.num_envs,
            total_timesteps=config.total_timesteps,
            rounds=config.rounds,
            supervised_epochs=config.supervised_epochs,
            alpha=config.alpha,
            beta=config.beta,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            widths=config.widths,
            strides=config.strides,
            holdout_size=config.holdout_size,
            train_size=config.train_size,
            eval_size=config.eval_size,
            data_dir=config.data_dir,
            device=config.device,
            track_test=config.track_test,
        )
        return dataclasses.replace(base, **changes)

    def _run(self, run_dir: Path, config: TrainConfig) -> dict[str, Any]:
        """An alternating-trainer run: its summary, trained (or resumed) when not finished."""
        summary = run_dir / "summary.json"
        if summary.is_file():
            return json.loads(summary.read_text())
        _say(f"training {run_dir}")
        return AlternatingTrainer(config, run_dir).run()

    #: Alternating-run arms (:meth:`alternating_run`).
    ARMS = ("pretrained", "no-pretrain", "no-pretrain-equal-budget", "no-agent-pretrain")

    def warmup_epochs(self, arm: str) -> int:
        """Epochs the arm's main model trained before its rounds (the shared pre-training)."""
        return 0 if arm.startswith("no-pretrain") else self.config.epochs

    def alternating_run(self, arm: str, seed: int) -> tuple[Path, dict[str, Any]]:
        """``alternating/<arm>/seed<s>``: the thesis's alternating training, one of :data:`ARMS`:
        from the seed's pre-trained model (``pretrained``), from its initialisation with the
        same rounds (``no-pretrain``, the thesis's comparison) or with as many more rounds as
        the pre-training had epochs (``no-pretrain-equal-budget``), or from the pre-trained
        model with each round's supervised phase first (``no-agent-pretrain``)."""
        config = self.config
        if arm not in self.ARMS:
            raise ValueError(f"unknown arm {arm!r}; choose one of {self.ARMS}")
        if arm == "no-pretrain":
            changes: dict[str, Any] = {"pretrain_epochs": 0}
        elif arm == "no-pretrain-equal-budget":
            extra_rounds = -(-config.epochs // config.supervised_epochs)
            changes = {"pretrain_epochs": 0, "rounds": config.rounds + extra_rounds}
        else:
            changes = {"checkpoint": str(self.pretrained_model(seed))}
            if arm == "no-agent-pretrain":
                changes["agent_pretrain"] = False
        run_dir = self.out / "alternating" / arm / f"seed{seed}"
        return run_dir, self._run(run_dir, self.train_config(seed, **changes))

    def frozen_agent(
        self, seed: int, beta: float, max_steps: int = 1, penalty: str = "consecutive"
    ) -> dict[str, Any]:
        """An agent trained on the seed's frozen pre-trained model; its test summary."""
        name = f"beta{beta:g}_steps{max_steps}_{penalty}"
        config = self.train_config(
            seed,
            checkpoint=str(self.pretrained_model(seed)),
            beta=beta,
            max_steps=max_steps,
            penalty=penalty,
            rounds=1,
            supervised_epochs=0,
            track_test=0,
        )
        return self._run(self.out / "agents" / f"seed{seed}" / name, config)


# ----- small helpers for the experiments ----------------------------------------------------------
def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": int(array.size)}


def _pm(stats: dict[str, float], scale: float = 100.0, digits: int = 2) -> str:
    return f"{scale * stats['mean']:.{digits}f} ± {scale * stats['std']:.{digits}f}"


def _json_scalar(value: Any) -> Any:
    """numpy scalars (verdicts computed with numpy) as the Python values JSON knows."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finish(
    rep: Reproduction, name: str, payload: dict[str, Any], markdown: list[str], fig
) -> dict[str, Any]:
    folder = rep.out / name
    folder.mkdir(parents=True, exist_ok=True)
    payload = json.loads(json.dumps(payload, default=_json_scalar))
    write_json_atomic(payload, folder / "results.json")
    save_figure(fig, folder / f"{name}.png")
    _write_text(folder / f"{name}.md", "\n".join(markdown) + "\n")
    _say(f"{name}: wrote {folder}/ ({name}.md, {name}.png, results.json)")
    return payload


def _verdict(held: int, total: int) -> str:
    if held == total:
        return "reproduced"
    return "partly reproduced" if held else "not reproduced"


# ----- the experiments ----------------------------------------------------------------------------
def table_4_1(rep: Reproduction) -> dict[str, Any]:
    """Table 4.1 from separately trained baselines (``run_rl.py table``)."""
    config = rep.config
    table_dir = Path(config.table_dir or rep.out / "table4.1" / "table")
    table_file = table_dir / "tradeoff.json"
    if not table_file.is_file():
        _say(f"no table in {table_dir}: training the baselines there (run_rl.py table)")
        run_table(
            TableConfig(
                env=config.env,
                seeds=config.seeds,
                epochs=config.epochs,
                train_size=config.train_size,
                widths=config.widths,
                strides=config.strides,
                models=("plain", "deq"),
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                betas=(config.beta,),
                total_timesteps=config.total_timesteps,
                num_envs=config.num_envs,
                holdout_size=config.holdout_size,
                data_seed=config.data_seed,
                eval_size=config.eval_size,
                data_dir=config.data_dir,
                device=config.device,
                out=str(table_dir),
            )
        )
    table = json.loads(table_file.read_text())
    rows = table["rows"]
    agents = {k: v for k, v in rows.items() if k.startswith("DynaLay agent")}
    missing = [row for row in ("plain", "deq", "DynaLay static NOP (plain CNN)") if row not in rows]
    if missing or not agents:
        missing += [] if agents else ["a DynaLay agent"]
        raise ReproductionError(
            f"{table_file} has no row for {', '.join(missing)}: Table 4.1 compares the plain "
            "CNN, the DEQ and DynaLay's agent; make the table with `run_rl.py table --models "
            "plain deq --betas 0.3 ...`, or leave --table-dir out to train one"
        )
    # The thesis's DynaLay column is the agent at its beta (0.3); else the table's closest.
    thesis_beta = min(agents, key=lambda k: abs(float(k.split("=")[-1]) - 0.3))

    def backward_seconds(row: dict) -> float:
        return row["epoch_seconds"]["mean"] * row["backward_share"]["mean"]

    columns = {
        # Training time is the DynaLay model's (recorded on its NOP row), accuracy the agent's.
        "DynaLay": {
            **rows["DynaLay static NOP (plain CNN)"],
            "accuracy": agents[thesis_beta]["accuracy"],
        },
        "3-layer CNN": rows["plain"],
        "DEQ (Anderson)": rows["deq"],
    }
    measured = {
        name: {
            "backward_seconds_per_epoch": backward_seconds(row),
            "epoch_seconds": row["epoch_seconds"]["mean"],
            "accuracy": row["accuracy"],
        }
        for name, row in columns.items()
    }
    backward_fastest = measured["DynaLay"]["backward_seconds_per_epoch"] < min(
        measured["3-layer CNN"]["backward_seconds_per_epoch"],
        measured["DEQ (Anderson)"]["backward_seconds_per_epoch"],
    )
    accuracy = {name: m["accuracy"]["mean"] for name, m in measured.items()}
    most_accurate = accuracy["DynaLay"] >= max(accuracy.values())
    payload = {
        "table_dir": str(table_dir),
        "table_config": table["config"],
        "dynalay_agent_row": thesis_beta,
        "measured": measured,
        "claims": {
            "DynaLay has the shortest backward pass": backward_fastest,
            "DynaLay is the most accurate": most_accurate,
        },
    }
    md = [
        "## Table 4.1: DynaLay vs a 3-layer CNN vs a DEQ with solvers",
        "",
        "Thesis (CIFAR-10): backward pass 87 min (DynaLay) vs 120 min (3-layer CNN) vs 600 min "
        "(DEQ); test accuracy 92% vs 88% vs 91%.",
        "",
        f"Measured from `{table_dir}` (separately trained, {len(table['config']['seeds'])} "
        f"seeds, {table['config']['epochs']} epochs on {table['config']['train_size']} images; "
        f"DynaLay's accuracy is `{thesis_beta}`):",
        "",
        "| | DynaLay | 3-layer CNN | DEQ (Anderson) |",
        "|---|---|---|---|",
        "| backward pass (s / epoch) | "
        + " | ".join(f"{m['backward_seconds_per_epoch']:.1f}" for m in measured.values())
        + " |",
        "| training (s / epoch) | "
        + " | ".join(f"{m['epoch_seconds']:.1f}" for m in measured.values())
        + " |",
        "| adaptivity | agent | none | solver |",
        "| test accuracy (%) | " + " | ".join(_pm(m["accuracy"]) for m in measured.values()) + " |",
        "",
        f"Verdict: **{_verdict(int(backward_fastest) + int(most_accurate), 2)}**. "
        f"Shortest backward pass: {'yes' if backward_fastest else 'no'}; most accurate: "
        f"{'yes' if most_accurate else 'no'}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    names = list(measured)
    left.bar(names, [m["backward_seconds_per_epoch"] for m in measured.values()])
    left.set_ylabel("backward pass (s / epoch)")
    right.bar(
        names,
        [100 * m["accuracy"]["mean"] for m in measured.values()],
        yerr=[100 * m["accuracy"]["std"] for m in measured.values()],
    )
    right.set_ylabel("test accuracy (%)")
    right.set_ylim(bottom=min(100 * a for a in accuracy.values()) - 3)
    fig.suptitle("Table 4.1 measured")
    return _finish(rep, "table4.1", payload, md, fig)


def _frequency_curves(tb_dir: Path, n_actions: int) -> tuple[list[int], np.ndarray]:
    steps, _ = scalars_from_events(tb_dir, "dynalay/action_freq_0")
    curves = np.array(
        [scalars_from_events(tb_dir, f"dynalay/action_freq_{a}")[1] for a in range(n_actions)]
    )
    return steps, curves.reshape(n_actions, len(steps))


def fig_4_1(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.1: how often each action was chosen while the agents trained."""
    n_actions = len(rep.config.widths) + 1
    per_seed = {}
    for seed in rep.config.seeds:
        run_dir, summary = rep.alternating_run("pretrained", seed)
        steps, curves = _frequency_curves(run_dir / "tb", n_actions)
        per_seed[seed] = {
            "steps": steps,
            "frequencies": curves.tolist(),
            "final_agent_on_test": summary["action_frequencies"],
        }
    overall = np.array([np.mean(s["frequencies"], axis=1) for s in per_seed.values()])
    mean, std = overall.mean(axis=0), overall.std(axis=0)
    # PPO samples its actions while it learns (near-uniformly at first); the trained agent acts
    # greedily. Both are reported; the verdict follows the thesis's caption ("during training").
    final = np.array([s["final_agent_on_test"] for s in per_seed.values()])
    names = [path_name(a) for a in range(n_actions)]
    nop_most = int(np.argmax(mean)) == 0
    loop3_rare = n_actions < 4 or mean[3] < min(mean[1], mean[2])
    near = n_actions < 3 or (abs(mean[1] - 0.25) <= 0.1 and abs(mean[2] - 0.20) <= 0.1)
    held = int(nop_most) + int(loop3_rare) + int(near)

    def shares(means: np.ndarray, stds: np.ndarray) -> str:
        pairs = zip(names, means, stds, strict=True)
        return ", ".join(f"{n} {100 * m:.1f} ± {100 * s:.1f}%" for n, m, s in pairs)

    payload = {
        "per_seed": per_seed,
        "mean_frequency": dict(zip(names, mean.tolist(), strict=True)),
        "std_frequency": dict(zip(names, std.tolist(), strict=True)),
        "final_agent_frequency": dict(zip(names, final.mean(axis=0).tolist(), strict=True)),
        "claims": {
            "NOP most frequent": nop_most,
            "loop-3 rarest loop": loop3_rare,
            "loop-1 ~25% and loop-2 ~20% (within 10 points)": near,
        },
    }
    md = [
        "## Fig. 4.1: action frequencies during training",
        "",
        "Thesis (CIFAR-10): NOP is chosen most often, loop-1 about 25% and loop-2 about 20% of "
        "the time, loop-3 rarely.",
        "",
        f"Measured: share of the agent's decisions during all RL phases of the alternating runs "
        f"(beta {rep.config.beta:g}; PPO samples its actions while it learns), mean ± std over "
        f"seeds {list(rep.config.seeds)}: {shares(mean, std)}. The trained agents themselves "
        f"(greedy, on the test split): {shares(final.mean(axis=0), final.std(axis=0))}.",
        "",
        f"Verdict: **{_verdict(held, 3)}** (on the frequencies during training, as the "
        f"thesis's caption says). NOP most frequent: {'yes' if nop_most else 'no'}; "
        f"loop-3 rarest loop: {'yes' if loop3_rare else 'no'}; loop-1/loop-2 near 25%/20%: "
        f"{'yes' if near else 'no'}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    positions = np.arange(n_actions)
    left.bar(positions - 0.2, 100 * mean, 0.4, yerr=100 * std, label="during training")
    left.bar(positions + 0.2, 100 * final.mean(axis=0), 0.4, label="trained agent, test")
    left.set_xticks(positions, names)
    left.set_ylabel("share of decisions (%)")
    left.set_title("mean over seeds")
    left.legend()
    first = per_seed[rep.config.seeds[0]]
    for action, name in enumerate(names):
        right.plot(first["steps"], 100 * np.asarray(first["frequencies"][action]), label=name)
    right.set_xlabel("env steps")
    right.set_ylabel("share of decisions (%)")
    right.set_title(f"per rollout, seed {rep.config.seeds[0]}")
    right.legend()
    return _finish(rep, "fig4.1", payload, md, fig)


def _test_curves(run_dir: Path) -> dict[str, list[float]]:
    epochs, accuracy = scalars_from_events(run_dir / "tb", "test/accuracy")
    _, loss = scalars_from_events(run_dir / "tb", "test/loss")
    return {"epochs": epochs, "accuracy": accuracy, "loss": loss}


def _compare_arms(
    rep: Reproduction, name: str, arms: dict[str, str], claim: str
) -> tuple[dict[str, Any], list[str], Any, bool]:
    """Per-epoch test curves and final summaries of alternating-run arms over seeds.

    ``arms``: label -> arm. The verdict is on the first arm against the second (the thesis's
    comparison); every further arm is compared with the first too, in the table's text.
    """
    seeds = rep.config.seeds
    curves: dict[str, dict[int, Any]] = {label: {} for label in arms}
    finals: dict[str, list[dict[str, Any]]] = {label: [] for label in arms}
    for label, arm in arms.items():
        for seed in seeds:
            run_dir, summary = rep.alternating_run(arm, seed)
            curves[label][seed] = _test_curves(run_dir)
            finals[label].append(summary)
    stats = {
        label: {
            "main_model_epochs": rep.warmup_epochs(arms[label])
            + len(curves[label][seeds[0]]["epochs"]),
            "accuracy": _mean_std([s["accuracy"] for s in summaries]),
            "relative_flops": _mean_std([s["relative_flops"] for s in summaries]),
            "last_test_loss": _mean_std([curves[label][s]["loss"][-1] for s in seeds]),
        }
        for label, summaries in finals.items()
    }
    first, *others = list(arms)
    wins = {
        other: sum(
            finals[first][i]["accuracy"] > finals[other][i]["accuracy"] for i in range(len(seeds))
        )
        for other in others
    }
    better = {
        other: stats[first]["accuracy"]["mean"] > stats[other]["accuracy"]["mean"]
        and wins[other] > len(seeds) / 2
        for other in others
    }
    payload = {"arms": arms, "curves": curves, "final": stats, f"seeds won by {first}": wins}
    md = [
        "| arm | main-model epochs | final test accuracy (%) | FLOPs (x plain CNN) | "
        "last tracked test loss |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {s['main_model_epochs']} | {_pm(s['accuracy'])} | "
            f"{_pm(s['relative_flops'], 1.0)} | {_pm(s['last_test_loss'], 1.0, 3)} |"
            for label, s in stats.items()
        ),
        "",
        *(f"{first} beats {other} on {wins[other]} of {len(seeds)} seeds." for other in others),
        f"Verdict: **{'reproduced' if better[others[0]] else 'not reproduced'}** ({claim}).",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for color, label in zip(colors, arms, strict=False):
        warmup = rep.warmup_epochs(arms[label])
        for index, curve in enumerate(curves[label].values()):
            tag = label if index == 0 else None
            epochs = warmup + np.asarray(curve["epochs"])
            left.plot(epochs, 100 * np.asarray(curve["accuracy"]), "o-", color=color, label=tag)
            right.plot(epochs, curve["loss"], "o-", color=color, label=tag, alpha=0.8)
    for axis, ylabel in ((left, "test accuracy (%)"), (right, "test loss")):
        axis.set_xlabel("main-model training epochs (pre-training included)")
        axis.set_ylabel(ylabel)
    left.legend()
    fig.suptitle(f"{name}: after every supervised epoch of the rounds, one line per seed")
    return payload, md, fig, better[others[0]]


def fig_4_2(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.2: the alternating rounds after the warm-up vs from an untrained model."""
    arms = {
        "pre-trained": "pretrained",
        "not pre-trained": "no-pretrain",
        "not pre-trained, equal budget": "no-pretrain-equal-budget",
    }
    payload, table, fig, better = _compare_arms(
        rep, "Fig. 4.2", arms, "the pre-trained model ends more accurate on most seeds"
    )
    config = rep.config
    md = [
        "## Fig. 4.2: pre-training on vs off",
        "",
        "Thesis (CIFAR-10, 100 epochs): with a 20-epoch warm-up the model's test accuracy and "
        "loss are better throughout than without it.",
        "",
        f"Measured: {config.rounds} alternating rounds (PPO, beta {config.beta:g}, "
        f"{config.total_timesteps} env steps per RL phase, {config.supervised_epochs} supervised "
        f"epoch(s) per round) from the model pre-trained for {config.epochs} epochs vs from its "
        f"initialisation; test accuracy and loss of the agent's paths on {config.track_test} "
        "test images after every supervised epoch (the curves), final numbers on the test split. "
        "As in the thesis the pre-trained arm has trained for the warm-up's epochs more; the "
        "third arm gives the untrained start as many more rounds, so both train the main model "
        "for the same number of epochs (the verdict is on the thesis's comparison).",
        "",
        *table,
    ]
    return _finish(rep, "fig4.2", payload, md, fig)


def sec_4_0_5(rep: Reproduction) -> dict[str, Any]:
    """Section 4.0.5: the agent learns before the first supervised phase, or not."""
    arms = {"agent pre-trained": "pretrained", "no agent pre-training": "no-agent-pretrain"}
    payload, table, fig, better = _compare_arms(
        rep, "Sec. 4.0.5", arms, "agent pre-training ends more accurate on most seeds"
    )
    md = [
        "## Section 4.0.5: agent pre-training",
        "",
        "Thesis: the agent is pre-trained too, for as many epochs as the main model, and starting "
        "from those weights gives noticeably better results.",
        "",
        "Measured: both arms start from the same pre-trained main model. With agent pre-training "
        "the agent learns on it for one RL phase before the first supervised phase (the "
        "trainer's default order: rl, supervised per round, then a final rl); without, every "
        "round trains the main model first, so round 1 follows an untrained agent's choices "
        "(`--no-agent-pretrain`). Same number of supervised epochs; the first arm has one RL "
        "phase more, which is the agent's pre-training.",
        "",
        *table,
    ]
    return _finish(rep, "sec4.0.5", payload, md, fig)


def fig_4_3(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.3: (a) reward over training per seed; (b) frequencies and accuracy vs beta."""
    config = rep.config
    rewards = {}
    for seed in config.seeds:
        run_dir, _ = rep.alternating_run("pretrained", seed)
        steps, values = scalars_from_events(run_dir / "tb", "rollout/ep_rew_mean")
        rewards[seed] = {"steps": steps, "reward": values}
    sweep: dict[str, list[dict[str, Any]]] = {}
    for beta in config.betas:
        sweep[f"{beta:g}"] = [rep.frozen_agent(seed, beta) for seed in config.seeds]
    n_actions = len(config.widths) + 1
    names = [path_name(a) for a in range(n_actions)]
    frequencies = np.array(
        [np.mean([s["action_frequencies"] for s in runs], axis=0) for runs in sweep.values()]
    )
    accuracy = [_mean_std([s["accuracy"] for s in runs]) for runs in sweep.values()]
    flops = [_mean_std([s["relative_flops"] for s in runs]) for runs in sweep.values()]
    # (a) "stabilises": the last quarter of each curve varies less than the first quarter.
    stable = []
    for curve in rewards.values():
        values = np.asarray(curve["reward"])
        quarter = max(len(values) // 4, 1)
        stable.append(len(values) >= 4 and values[-quarter:].std() <= values[:quarter].std())
    stabilises = all(stable)
    # (b) a higher beta deters the costly loops: FLOPs fall monotonically with beta.
    flop_means = [f["mean"] for f in flops]
    deters = all(b <= a + 1e-9 for a, b in zip(flop_means, flop_means[1:], strict=False))
    payload = {
        "reward_curves": rewards,
        "betas": list(config.betas),
        "frequencies": frequencies.tolist(),
        "accuracy": accuracy,
        "relative_flops": flops,
        "agents": sweep,
        "claims": {
            "reward stabilises (every seed)": stabilises,
            "higher beta, fewer FLOPs": deters,
        },
    }
    md = [
        "## Fig. 4.3: reward over training; frequencies and accuracy against beta",
        "",
        "Thesis: (a) the mean reward stabilises as training goes on, for every seed; (b) a "
        "higher penalty beta steers the agent away from the costly layers, with the validation "
        "accuracy shown alongside.",
        "",
        f"Measured: (a) `rollout/ep_rew_mean` of the alternating runs (beta {config.beta:g}), one "
        f"curve per seed; (b) one PPO agent per beta and seed on the frozen pre-trained model "
        f"({config.total_timesteps} env steps), on the test split:",
        "",
        "| beta | " + " | ".join(names) + " | test accuracy (%) | FLOPs (x plain CNN) |",
        "|---|" + "---|" * (n_actions + 2),
        *(
            f"| {beta:g} | "
            + " | ".join(f"{100 * share:.1f}%" for share in frequencies[i])
            + f" | {_pm(accuracy[i])} | {_pm(flops[i], 1.0)} |"
            for i, beta in enumerate(config.betas)
        ),
        "",
        f"Verdict: **{_verdict(int(stabilises) + int(deters), 2)}**. (a) reward stabilises "
        f"(last quarter of the curve steadier than the first) on every seed: "
        f"{'yes' if stabilises else 'no'}; (b) FLOPs fall as beta grows: "
        f"{'yes' if deters else 'no'}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for seed, curve in rewards.items():
        left.plot(curve["steps"], curve["reward"], label=f"seed {seed}")
    left.set_xlabel("env steps")
    left.set_ylabel("mean episode reward")
    left.set_title("(a) reward over training")
    left.legend()
    for action, name in enumerate(names):
        right.plot(config.betas, 100 * frequencies[:, action], "o-", label=name)
    right.set_xscale("log")
    right.set_xlabel("beta")
    right.set_ylabel("share of decisions (%)")
    twin = right.twinx()
    twin.plot(config.betas, [100 * a["mean"] for a in accuracy], "k--", label="test accuracy")
    twin.set_ylabel("test accuracy (%)")
    right.legend(loc="center left")
    right.set_title("(b) frequencies and accuracy vs beta")
    return _finish(rep, "fig4.3", payload, md, fig)


@torch.no_grad()
def _batch_statistics(path: Path, action: int, split, device) -> dict[str, Any]:
    """Test loss and accuracy of one static path over consecutive batches of 100 images."""
    model, _ = load_main_model(path, device)
    losses, accuracies, flops, sizes = [], [], [], []
    for images, labels in iterate_batches(split, 100):
        stats = path_statistics(model, [(images, labels)], actions=[action])[action]
        losses.append(stats["loss"])
        accuracies.append(stats["accuracy"])
        flops.append(stats["flops"])
        sizes.append(len(labels))
    return {
        "loss": losses,
        "accuracy": accuracies,
        "batch_sizes": sizes,
        "relative_flops": float(np.average(flops, weights=sizes)) / model.straight_flops(),
    }


def fig_4_4(rep: Reproduction) -> dict[str, Any]:
    """Fig. 4.4: FPI in the first 0, 1, 2, 3 blocks; boxplots over test batches of 100."""
    config = rep.config
    n_blocks = len(config.widths)
    models: dict[int, dict[int, dict[str, Any]]] = {m: {} for m in range(n_blocks + 1)}
    for seed in config.seeds:
        for m in range(n_blocks + 1):
            path = (
                rep.pretrained_model(seed)
                if m == n_blocks
                else rep.trained_model(rep.out / "fig4.4" / f"seed{seed}" / f"fpi{m}.pt", seed, m)
            )
            models[m][seed] = _batch_statistics(path, m, rep.splits["test"], rep.device)
    pooled = {
        m: {key: [v for seed in runs.values() for v in seed[key]] for key in ("loss", "accuracy")}
        for m, runs in models.items()
    }
    seed_means = {
        m: {
            "accuracy": _mean_std(
                [np.average(r["accuracy"], weights=r["batch_sizes"]) for r in runs.values()]
            ),
            "loss": _mean_std(
                [np.average(r["loss"], weights=r["batch_sizes"]) for r in runs.values()]
            ),
            "relative_flops": _mean_std([r["relative_flops"] for r in runs.values()]),
        }
        for m, runs in models.items()
    }
    accuracy = [seed_means[m]["accuracy"]["mean"] for m in models]
    loss = [seed_means[m]["loss"]["mean"] for m in models]
    monotone = all(b >= a for a, b in zip(accuracy, accuracy[1:], strict=False))
    last_best = int(np.argmax(accuracy)) == n_blocks and int(np.argmin(loss)) == n_blocks
    labels = ["no FPI"] + [f"FPI in 1..{m}" for m in range(1, n_blocks + 1)]
    payload = {"per_seed": models, "seed_means": seed_means, "labels": labels}
    payload["claims"] = {
        "accuracy grows with every FPI block": monotone,
        "FPI in every block is best (accuracy and loss)": last_best,
    }
    md = [
        "## Fig. 4.4: FPI in the first 0, 1, 2, 3 blocks",
        "",
        "Thesis: the more layers use FPI the better the test loss and accuracy; Model 3 (FPI in "
        "every layer) is best. Evaluated on test batches of 100 samples.",
        "",
        f"Measured: four models per seed, trained identically ({config.epochs} epochs on "
        f"{config.train_size} images, Adam {config.learning_rate:g} cosine, batch "
        f"{config.batch_size}): straight loss plus a loop path drawn from loop-1..m (m = 0: "
        "the plain CNN); blocks after m always run straight, i.e. as plain conv layers. Each "
        "model answers with all its FPI blocks looped; boxes over the test batches of 100 of "
        f"every seed ({list(config.seeds)}):",
        "",
        "| model | test accuracy (%) | test loss | FLOPs (x plain CNN) |",
        "|---|---|---|---|",
        *(
            f"| {labels[m]} | {_pm(s['accuracy'])} | {_pm(s['loss'], 1.0, 3)} | "
            f"{_pm(s['relative_flops'], 1.0)} |"
            for m, s in seed_means.items()
        ),
        "",
        f"Verdict: **{_verdict(int(monotone) + int(last_best), 2)}**. Accuracy grows with every "
        f"FPI block: {'yes' if monotone else 'no'}; FPI everywhere best in accuracy and loss: "
        f"{'yes' if last_best else 'no'}.",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.boxplot([pooled[m]["loss"] for m in models], tick_labels=labels)
    left.set_ylabel("test loss (batch of 100)")
    right.boxplot([100 * np.asarray(pooled[m]["accuracy"]) for m in models], tick_labels=labels)
    right.set_ylabel("test accuracy (%, batch of 100)")
    fig.suptitle("Fig. 4.4 measured: FPI in the first m blocks")
    return _finish(rep, "fig4.4", payload, md, fig)


def introspection(rep: Reproduction) -> dict[str, Any]:
    """Does re-deciding after a loop (``max_steps`` > 1) buy accuracy per FLOP?"""
    config = rep.config
    beta = config.introspection_beta
    settings = [(m, p) for p in ("consecutive", "layer") for m in config.max_steps]
    results: dict[str, dict[str, Any]] = {}
    for max_steps, penalty in settings:
        summaries = [rep.frozen_agent(s, beta, max_steps, penalty) for s in config.seeds]
        results[f"{penalty}, max_steps={max_steps}"] = {
            "max_steps": max_steps,
            "penalty": penalty,
            "accuracy": _mean_std([s["accuracy"] for s in summaries]),
            "relative_flops": _mean_std([s["relative_flops"] for s in summaries]),
            "mean_steps": _mean_std([s.get("mean_steps", 1.0) for s in summaries]),
        }
    one_shot = {p: results[f"{p}, max_steps=1"] for p in ("consecutive", "layer")}
    pays = []
    for row in results.values():
        if row["max_steps"] == 1:
            continue
        base = one_shot[row["penalty"]]
        more_accurate = row["accuracy"]["mean"] > base["accuracy"]["mean"]
        pays.append(more_accurate)
    helps = any(pays)
    payload = {"beta": beta, "results": results, "claims": {"re-deciding buys accuracy": helps}}
    md = [
        "## Introspection: re-deciding after a loop (`max_steps` > 1)",
        "",
        "Thesis: the agent can look at the activations again after a loop and send hard inputs "
        "round once more. The reward's last factor is read two ways: the equation's count of "
        "consecutive identical choices (`--penalty consecutive`, the default) and the text's "
        "index of the chosen layer (`--penalty layer`).",
        "",
        f"Measured: one PPO agent per setting and seed on the frozen pre-trained model, beta "
        f"{beta:g} ({config.total_timesteps} env steps), test split:",
        "",
        "| penalty, max_steps | test accuracy (%) | FLOPs (x plain CNN) | decisions / image |",
        "|---|---|---|---|",
        *(
            f"| {name} | {_pm(r['accuracy'])} | {_pm(r['relative_flops'], 1.0)} | "
            f"{_pm(r['mean_steps'], 1.0)} |"
            for name, r in results.items()
        ),
        "",
        f"Verdict: **{'reproduced' if helps else 'not reproduced'}** (a second or third decision "
        f"ends more accurate than one-shot under the same penalty: {'yes' if helps else 'no'}; "
        "compare FLOPs in the table for accuracy per FLOP).",
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for penalty, marker in (("consecutive", "o-"), ("layer", "s--")):
        rows = [r for r in results.values() if r["penalty"] == penalty]
        ax.plot(
            [r["relative_flops"]["mean"] for r in rows],
            [100 * r["accuracy"]["mean"] for r in rows],
            marker,
            label=f"penalty={penalty}",
        )
        for r in rows:
            ax.annotate(
                f"{r['max_steps']}",
                (r["relative_flops"]["mean"], 100 * r["accuracy"]["mean"]),
            )
    ax.set_xlabel("FLOPs (x plain CNN)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"max_steps 1/2/3 at beta {beta:g}")
    ax.legend()
    return _finish(rep, "introspection", payload, md, fig)


EXPERIMENTS: dict[str, Callable[[Reproduction], dict[str, Any]]] = {
    "table4.1": table_4_1,
    "fig4.1": fig_4_1,
    "fig4.2": fig_4_2,
    "fig4.3": fig_4_3,
    "fig4.4": fig_4_4,
    "sec4.0.5": sec_4_0_5,
    "introspection": introspection,
}


def reproduce(config: ReproduceConfig, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Run the experiments ``names`` (keys of :data:`EXPERIMENTS`); their payloads by name.

    Also writes ``out/reproduction.md``: the sections of every experiment finished so far.
    """
    rep = Reproduction(config)
    results = {name: EXPERIMENTS[name](rep) for name in names}
    sections = [
        (rep.out / name / f"{name}.md").read_text()
        for name in EXPERIMENTS
        if (rep.out / name / f"{name}.md").is_file()
    ]
    _write_text(rep.out / "reproduction.md", "\n".join(sections))
    return results


def reproduce_main(argv: list[str]) -> int:
    """``run_rl.py reproduce``: parse flags, run the chosen experiments, print their verdicts."""
    defaults = ReproduceConfig()
    parser = argparse.ArgumentParser(
        prog="run_rl.py reproduce",
        description="Reproduce the thesis's Chapter 4: each experiment writes results.json, a "
        "PNG and a markdown section with the thesis's claim, the measured numbers and a verdict "
        "into OUT/<experiment>/, and OUT/reproduction.md gathers them. Resumable: a rerun with "
        "the same flags skips what finished.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("experiments", nargs="+", choices=[*EXPERIMENTS, "all"], help="what to reproduce")
    add("--env", default=defaults.env, help=f"one of {sorted(ENV_IDS.values())}")
    add("--seeds", type=int, nargs="+", default=list(defaults.seeds))
    add("--quick", action="store_true", help=f"reduced budget, minutes on 2 CPU cores: {QUICK}")
    add("--train-size", type=int, default=None, help=f"default {defaults.train_size}")
    add("--epochs", type=int, default=None, help=f"pre-training epochs ({defaults.epochs})")
    add("--rounds", type=int, default=None, help=f"alternating rounds ({defaults.rounds})")
    add("--total-timesteps", type=int, default=None, help=f"({defaults.total_timesteps})")
    add("--betas", type=float, nargs="+", default=None, help=f"Fig. 4.3b ({defaults.betas})")
    add("--holdout-size", type=int, default=None, help=f"({defaults.holdout_size})")
    add("--num-envs", type=int, default=defaults.num_envs)
    add("--batch-size", type=int, default=defaults.batch_size)
    add("--track-test", type=int, default=None, help=f"({defaults.track_test})")
    add("--widths", type=int, nargs="+", default=list(defaults.widths))
    add("--strides", type=int, nargs="+", default=list(defaults.strides))
    add("--eval-size", type=int, default=None, help="test images (default: all)")
    add("--table-dir", default=None, help="a `run_rl.py table` directory for Table 4.1")
    add("--data-dir", default=None)
    add("--device", default=defaults.device)
    add("--out", default=defaults.out, help="results directory")
    args = parser.parse_args(argv)
    if args.env not in ENV_IDS.values():
        parser.error(f"unknown --env {args.env!r}; choose one of {sorted(ENV_IDS.values())}")
    if len(args.strides) != len(args.widths):
        parser.error(f"--strides {args.strides} needs one entry per width {args.widths}")
    changes: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.betas is not None:
        changes["betas"] = tuple(sorted(args.betas))
    for flag in (
        "train_size",
        "epochs",
        "rounds",
        "total_timesteps",
        "eval_size",
        "holdout_size",
        "num_envs",
        "batch_size",
        "track_test",
    ):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
            changes[flag] = value
    config = dataclasses.replace(
        defaults,
        env=args.env,
        seeds=tuple(args.seeds),
        widths=tuple(args.widths),
        strides=tuple(args.strides),
        table_dir=args.table_dir,
        data_dir=args.data_dir,
        device=args.device,
        out=args.out,
        **changes,
    )
    names = (
        list(EXPERIMENTS) if "all" in args.experiments else list(dict.fromkeys(args.experiments))
    )
    try:
        results = reproduce(config, names)
    except (ReproductionError, TableConfigMismatch, RunConfigMismatch, SplitOverlapError) as error:
        parser.error(str(error))
    except DataNotFoundError as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    for name in results:
        print((Path(config.out) / name / f"{name}.md").read_text())
    print(f"all sections: {Path(config.out) / 'reproduction.md'}")
    return 0
