"""Results as files: ``results.md`` (a table like the thesis's Table 4.1), ``results.json`` and
PNG plots (action frequencies, reward over training, frequency/accuracy against beta, Pareto).
Every file is written atomically. Policies are told apart by their kind (:func:`policy_kind`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from agents.evaluate import PolicyResult  # noqa: E402
from main_model.io import atomic_write  # noqa: E402
from main_model.paths import path_name  # noqa: E402

#: Display-name prefix -> kind of the policies :func:`agents.evaluate.evaluate_all` runs; any
#: other name is an agent's (the names are also what results.json and policies.json keep).
POLICY_KINDS = {
    "static ": "static",
    "loop-all with ": "loop-all",
    "random": "random",
    "threshold ": "threshold",
    "cascade ": "cascade",
    "oracle": "oracle",
    "router ": "router",  # agents.router: the full-information router, one row per beta
}


def policy_kind(name: str) -> str:
    """The kind of the policy called ``name``: ``static``, ``loop-all`` (a DEQ solver on every
    block), ``random``, ``threshold``, ``cascade`` (``max_steps > 1``), ``oracle`` or
    ``agent``."""
    return next((k for prefix, k in POLICY_KINDS.items() if name.startswith(prefix)), "agent")


def action_names(n_actions: int) -> list[str]:
    return [path_name(action) for action in range(n_actions)]


def markdown_table(results: Sequence[PolicyResult], title: str) -> str:
    """One row per policy: accuracy (and a language model's perplexity), compute, action
    frequencies, wall time."""
    names = action_names(len(results[0].action_frequencies))
    language_model = any(r.perplexity is not None for r in results)
    perplexity = ["perplexity"] if language_model else []
    header = ["policy", "accuracy", *perplexity, "FLOPs vs plain CNN", "mean cost", *names]
    header.append("ms / sample")
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        wall = "—" if r.ms_per_sample is None else f"{r.ms_per_sample:.3f}"
        freqs = [f"{share:.1%}" for share in r.action_frequencies]
        row = [r.name, f"{r.accuracy:.4f}"]
        if language_model:
            row.append("—" if r.perplexity is None else f"{r.perplexity:.1f}")
        row += [f"{r.relative_flops:.2f}x", f"{r.mean_cost:.4f}"]
        lines.append("| " + " | ".join([*row, *freqs, wall]) + " |")
    lines += [
        "",
        f"{results[0].episodes} samples. FLOPs vs plain CNN: mean FLOPs per sample (straight pass "
        "included) over the plain CNN's. Mean cost: summed per-step cost in [0, 1] (step FLOPs over "
        "the most expensive possible step). The oracle is an upper bound (cheapest correct path "
        "per sample), not a deployable policy; it has no wall time.",
    ]
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: Path, results: Sequence[PolicyResult], title: str, extra: dict[str, Any]
) -> tuple[Path, Path]:
    """``results.md`` and ``results.json`` in ``out_dir``."""
    markdown = markdown_table(results, title)
    payload = {**extra, "policies": [r.to_json() for r in results]}
    md = atomic_write(out_dir / "results.md", lambda p: Path(p).write_text(markdown))
    js = atomic_write(
        out_dir / "results.json", lambda p: Path(p).write_text(json.dumps(payload, indent=2))
    )
    return md, js


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically, and close it."""
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def plot_action_frequencies(results: Sequence[PolicyResult], path: Path) -> Path:
    """Grouped bars: share of decisions per action for each given policy (thesis Fig. 4.1)."""
    names = action_names(len(results[0].action_frequencies))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(results)
    for i, result in enumerate(results):
        xs = [k + i * width for k in range(len(names))]
        ax.bar(xs, [100 * f for f in result.action_frequencies], width, label=result.name)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names)
    ax.set_xlabel("action")
    ax.set_ylabel("share of decisions (%)")
    ax.set_title("Action selection frequency on the test split")
    ax.legend()
    return save_figure(fig, path)


def plot_reward_curve(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Mean episode reward against environment steps (thesis Fig. 4.3a)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps, rewards) in curves.items():
        ax.plot(steps, rewards, label=label)
    ax.set_xlabel("environment steps (episodes x decisions)")
    ax.set_ylabel("mean episode reward")
    ax.set_title("Agent reward during RL training (rollout/ep_rew_mean)")
    if curves:
        ax.legend()
    return save_figure(fig, path)


def plot_pareto(results: Sequence[PolicyResult], path: Path) -> Path:
    """Accuracy against compute for every policy; the threshold sweep drawn as a curve."""
    fig, ax = plt.subplots(figsize=(7, 5))
    thresholds = sorted(
        (r for r in results if policy_kind(r.name) == "threshold"), key=lambda r: r.relative_flops
    )
    if thresholds:
        ax.plot(
            [r.relative_flops for r in thresholds],
            [100 * r.accuracy for r in thresholds],
            "o-",
            color="tab:gray",
            label="confidence threshold (tau sweep)",
        )
    # kind -> (marker, colour, legend label)
    styles = {
        "static": ("s", "tab:blue", "static"),
        "loop-all": ("D", "tab:purple", "loop-all with"),
        "random": ("x", "black", "random"),
        "oracle": ("*", "tab:green", "oracle"),
        "cascade": ("v", "tab:orange", "confidence cascade"),
        "agent": ("P", "tab:red", "agent"),
        "router": ("^", "tab:brown", "router (full information)"),
    }
    seen: set[str] = set()
    for r in results:
        kind = policy_kind(r.name)
        if kind == "threshold":
            continue
        marker, color, label = styles[kind]
        ax.plot(
            r.relative_flops,
            100 * r.accuracy,
            marker,
            color=color,
            ms=9,
            label=None if kind in seen else label,
        )
        seen.add(kind)
        ax.annotate(r.name.replace("static ", ""), (r.relative_flops, 100 * r.accuracy), fontsize=7)
    ax.set_xlabel("mean FLOPs per sample, relative to the plain CNN (x)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs compute (up and left is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_beta_sweep(betas: Sequence[float], agents: Sequence[PolicyResult], path: Path) -> Path:
    """Selection frequency of each action and accuracy against beta (thesis Fig. 4.3b)."""
    names = action_names(len(agents[0].action_frequencies))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(names):
        left.plot(betas, [100 * a.action_frequencies[k] for a in agents], "o-", label=name)
    left.set_xscale("log")
    left.set_xlabel("beta (compute penalty weight)")
    left.set_ylabel("share of decisions (%)")
    left.set_title("Action selection frequency vs beta")
    left.legend()
    right.plot(betas, [100 * a.accuracy for a in agents], "o-", color="tab:red")
    right.set_xscale("log")
    right.set_xlabel("beta (compute penalty weight)")
    right.set_ylabel("test accuracy (%)")
    right.set_title("Agent accuracy vs beta")
    return save_figure(fig, path)


def scalars_from_events(tb_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of scalar ``tag`` in a run's TensorBoard events, by step; a step logged
    twice (a phase re-run after a resume) keeps its last value. Empty when never logged, or
    when the run has no ``tb/`` folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not Path(tb_dir).is_dir():  # a run copied without its events (docs/results keeps none)
        return [], []
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    if tag not in events.Tags()["scalars"]:
        return [], []
    by_step = {point.step: point.value for point in events.Scalars(tag)}
    steps = sorted(by_step)
    return steps, [by_step[step] for step in steps]


def reward_curve_from_events(tb_dir: Path) -> tuple[list[int], list[float]]:
    """``rollout/ep_rew_mean`` from a run's TensorBoard events."""
    return scalars_from_events(tb_dir, "rollout/ep_rew_mean")
