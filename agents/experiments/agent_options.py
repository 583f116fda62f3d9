"""Which PPO options let the agent learn what its observation holds (issue 19, item 2-3).

On a finished ``run_rl.py table`` (its seeds' frozen DynaLay models, threshold curves, router
rows and per-image outcomes), retrain each seed's agent at a cost weight beta with one option
changed at a time (:data:`OPTIONS`), evaluate it greedily on the same test images, and compare
it image by image with the threshold curve and the full-information router at its FLOPs
(paired bootstrap intervals per seed, :mod:`agents.experiments.significance`):

    python run_rl.py options --table docs/results/tradeoff --betas 0.1 \\
        --out docs/results/agent_options

Each agent starts from the table's agent run at that beta (its ``config.yaml``: env, data,
budget, checkpoint and the resolved PPO arguments, which ``ent_coef=0`` and ``4x rollout``
change: no entropy bonus; 4x the steps per update and per minibatch), so the ``thesis`` option retrains exactly the table's agent and must give
its row (a check the report states). Agents with ``max_steps=2`` are also compared with the
per-step confidence cascade (loop again while unsure) on the same model: introspection judged
against its strongest rival. One run directory per seed, option and beta under ``--out``
(``run_rl.py eval`` reads each); a rerun skips what finished; ``report.md`` and
``options.json`` are rewritten from the runs at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.algorithms import load_agent_policy
from agents.config import TrainConfig, load_run_config
from agents.evaluate import PolicyResult, cascade_policy, fresh_core, run_policy
from agents.trainer import AlternatingTrainer
from main_model.distributed import resolve_device
from main_model.io import write_json_atomic

from .common import mean_std, paired_interval, say, write_text
from .evaluation import evaluation_core
from .significance import PER_IMAGE_FILE, curve_mixture, load_per_image, verdict

#: option -> the changes it makes to the table agent's TrainConfig.
OPTIONS: dict[str, Callable[[TrainConfig], dict[str, Any]]] = {
    "thesis": lambda base: {},  # the table's agent, retrained: must equal its row
    "shaping": lambda base: {"shaping": "nop"},  # reward relative to NOP (potential-based)
    "bc": lambda base: {"bc_epochs": 5},  # warm start: cloned threshold rule, then PPO
    "bc+shaping": lambda base: {"bc_epochs": 5, "shaping": "nop"},
    "4x steps": lambda base: {"total_timesteps": 4 * base.total_timesteps},
    # PPO's own settings (the run's resolved SB3 arguments, config.yaml's algo_kwargs)
    "ent_coef=0": lambda base: {"algo_kwargs": {**base.algo_kwargs, "ent_coef": 0.0}},
    "ent_coef linear": lambda base: {"ent_coef_schedule": "linear"},  # 0.01 -> 0 per phase
    "4x rollout": lambda base: {
        "algo_kwargs": {
            **base.algo_kwargs,
            "n_steps": 4 * base.algo_kwargs["n_steps"],
            "batch_size": 4 * base.algo_kwargs["batch_size"],
        }
    },
    "max_steps=2": lambda base: {"max_steps": 2},
    "max_steps=2+changes": lambda base: {"max_steps": 2, "observe_changes": True},
}
#: The cascade's thresholds (max_steps=2 agents only).
CASCADE_TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def run_name(option: str, beta: float) -> str:
    return f"{option.replace(' ', '_')}_beta_{beta:g}"


def train_option(seed_dir: Path, option: str, beta: float, out: Path) -> Path:
    """The seed's agent at ``beta`` retrained with ``option`` (skipped where it finished)."""
    run_dir = out / seed_dir.name / run_name(option, beta)
    if (run_dir / "summary.json").is_file():
        return run_dir
    base = load_run_config(seed_dir / f"agent_beta_{beta:g}")
    config = dataclasses.replace(base, **OPTIONS[option](base))
    say("agent_options", f"{seed_dir.name}: training {option} at beta={beta:g} in {run_dir}")
    AlternatingTrainer(config, run_dir).run()
    return run_dir


def evaluate_option(run_dir: Path, device) -> tuple[PolicyResult, list[PolicyResult]]:
    """The run's agent on the test split (greedy) and, for ``max_steps`` > 1, the cascade
    curve on the same core (the threshold curve's loop, chosen on the holdout)."""
    config = load_run_config(run_dir)
    core, episodes, loop = evaluation_core(config, run_dir, device, config.eval_size)
    policy = load_agent_policy(run_dir, config.algo, device)
    agent = run_policy(fresh_core(core), policy, episodes, "agent")
    cascade = []
    if config.max_steps > 1:
        for tau in CASCADE_TAUS:
            rule = cascade_policy(core.observation_layout, tau, loop)
            cascade.append(run_policy(fresh_core(core), rule, episodes, f"cascade tau={tau:g}"))
    return agent, cascade


def in_table_order(result: PolicyResult, dataset_index: np.ndarray) -> np.ndarray:
    """(N,) the result's per-image correctness in the table's ``dataset_index`` order."""
    index = result.records["dataset_index"]
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], dataset_index):
        raise ValueError(f"{result.name} was evaluated on other test images than the table")
    return result.records["correct"][order].astype(np.float64)


