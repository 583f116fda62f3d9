"""Does the trade-off pay? DynaLay against separately trained baselines, over several seeds.

    python run_rl.py table --env DynaLay-FashionMNIST-v0 --seeds 0 1 2 --epochs 3 \\
        --train-size 30000 --betas 0.03 0.1 0.3 1 --total-timesteps 50000 \\
        --out docs/results/tradeoff                 # these are the defaults

Per seed, with the same training images, epochs, batch size and schedule for every model:

- ``plain``: the DynaLay network trained on its straight path only (the thesis's "3-layer CNN");
- ``plain-2x``, ``plain-4x``: the same plain CNN made wider, about 2x and 4x its FLOPs;
- ``deq``: the same shape with every block looped by TorchDEQ's Anderson solver and implicit
  backward (the thesis's "DEQ with solvers");
- ``dynalay``: the main model trained with the DynaLay recipe; then one PPO agent per beta on
  it (main model frozen), and on the test split: its static paths, the confidence-threshold
  curve (its loop path chosen on the holdout), a random policy, the oracle and the agents.

Every model reports test accuracy, FLOPs per sample, wall time per training epoch and the share
of it spent in ``backward()`` (the thesis's "Backward Pass Time"). Everything is written to
``out/seed<s>/`` as it finishes (a rerun skips what exists, so an interrupted table resumes);
``out/tradeoff.md``, ``out/tradeoff.json`` and ``out/tradeoff.png`` aggregate the seeds (mean and
standard deviation) and state each target of the issue as met or missed.

``models`` picks the separately trained baselines; ``dynalay_checkpoint`` uses a trained DynaLay
model instead of training one (``run_rl.py demo``: the model shipped with the package, against
baselines trained with the settings it records).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import TrainConfig
from agents.evaluate import (
    PolicyResult,
    best_loop_on,
    evaluate_all,
    run_policy,
    sequential_core,
    static_policy,
)
from agents.experiments import DEFAULT_TAUS, load_agent_policy
from agents.files import atomic_write, write_json_atomic
from agents.report import plt
from agents.trainer import AlternatingTrainer, dataset_of
from dynalay_env.data import DEFAULT_IMAGE_HOLDOUT, get_spec, load_splits
from dynalay_env.models import (
    SHIPPED_DIR,
    config_for,
    iterate_batches,
    resolve_device,
    shipped_model_path,
    shipped_model_provenance,
    train_main_model,
)
from main_model import DynaLayConfig, DynaLayNet, load_main_model, save_main_model
from main_model.checkpoint import state_digest
from main_model.train import path_statistics

#: name -> (training recipe, width multiplier). Conv FLOPs grow with the square of the width.
MODELS: dict[str, tuple[str, float]] = {
    "plain": ("plain", 1.0),
    "plain-2x": ("plain", math.sqrt(2.0)),
    "plain-4x": ("plain", 2.0),
    "deq": ("deq", 1.0),
    "dynalay": ("dynalay", 1.0),
}
#: The separately trained models (every table has ``dynalay`` too).
BASELINES = tuple(name for name in MODELS if name != "dynalay")


@dataclass
class TableConfig:
    """Budget and settings of the table; every model of a seed gets the same budget."""

    env: str = "DynaLay-FashionMNIST-v0"
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 3
    train_size: int | None = 30000
    widths: tuple[int, ...] = (16, 32, 64)
    strides: tuple[int, ...] | None = None
    models: tuple[str, ...] = BASELINES
    dynalay_checkpoint: str | None = None
    batch_size: int = 64
    learning_rate: float = 1e-2
    betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    total_timesteps: int = 50000
    num_envs: int = 64
    holdout_size: int = DEFAULT_IMAGE_HOLDOUT
    data_seed: int = 0
    eval_size: int | None = None
    taus: tuple[float, ...] = DEFAULT_TAUS
    data_dir: str | None = None
    device: str = "auto"
    out: str = "docs/results/tradeoff"


def model_config(config: TableConfig, widths: tuple[int, ...] | None = None) -> DynaLayConfig:
    """The main-model config of the table's models (``widths`` for the wider baselines)."""
    return config_for(
        get_spec(dataset_of(config.env)), widths or config.widths, strides=config.strides
    )


