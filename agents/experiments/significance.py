"""The table's per-seed extras: the full-information router's rows, every policy's per-image
outcomes on test, and the paired differences they allow (which gaps of ``run_rl.py table``
mean something).

Per seed directory, each file created when missing (so a table whose seeds finished before
these existed gets them on its next run, its ``policies.json`` reused as is):

- ``router.json``: the router's test rows (one per cost weight, :mod:`agents.router`) and its
  cross-fitted holdout numbers; ``router.pt``: its fit on the holdout (plain tensors, loads
  with ``weights_only=True``) and the path costs, for :func:`agents.router.router_classifier`;
- ``per_image.npz``: ``dataset_index`` (N,) and one (N,) column of per-image correctness per
  policy (agents, threshold points, router rows, keyed by name without the threshold's
  ``(loop-k)``) and per wider plain CNN, in ``dataset_index`` order.

Comparisons (:func:`paired_comparisons`), per seed on the same test images: each agent and
router row minus the threshold curve at its FLOPs, and minus each wider plain CNN. The curve
at FLOPs f is the per-image *mixture* of the two neighbouring tau points, weighted so that
its mean FLOPs are f (linear interpolation, as the targets read the curve); left or right of
the curve, its nearest end. The 95% interval is a paired bootstrap over the images
(:func:`~agents.experiments.common.paired_interval`); a difference is significant where every
seed's interval excludes zero on the same side.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.algorithms import load_agent_policy
from agents.evaluate import PolicyResult, fresh_core, run_policy, threshold_policy
from agents.report import policy_kind
from agents.router import (
    ROUTER_BETAS,
    SavedRouter,
    path_outcomes,
    router_policy,
    router_results,
)
from dynalay_env.build import sequential_core
from dynalay_env.mdp import MDPConfig
from main_model import load_main_model
from main_model.io import atomic_write, write_json_atomic

from .common import mean_std, paired_interval, say

PER_IMAGE_FILE, ROUTER_FILE, ROUTER_MODEL = "per_image.npz", "router.json", "router.pt"
#: The separately trained models an agent is compared with image by image.
WIDER = ("plain-2x",)
#: Kinds of the policies whose per-image outcomes are kept and compared.
COMPARED = ("agent", "router")


def column_name(name: str) -> str:
    """A policy's per-image column: its name without the threshold's loop, which may differ
    between seeds (``threshold tau=0.9 (loop-3)`` -> ``threshold tau=0.9``)."""
    return name.split(" (loop-")[0]


def load_per_image(path: Path) -> dict[str, np.ndarray]:
    """The columns of a ``per_image.npz`` ({} when there is none)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def save_per_image(path: Path, columns: dict[str, np.ndarray]) -> None:
    def write(tmp: str) -> None:
        with Path(tmp).open("wb") as file:  # a file object: savez would add ".npz" to a name
            np.savez_compressed(file, **columns)

    atomic_write(path, write)


def add_columns(columns: dict[str, np.ndarray], results: list[PolicyResult]) -> None:
    """Each compared or threshold result's per-image correctness as a column (float32: 0/1,
    or a language model's share of right positions), in ``dataset_index`` order."""
    for result in results:
        if policy_kind(result.name) not in (*COMPARED, "threshold"):
            continue
        index = result.records["dataset_index"]
        order = np.argsort(index, kind="stable")
        if "dataset_index" not in columns:
            columns["dataset_index"] = index[order]
        elif not np.array_equal(columns["dataset_index"], index[order]):
            raise ValueError(f"{result.name} was evaluated on other test images than the rest")
        columns[column_name(result.name)] = result.records["correct"][order].astype(np.float32)


def seed_extras(
    seed: int,
    betas: tuple[float, ...],
    models: tuple[str, ...],
    splits,
    out_dir: Path,
    device,
    policies: list[dict],
    mdp: MDPConfig,
) -> dict[str, Any]:
    """The seed's router rows and per-image outcomes, computed where their files are missing.

    ``policies``: the seed's ``policies.json`` rows; ``betas``: its agents'; ``models``: its
    separately trained baselines. Returns ``{"router": router.json, "per_image": columns}``.
    """
    per_image_file, router_file = out_dir / PER_IMAGE_FILE, out_dir / ROUTER_FILE
    columns = load_per_image(per_image_file)
    model, _ = load_main_model(out_dir / "dynalay.pt", device)
    core, episodes = sequential_core(model, splits["test"], mdp=mdp, device=device)
    computed: list[PolicyResult] = []
    if not (router_file.is_file() and (out_dir / ROUTER_MODEL).is_file()):
        results, holdout, fit = router_results(
            model, splits["holdout"], core, episodes, mdp.alpha, ROUTER_BETAS, seed,
            progress=lambda message: say("table", f"seed {seed}: {message}"),
        )  # fmt: skip
        cost = torch.as_tensor(holdout["cost"], dtype=torch.float64)
        SavedRouter(fit, cost, mdp.alpha).save(out_dir / ROUTER_MODEL)
        payload = {"policies": [r.to_json() for r in results], "holdout_cross_fit": holdout}
        write_json_atomic(payload, router_file)
        computed += results
    router = json.loads(router_file.read_text())
    add_columns(columns, computed)
    wanted = [p["name"] for p in [*policies, *router["policies"]]]
    wanted = [n for n in wanted if policy_kind(n) in (*COMPARED, "threshold")]
    missing = [n for n in wanted if column_name(n) not in columns]
    if missing:
        say("table", f"seed {seed}: per-image outcomes of {len(missing)} policies on test")
        agents = {f"agent beta={b:g}": out_dir / f"agent_beta_{b:g}" for b in betas}
        saved = SavedRouter.load(out_dir / ROUTER_MODEL)
        rows = {p["name"]: p for p in [*policies, *router["policies"]]}
        for name in missing:
            kind, parameter = policy_kind(name), rows[name].get("parameter")
            if kind == "threshold":
                loop = int(re.search(r"\(loop-(\d+)\)", name).group(1))
                policy = threshold_policy(core.observation_layout, parameter, loop)
            elif kind == "router":
                policy = router_policy(saved.network(parameter), saved.fit.normalizer, model)
            else:
                policy = load_agent_policy(agents[name], "ppo", device)
            result = run_policy(fresh_core(core), policy, episodes, name)
            if abs(result.accuracy - rows[name]["accuracy"]) > 1e-9:
                say("table", f"seed {seed}: {name} re-evaluated at {result.accuracy:.4%}, "
                    f"its row says {rows[name]['accuracy']:.4%} (not deterministic?)")  # fmt: skip
            add_columns(columns, [result])
    wider = [m for m in models if m in WIDER and m not in columns]
    for name in wider:
        wide, _ = load_main_model(out_dir / f"{name}.pt", device)
        correct = path_outcomes(wide, splits["test"], actions=[0]).correct[:, 0].numpy()
        if "dataset_index" in columns and len(columns["dataset_index"]) != len(correct):
            raise ValueError(f"{name} was evaluated on other test images than the policies")
        columns[name] = correct.astype(np.float32)  # the split's order: dataset_index 0..N-1
    if missing or computed or wider:
        save_per_image(per_image_file, columns)
    return {"router": router, "per_image": columns}


