"""Introspection: ``max_steps`` 1, 2, 3 under both readings of the reward's last factor
(``consecutive`` count, ``layer`` index) at one beta, on the frozen pre-trained model: does
re-deciding after a loop buy accuracy?"""

from __future__ import annotations

from typing import Any

from agents.report import plt

from ..common import mean_std
from .pieces import Reproduction, finish, pm, verdict_of, yes

NAME = "introspection"
PENALTIES = ("consecutive", "layer")


def claims(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Re-deciding buys accuracy when some setting with ``max_steps`` > 1 ends more accurate
    (mean over seeds) than one-shot under the same penalty."""
    one_shot = {
        r["penalty"]: r["accuracy"]["mean"] for r in results.values() if r["max_steps"] == 1
    }
    return {
        "re-deciding buys accuracy": any(
            r["accuracy"]["mean"] > one_shot[r["penalty"]]
            for r in results.values()
            if r["max_steps"] > 1
        )
    }


def run(rep: Reproduction) -> dict[str, Any]:
    """Does re-deciding after a loop (``max_steps`` > 1) buy accuracy per FLOP?"""
    config = rep.config
    beta = config.introspection_beta
    settings = [(m, p) for p in PENALTIES for m in config.max_steps]
    results: dict[str, dict[str, Any]] = {}
    for max_steps, penalty in settings:
        summaries = [rep.frozen_agent(s, beta, max_steps, penalty) for s in config.seeds]
        results[f"{penalty}, max_steps={max_steps}"] = {
            "max_steps": max_steps,
            "penalty": penalty,
            "accuracy": mean_std([s["accuracy"] for s in summaries], count=True),
            "relative_flops": mean_std([s["relative_flops"] for s in summaries], count=True),
            "mean_steps": mean_std([s.get("mean_steps", 1.0) for s in summaries], count=True),
        }
    held = claims(results)
    (helps,) = held.values()
    payload = {"beta": beta, "results": results, "claims": held}
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
            f"| {name} | {pm(r['accuracy'])} | {pm(r['relative_flops'], 1.0)} | "
            f"{pm(r['mean_steps'], 1.0)} |"
            for name, r in results.items()
        ),
        "",
        f"Verdict: **{verdict_of(held)}** (a second or third decision ends more accurate than "
        f"one-shot under the same penalty: {yes(helps)}; compare FLOPs in the table for "
        "accuracy per FLOP).",
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
    return finish(rep, NAME, payload, md, fig)