def _say(message: str) -> None:
    print(f"table: {message}", file=sys.stderr, flush=True)


def experiment_splits(config: Any, device) -> dict[str, Any]:
    """The train/holdout/test splits of an experiment's config (a :class:`TableConfig`, or
    anything with its ``env``, ``data_dir``, ``holdout_size``, ``data_seed``, ``train_size``
    and ``eval_size``: the reproduction's too), the test split cut to ``eval_size``, on
    ``device``."""
    splits = load_splits(
        dataset_of(config.env),
        config.data_dir,
        config.holdout_size,
        config.data_seed,
        train_size=config.train_size,
    )
    if config.eval_size is not None and config.eval_size < len(splits["test"]):
        splits["test"] = splits["test"].subset(torch.arange(config.eval_size))
    return {name: split.to(device) for name, split in splits.items()}


def train_model(name: str, config: TableConfig, seed: int, splits, out_dir: Path, device) -> dict:
    """Train (or reuse) one model of the table; returns its JSON record."""
    record_file, model_file = out_dir / f"{name}.json", out_dir / f"{name}.pt"
    if record_file.is_file() and model_file.is_file():
        return json.loads(record_file.read_text())
    recipe, multiplier = MODELS[name]
    widths = tuple(max(1, round(w * multiplier)) for w in config.widths)
    if name == "dynalay" and config.dynalay_checkpoint is not None:
        _say(f"seed {seed}: using the trained DynaLay model {config.dynalay_checkpoint}")
        model, _ = load_main_model(config.dynalay_checkpoint, device)
        history = []
    else:
        _say(f"seed {seed}: training {name} ({recipe}, widths {widths}, {config.epochs} epochs)")
        model, history = train_main_model(
            splits["train"],
            epochs=config.epochs,
            config=model_config(config, widths),
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            recipe=recipe,
            seed=seed,
            device=device,
        )
    n = model.n_blocks
    paths = {"plain": [0], "deq": [n], "dynalay": list(range(n + 1))}[recipe]
    solver = "anderson" if recipe == "deq" else "fpi"
    test = iterate_batches(splits["test"], 500)
    stats = path_statistics(model, test, solver=solver, actions=paths)
    seconds = [h.seconds for h in history]
    record = {
        "name": name,
        "seed": seed,
        "recipe": recipe,
        "widths": list(widths),
        "straight_flops": model.straight_flops(),
        "epoch_seconds": float(np.mean(seconds)) if seconds else None,
        "backward_share": (
            float(sum(h.backward_seconds for h in history) / sum(seconds)) if seconds else None
        ),
        "paths": {str(a): s for a, s in stats.items()},
    }
    if name != "dynalay":  # timed like the policies: its path through a sequential env core
        core, episodes = sequential_core(
            model, splits["test"], alpha=0.5, beta=0.3, max_steps=1, device=device, solver=solver
        )
        run_policy(core, static_policy(paths[0]), min(episodes, 512), name)  # warm-up, untimed
        timed = run_policy(core, static_policy(paths[0]), episodes, name)
        record["ms_per_sample"] = timed.ms_per_sample
    save_main_model(model, model_file, metadata={"table": name, "seed": seed})
    write_json_atomic(record, record_file)
    return record


def train_agents(config: TableConfig, seed: int, out_dir: Path) -> dict[float, Path]:
    """One agent per beta on the seed's frozen DynaLay model (skipped where it finished)."""
    run_dirs = {}
    for beta in config.betas:
        run_dir = out_dir / f"agent_beta_{beta:g}"
        run_dirs[beta] = run_dir
        if (run_dir / "summary.json").is_file():
            continue
        _say(f"seed {seed}: training the agent for beta={beta:g}")
        train_config = TrainConfig(
            algo="ppo",
            env=config.env,
            seed=seed,
            data_seed=config.data_seed,
            device=config.device,
            num_envs=config.num_envs,
            total_timesteps=config.total_timesteps,
            rounds=1,
            supervised_epochs=0,
            beta=beta,
            widths=config.widths,
            strides=config.strides,
            holdout_size=config.holdout_size,
            train_size=config.train_size,
            eval_size=config.eval_size,
            data_dir=config.data_dir,
            checkpoint=str(out_dir / "dynalay.pt"),
        )
        AlternatingTrainer(train_config, run_dir).run()
    return run_dirs