def compare(
    correct: np.ndarray, flops: float, columns: dict[str, np.ndarray], rows: list[dict], kind: str,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Mean difference and 95% paired interval against the ``kind`` curve at ``flops``."""
    other, how = curve_mixture(columns, rows, flops, kind)
    mean, low, high = paired_interval(correct - other, seed=seed)
    return {"mean": mean, "low": low, "high": high, "how": how}


def seed_rows(seed_dir: Path, betas, options, out: Path, device) -> list[dict]:
    """Every option's row on one seed: accuracy, FLOPs and the paired comparisons."""
    columns = load_per_image(seed_dir / PER_IMAGE_FILE)
    policies = json.loads((seed_dir / "policies.json").read_text())
    routers = json.loads((seed_dir / "router.json").read_text())["policies"]
    seed = int(seed_dir.name.removeprefix("seed"))
    rows = []
    for beta in betas:
        table_agent = next(p for p in policies if p["name"] == f"agent beta={beta:g}")
        for option in options:
            run_dir = train_option(seed_dir, option, beta, out)
            agent, cascade = evaluate_option(run_dir, device)
            correct = in_table_order(agent, columns["dataset_index"])
            flops = agent.relative_flops
            row = {
                "seed": seed,
                "beta": beta,
                "option": option,
                "run_dir": str(run_dir),
                "accuracy": agent.accuracy,
                "relative_flops": flops,
                "action_frequencies": agent.action_frequencies,
                "mean_steps": agent.mean_steps,
                "table_agent_accuracy": table_agent["accuracy"],
                "vs_threshold": compare(correct, flops, columns, policies, "threshold", seed),
                "vs_router": compare(correct, flops, columns, routers, "router", seed),
            }
            if cascade:
                cascade_columns = dict(columns)
                cascade_rows = []
                for result in cascade:
                    cascade_columns[result.name] = in_table_order(result, columns["dataset_index"])
                    cascade_rows.append(result.to_json())
                row["vs_cascade"] = compare(
                    correct, flops, cascade_columns, cascade_rows, "cascade", seed
                )
                row["cascade"] = [
                    {"name": r.name, "accuracy": r.accuracy, "relative_flops": r.relative_flops}
                    for r in cascade
                ]
            rows.append(row)
    return rows


def report(rows: list[dict], command: str) -> str:
    """The options over seeds as markdown (points of accuracy)."""
    lines = [
        "# PPO options on the table's frozen DynaLay models (test split)",
        "",
        f"`{command}`",
        "",
        "Mean ± sample std over seeds; FLOPs x the plain CNN; each comparison is the paired "
        "difference on the same test images against that curve at the agent's FLOPs (the "
        "per-image mixture of its two neighbouring points), with every seed's 95% paired "
        "bootstrap interval; significant where every seed's interval excludes zero on one side.",
        "",
        "| beta | option | accuracy (%) | FLOPs | mean steps | vs threshold | vs router "
        "| vs cascade |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["beta"], r["option"]) for r in rows))
    for beta, option in keys:
        group = [r for r in rows if (r["beta"], r["option"]) == (beta, option)]

        def cell(key: str, group: list[dict] = group) -> str:
            cells = [r[key] for r in group if key in r]
            if not cells:
                return ""
            spread = mean_std([c["mean"] for c in cells])
            intervals = ", ".join(f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]" for c in cells)
            result = verdict(cells)
            shown = result if result == "not significant" else f"**{result}**"
            return f"{100 * spread['mean']:+.2f} ({intervals}) {shown}"

        accuracy = mean_std([r["accuracy"] for r in group])
        flops = mean_std([r["relative_flops"] for r in group])
        steps = np.mean([r["mean_steps"] for r in group])
        lines.append(
            f"| {beta:g} | {option} | {100 * accuracy['mean']:.2f} ± {100 * accuracy['std']:.2f} "
            f"| {flops['mean']:.2f}x | {steps:.2f} | {cell('vs_threshold')} | {cell('vs_router')} "
            f"| {cell('vs_cascade')} |"
        )
    thesis = [r for r in rows if r["option"] == "thesis"]
    if thesis:
        same = all(abs(r["accuracy"] - r["table_agent_accuracy"]) < 1e-9 for r in thesis)
        lines += [
            "",
            "The `thesis` rows retrain the table's agents from their recorded settings: "
            + (
                "each equals its table row exactly."
                if same
                else "they differ from the table's rows ("
                + ", ".join(
                    f"seed {r['seed']}: {r['accuracy']:.4f} vs {r['table_agent_accuracy']:.4f}"
                    for r in thesis
                )
                + "): training is not deterministic here."
            ),
        ]
    return "\n".join(lines) + "\n"


def options_main(argv: list[str]) -> int:
    """``run_rl.py options``: train what is missing, evaluate, write the report."""
    parser = argparse.ArgumentParser(prog="run_rl.py options", description=__doc__.split("\n")[0])
    parser.add_argument("--table", type=Path, default=Path("docs/results/tradeoff"))
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1])
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--out", type=Path, default=Path("runs/agent_options"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    seed_dirs = sorted(p for p in args.table.glob("seed*") if (p / "per_image.npz").is_file())
    if not seed_dirs:
        parser.error(f"{args.table} holds no finished table seed (seedN/per_image.npz)")
    for seed_dir in seed_dirs:
        for beta in args.betas:
            if not (seed_dir / f"agent_beta_{beta:g}" / "config.yaml").is_file():
                parser.error(f"{seed_dir} has no agent at beta={beta:g} to start from")
    device = resolve_device(args.device)
    rows = []
    for seed_dir in seed_dirs:
        rows += seed_rows(seed_dir, args.betas, args.options, args.out, device)
    command = "python run_rl.py options " + " ".join(argv)
    write_json_atomic({"command": command, "rows": rows}, args.out / "options.json")
    write_text(args.out / "report.md", report(rows, command))
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(options_main(sys.argv[1:]))