def curve_mixture(
    columns: dict[str, np.ndarray], policies: list[dict], flops: float, kind: str = "threshold"
) -> tuple[np.ndarray, str]:
    """(N,) per-image correctness of the curve through the ``policies`` rows of ``kind``
    (``threshold``, ``router``, ``cascade``: :func:`agents.report.policy_kind`) at mean FLOPs
    ``flops`` (module docstring), and how it was read."""
    points = sorted(
        (p["relative_flops"], column_name(p["name"]))
        for p in policies
        if policy_kind(p["name"]) == kind
    )
    if not points:
        raise ValueError(f"no {kind} rows to compare with")
    xs = [x for x, _ in points]
    if flops <= xs[0]:
        return columns[points[0][1]], f"left of the curve: {points[0][1]}"
    if flops >= xs[-1]:
        return columns[points[-1][1]], f"right of the curve: {points[-1][1]}"
    upper = next(i for i, x in enumerate(xs) if x >= flops)
    (x0, low), (x1, high) = points[upper - 1], points[upper]
    weight = (x1 - flops) / (x1 - x0) if x1 > x0 else 1.0
    return weight * columns[low] + (1 - weight) * columns[high], f"{low} / {high} mixture"


def verdict(cells: list[dict[str, Any]]) -> str:
    """``better`` / ``worse`` where every seed's interval (``low``, ``high``) excludes zero on
    that side, else ``not significant``."""
    if all(c["low"] > 0 for c in cells):
        return "better"
    if all(c["high"] < 0 for c in cells):
        return "worse"
    return "not significant"


def paired_comparisons(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per compared policy and rival (threshold curve, each wider plain CNN): per seed the mean
    difference in accuracy and its 95% paired bootstrap interval, the mean ± std over seeds,
    and the verdict (``better`` / ``worse`` where every seed's interval excludes zero on that
    side, else ``not significant``)."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    names = [p["name"] for p in first["policies"] if policy_kind(p["name"]) in COMPARED]
    rivals = ["threshold", *(w for w in WIDER if w in first["per_image"])]
    out = []
    for name in names:
        for rival in rivals:
            cells = []
            for seed in seeds:
                columns, policies = per_seed[seed]["per_image"], per_seed[seed]["policies"]
                row = next(p for p in policies if p["name"] == name)
                if rival == "threshold":
                    other, how = curve_mixture(columns, policies, row["relative_flops"])
                else:
                    other, how = columns[rival], rival
                mean, low, high = paired_interval(columns[column_name(name)] - other, seed=seed)
                cells.append({"seed": seed, "mean": mean, "low": low, "high": high, "how": how})
            out.append(
                {
                    "policy": f"DynaLay {name}",  # as the table's rows name it
                    "rival": "threshold at its FLOPs" if rival == "threshold" else rival,
                    "per_seed": cells,
                    "over_seeds": mean_std([c["mean"] for c in cells]),
                    "verdict": verdict(cells),
                }
            )
    return out


def significance_markdown(comparisons: list[dict[str, Any]]) -> list[str]:
    """The comparisons as markdown lines (points of accuracy)."""
    if not comparisons:
        return []
    seeds = [c["seed"] for c in comparisons[0]["per_seed"]]
    header = " | ".join(f"seed {s}: diff [95% CI]" for s in seeds)
    lines = [
        "",
        "Paired differences on the same test images (points of accuracy; 95% paired bootstrap "
        "interval over the images, 2000 draws; the threshold curve at the policy's FLOPs is the "
        "per-image mixture of its two neighbouring tau points). Significant: every seed's "
        "interval excludes zero on the same side.",
        "",
        f"| policy | minus | {header} | mean ± std over seeds | verdict |",
        "|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for c in comparisons:
        cells = " | ".join(
            f"{100 * s['mean']:+.2f} [{100 * s['low']:+.2f}, {100 * s['high']:+.2f}]"
            for s in c["per_seed"]
        )
        spread = c["over_seeds"]
        verdict = c["verdict"] if c["verdict"] == "not significant" else f"**{c['verdict']}**"
        lines.append(
            f"| {c['policy']} | {c['rival']} | {cells} | "
            f"{100 * spread['mean']:+.2f} ± {100 * spread['std']:.2f} | {verdict} |"
        )
    return lines