def evaluate_seed(config: TableConfig, seed: int, splits, out_dir: Path, device) -> list[dict]:
    """Static paths, threshold curve, random, oracle and the agents on the test split."""
    result_file = out_dir / "policies.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    model, _ = load_main_model(out_dir / "dynalay.pt", device)
    run_dirs = train_agents(config, seed, out_dir)
    core, episodes = sequential_core(
        model, splits["test"], alpha=0.5, beta=0.3, max_steps=1, device=device
    )
    agents = {f"agent beta={b:g}": load_agent_policy(d, "ppo", device) for b, d in run_dirs.items()}
    threshold_loop = best_loop_on(model, splits["holdout"])
    _say(f"seed {seed}: evaluating every policy on {episodes} test images")
    results: list[PolicyResult] = evaluate_all(
        core, agents, episodes, list(config.taus), threshold_loop, deq_solver=None
    )
    for beta, result in zip(config.betas, results[-len(config.betas) :], strict=True):
        result.parameter = beta
    payload = [r.to_json() for r in results]
    write_json_atomic(payload, result_file)
    return payload


class TableConfigMismatch(ValueError):
    """The results directory holds a table made with other settings."""


def _check_config(config: TableConfig, out: Path, dynalay: DynaLayNet | None) -> None:
    """Reuse finished work only when it was made with the same settings (seeds may differ).

    ``dynalay``: the model of ``config.dynalay_checkpoint``, when given."""
    saved_file = out / "table_config.json"
    current = {k: v for k, v in dataclasses.asdict(config).items() if k not in _FREE_KEYS}
    # The main model's defaults (contraction, tol, strides, norm...) shape every number too.
    if dynalay is not None:
        current["dynalay_digest"] = state_digest(dynalay)
    current["model_config"] = model_config(config).to_dict()
    current = json.loads(json.dumps(current))  # tuples as lists, like the saved copy
    if saved_file.is_file():
        saved = json.loads(saved_file.read_text())
        changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if changed:
            raise TableConfigMismatch(
                f"{out} holds a table made with other settings ({', '.join(changed)}: "
                f"{[saved.get(k) for k in changed]} there, {[current.get(k) for k in changed]} "
                f"now); choose another --out or delete it"
            )
    else:
        write_json_atomic(current, saved_file)


#: Settings that do not change any number of a finished seed.
_FREE_KEYS = ("seeds", "device", "out")


def validate(config: TableConfig) -> DynaLayNet | None:
    """Refuse settings that would make the table compare unlike things; returns the model of
    ``config.dynalay_checkpoint`` (None when the table trains its own)."""
    unknown = sorted(set(config.models) - set(BASELINES))
    if unknown or "plain" not in config.models:
        raise ValueError(
            f"models must include 'plain' and be among {list(BASELINES)}, got {config.models}"
        )
    trained = None
    if config.dynalay_checkpoint is not None:
        trained, _ = load_main_model(config.dynalay_checkpoint)
        expected = model_config(config)
        if (trained.config.widths, trained.config.strides) != (expected.widths, expected.strides):
            raise ValueError(
                f"the DynaLay model {config.dynalay_checkpoint} has widths "
                f"{trained.config.widths} and strides {trained.config.strides}; the baselines "
                f"would get {expected.widths} and {expected.strides}: pass the same --widths "
                f"and --strides"
            )
    return trained


def run_table(config: TableConfig) -> dict[str, Any]:
    """Train and evaluate everything for every seed, then aggregate; returns the JSON written."""
    dynalay = validate(config)
    out = Path(config.out)
    _check_config(config, out, dynalay)
    device = resolve_device(config.device)
    splits = experiment_splits(config, device)
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in config.seeds:
        seed_dir = out / f"seed{seed}"
        models = {
            name: train_model(name, config, seed, splits, seed_dir, device)
            for name in (*config.models, "dynalay")
        }
        per_seed[seed] = {
            "models": models,
            "policies": evaluate_seed(config, seed, splits, seed_dir, device),
        }
    summary = aggregate(config, per_seed)
    write_json_atomic(summary, out / "tradeoff.json")
    markdown = tradeoff_markdown(summary)
    atomic_write(out / "tradeoff.md", lambda p: Path(p).write_text(markdown))
    plot_tradeoff(summary, out / "tradeoff.png")
    return summary


# ----- aggregation --------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}


def aggregate(config: TableConfig, per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Rows (mean and std over seeds) and the targets of the issue, met or missed."""
    seeds = sorted(per_seed)
    plain_flops = [per_seed[s]["models"]["plain"]["straight_flops"] for s in seeds]
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, kind: str, accuracy, flops, **extra) -> None:
        rows[name] = {
            "kind": kind,
            "accuracy": _mean_std(accuracy),
            "relative_flops": _mean_std(flops),
            **extra,
        }

    def timing(records: list[dict]) -> dict[str, Any]:
        """Training wall time per epoch and backward share (absent for a model not trained
        here, e.g. ``dynalay_checkpoint``)."""
        if any(r["epoch_seconds"] is None for r in records):
            return {}
        return {
            "epoch_seconds": _mean_std([r["epoch_seconds"] for r in records]),
            "backward_share": _mean_std([r["backward_share"] for r in records]),
        }

    for name in config.models:
        records = [per_seed[s]["models"][name] for s in seeds]
        path = str(max(int(a) for a in records[0]["paths"])) if name == "deq" else "0"
        add(
            name,
            "separately trained",
            [r["paths"][path]["accuracy"] for r in records],
            [r["paths"][path]["flops"] / f for r, f in zip(records, plain_flops, strict=True)],
            ms_per_sample=_mean_std([r["ms_per_sample"] for r in records]),
            widths=records[0]["widths"],
            **timing(records),
        )
    dynalay_timing = timing([per_seed[s]["models"]["dynalay"] for s in seeds])

    def key(policy: dict) -> str:  # the threshold's loop path may differ between seeds
        return policy["name"].split(" (loop-")[0]

    names = [key(p) for p in per_seed[seeds[0]]["policies"]]
    for name in names:
        found = [next(p for p in per_seed[s]["policies"] if key(p) == name) for s in seeds]
        kind = name.split(" ")[0]
        add(
            f"DynaLay {name}",
            kind,
            [p["accuracy"] for p in found],
            [p["relative_flops"] for p in found],
            action_frequencies=np.mean([p["action_frequencies"] for p in found], 0).tolist(),
            parameter=found[0].get("parameter"),
            **(
                {"ms_per_sample": _mean_std([p["ms_per_sample"] for p in found])}
                if found[0]["ms_per_sample"] is not None
                else {}
            ),
            **(dynalay_timing if "NOP" in name else {}),
        )
    return {
        "config": {**dataclasses.asdict(config), "seeds": seeds},
        "rows": rows,
        "targets": targets(rows),
    }


def _threshold_accuracy_at(rows: dict[str, Any], flops: float) -> float | None:
    """The threshold curve's accuracy at ``flops`` (linear between its points)."""
    curve = sorted(
        (r["relative_flops"]["mean"], r["accuracy"]["mean"])
        for r in rows.values()
        if r["kind"] == "threshold"
    )
    if not curve or flops < curve[0][0]:
        return None
    xs, ys = zip(*curve, strict=True)
    return float(np.interp(flops, xs, ys))


def targets(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets with the measured numbers (means over seeds) and met / missed."""
    acc = {name: r["accuracy"]["mean"] for name, r in rows.items()}
    flops = {name: r["relative_flops"]["mean"] for name, r in rows.items()}
    loops = [n for n, r in rows.items() if r["kind"] == "static" and "loop" in n]
    best = max(loops, key=lambda n: acc[n])
    agents = [n for n, r in rows.items() if r["kind"] == "agent"]
    nop = next(n for n, r in rows.items() if r["kind"] == "static" and "NOP" in n)
    out = [
        {
            "target": "NOP path within 0.5 points of the separately trained plain CNN",
            "measured": f"NOP {acc[nop]:.2%} vs plain {acc['plain']:.2%}",
            "met": acc[nop] >= acc["plain"] - 0.005,
        },
        {
            "target": "best static loop path >= 2 points above the plain CNN",
            "measured": f"{best} {acc[best]:.2%} vs plain {acc['plain']:.2%}",
            "met": acc[best] >= acc["plain"] + 0.02,
        },
    ]
    close = [a for a in agents if acc[a] >= acc[best] - 0.005 and flops[a] <= 0.5 * flops[best]]
    out.append(
        {
            "target": "an agent within 0.5 points of the best static path at <= 50% of its FLOPs",
            "measured": "; ".join(f"{a}: {acc[a]:.2%} at {flops[a]:.2f}x" for a in agents)
            + f" (best static {acc[best]:.2%} at {flops[best]:.2f}x)",
            "met": bool(close),
        }
    )
    below = []
    for a in agents:
        curve = _threshold_accuracy_at(rows, flops[a])
        if curve is not None and acc[a] < curve:
            below.append(f"{a} ({acc[a]:.2%} vs threshold {curve:.2%} at {flops[a]:.2f}x)")
    out.append(
        {
            "target": "every agent above the confidence-threshold curve",
            "measured": "below: " + "; ".join(below) if below else "all agents above or left of it",
            "met": not below,
        }
    )
    wider = [w for w in ("plain-2x", "plain-4x") if w in acc]
    if wider:
        wide = [
            f"{a} beats {w}"
            for a in agents
            for w in wider
            if acc[a] > acc[w] and flops[a] <= flops[w]
        ]
        out.append(
            {
                "target": "stretch: an agent more accurate than a wider plain CNN at no more FLOPs",
                "measured": "; ".join(wide)
                or ", ".join(f"{w} {acc[w]:.2%} at {flops[w]:.2f}x" for w in wider),
                "met": bool(wide),
            }
        )
    return out


def _fmt(stat: dict[str, float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}{unit}"


def tradeoff_markdown(summary: dict[str, Any]) -> str:
    config = summary["config"]
    lines = [
        "| model / policy | test accuracy (%) | FLOPs (x plain CNN) | ms / test image "
        "| s / training epoch | backward share |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary["rows"].items():
        wall = _fmt(row["ms_per_sample"], digits=3) if "ms_per_sample" in row else ""
        epoch = _fmt(row["epoch_seconds"], digits=1) if "epoch_seconds" in row else ""
        share = _fmt(row["backward_share"], 100, 0, "%") if "backward_share" in row else ""
        lines.append(
            f"| {name} | {_fmt(row['accuracy'], 100)} | {_fmt(row['relative_flops'])} | "
            f"{wall} | {epoch} | {share} |"
        )
    lines += ["", "| target | measured (mean over seeds) | verdict |", "|---|---|---|"]
    for target in summary["targets"]:
        verdict = "met" if target["met"] else "**missed**"
        lines.append(f"| {target['target']} | {target['measured']} | {verdict} |")
    lines += [
        "",
        f"Seeds {config['seeds']}; mean ± standard deviation over seeds. {config['epochs']} "
        f"epochs on {config['train_size'] or 'all the'} training images (holdout excluded), "
        f"batch {config['batch_size']}, "
        f"Adam lr {config['learning_rate']:g} with cosine decay, widths {config['widths']}; "
        f"agents: PPO, {config['total_timesteps']} steps each on the "
        f"{config['holdout_size']}-image holdout. Test split: all of it unless eval_size is set "
        f"({config['eval_size']}).",
    ]
    if config.get("dynalay_checkpoint"):
        lines.append(
            f"The DynaLay model was not trained here: {config['dynalay_checkpoint']} (trained "
            "with the same images, epochs and schedule as the baselines; see its provenance)."
        )
    return "\n".join(lines) + "\n"


def plot_tradeoff(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy against FLOPs with error bars over seeds; the threshold curve as a line."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    rows = summary["rows"]
    styles = {
        "separately trained": ("s", "tab:blue"),
        "static": ("o", "tab:cyan"),
        "random": ("x", "black"),
        "oracle": ("*", "tab:green"),
        "agent": ("P", "tab:red"),
    }
    curve = sorted(
        (r["relative_flops"]["mean"], r["accuracy"]["mean"], r["accuracy"]["std"])
        for r in rows.values()
        if r["kind"] == "threshold"
    )
    if curve:
        xs, ys, es = zip(*curve, strict=True)
        ax.errorbar(
            xs,
            [100 * y for y in ys],
            [100 * e for e in es],
            fmt="-",
            color="tab:gray",
            label="confidence threshold (tau sweep)",
        )
    seen = set()
    for name, row in rows.items():
        if row["kind"] not in styles:
            continue
        marker, color = styles[row["kind"]]
        label = None if row["kind"] in seen else row["kind"]
        seen.add(row["kind"])
        x, y = row["relative_flops"]["mean"], 100 * row["accuracy"]["mean"]
        ax.errorbar(
            x,
            y,
            yerr=100 * row["accuracy"]["std"],
            xerr=row["relative_flops"]["std"],
            fmt=marker,
            color=color,
            ms=8,
            capsize=3,
            label=label,
        )
        ax.annotate(
            name.replace("DynaLay ", ""),
            (x, y),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean FLOPs per test image, relative to the plain CNN (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("DynaLay vs separately trained baselines (mean ± std over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)
    return path


# ----- the demo ------------------------------------------------------------------------------------
def demo_config(
    out: str = "runs/demo",
    betas: Sequence[float] = (0.03, 0.1, 0.3),
    total_timesteps: int = 50000,
    device: str = "auto",
) -> TableConfig:
    """The table for ``make demo``: the Fashion-MNIST model shipped with the package against a
    plain CNN and one about 2x wider in FLOPs, trained here with exactly the settings the shipped
    model records (same images, epochs, batch, schedule, seed), and PPO agents trained here on
    the shipped model."""
    spec = get_spec("FashionMNIST")
    checkpoint, provenance = shipped_model_path(spec), shipped_model_provenance(spec)
    if checkpoint is None or provenance is None:
        raise FileNotFoundError(
            f"no shipped FashionMNIST model in {SHIPPED_DIR}; reinstall the package, or make one "
            "with `python -m dynalay_env.pretrain --dataset FashionMNIST --output "
            f"{SHIPPED_DIR / 'FashionMNIST.pt'}`"
        )
    settings, model = provenance["settings"], provenance["config"]
    return TableConfig(
        env="DynaLay-FashionMNIST-v0",
        seeds=(settings["seed"],),
        epochs=settings["epochs"],
        train_size=settings["train_size"],
        widths=tuple(model["widths"]),
        strides=tuple(model["strides"]),
        models=("plain", "plain-2x"),
        dynalay_checkpoint=str(checkpoint),
        batch_size=settings["batch_size"],
        learning_rate=settings["lr"],
        betas=tuple(sorted(betas)),
        total_timesteps=total_timesteps,
        holdout_size=settings["holdout_size"],
        data_seed=settings["data_seed"],
        device=device,
        out=out,
    )


def demo_report(summary: dict[str, Any]) -> str:
    """The agents side by side with the plain CNN, loop-all and the confidence threshold, and
    whether each agent is at least as accurate as the separately trained plain CNN."""
    rows = summary["rows"]
    plain = rows["plain"]
    loops = [n for n in rows if n.startswith("DynaLay static loop-")]
    loop_all = max(loops, key=lambda name: int(name.rsplit("-", 1)[1]))
    shown = [n for n, r in rows.items() if r["kind"] == "separately trained"]
    shown += ["DynaLay static NOP (plain CNN)", loop_all]
    shown += [n for n, r in rows.items() if r["kind"] in ("threshold", "agent")]
    lines = [
        f"{'':44s} {'test acc':>9s} {'FLOPs':>7s} {'ms/image':>9s}",
    ]
    for name in shown:
        row = rows[name]
        label = {"plain": "plain CNN (trained here, same budget)"}.get(name, name)
        wall = row.get("ms_per_sample", {}).get("mean")
        lines.append(
            f"{label:44s} {100 * row['accuracy']['mean']:8.2f}% "
            f"{row['relative_flops']['mean']:6.2f}x {'' if wall is None else f'{wall:9.3f}'}"
        )
    lines.append("")
    for name, row in rows.items():
        if row["kind"] == "agent":
            gain = 100 * (row["accuracy"]["mean"] - plain["accuracy"]["mean"])
            verdict = "yes" if gain >= 0 else "NO"
            lines.append(
                f"{name}: {gain:+.2f} points over the plain CNN at "
                f"{row['relative_flops']['mean']:.2f}x its FLOPs -> at least as accurate: {verdict}"
            )
    return "\n".join(lines)
