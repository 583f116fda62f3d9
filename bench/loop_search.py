"""Which loop pays? Train one main model per variant, read its loops on the holdout (and test).

What produced the loop tables of docs/results.md ("Loops worth their FLOPs"), e.g.

    python bench/loop_search.py --variants conv3x3 conv1x1 dwsep lowrank --out runs/loops
    python bench/loop_search.py --variants plain plain-2x conv1x1+unsure --seeds 0 1 2 --test
    python bench/loop_search.py --report --out runs/loops      # the table over seeds

A variant is a base loop operator with ``+option`` suffixes (``+feedback``, ``+jfb``,
``+phantom``, ``+hard``, ``+unsure``, ``+rank8``, ``+last``, ``+distill``, ``+jac`` (the Jacobian
regulariser, weight 1; ``+jac0.1``), ``+iter2`` (a loss after 1 and 2 iterations too),
``+share0.5`` (half of each batch takes a loop path, the rest NOP):
:func:`variant_settings`;
``+distill`` distils the loop paths from the same seed's ``plain-2x`` in ``--out``, so list
``plain-2x`` before it), or a separately
trained baseline: ``plain`` (the same network trained on its straight path only) and
``plain-2x`` (widths x1.41, about 2x the FLOPs). Every variant trains on the same
``--train-size`` images of real Fashion-MNIST (``--dataset CorruptedFashionMNIST``: the same
images occluded and cluttered, :mod:`dynalay_env.data.corruption`; data seed 0), with the same
epochs, batch,
learning rate and seed, and is read on the 5,000-image holdout: each static path's accuracy and
FLOPs (x the model's straight pass), each loop's rescued / broken counts against NOP (images
it gets right that NOP gets wrong, and the reverse), and the confidence threshold (NOP when
the top probability is >= tau, else the loop that is most accurate on the holdout). With
``--test`` the same on the 10,000 test images, whose per-image outcomes are kept (npz) for
``--report``: paired bootstrap intervals on the same test images against the line through
``plain`` and ``plain-2x``. One JSON per variant and seed in ``--out``; a rerun skips finished
ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from agents.experiments.common import paired_interval
from dynalay_env.data import load_splits
from dynalay_env.models import model_config_for
from main_model import DynaLayNet
from main_model.checkpoint import load_main_model, save_main_model
from main_model.io import write_json_atomic
from main_model.recipes import get_recipe
from main_model.train import straight_logits_of, train_main_model

#: ``+option`` suffixes: DynaLayConfig fields or recipe fields they set.
OPTIONS = {
    "feedback": {"feedback": True},
    "loophead": {"loop_readout": "head"},
    "residual": {"loop_readout": "residual"},
    "jfb": {"backward": "jfb"},
    "phantom": {"backward": "phantom"},
    "ift": {"backward": "ift"},
    "last": {"loop_order": "output"},  # loop-k loops the k blocks nearest the head
}
TAUS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


#: Separately trained baselines: (recipe, width factor). x1.41 widths give about 2x FLOPs.
BASELINES = {"plain": ("plain", 1.0), "plain-2x": ("plain", 2**0.5)}


def variant_settings(variant: str) -> tuple[dict, dict]:
    """(DynaLayConfig overrides, recipe overrides) of ``variant`` (not a baseline)."""
    base, *options = variant.split("+")
    # Options add to the plain loop of that operator (the thesis's settings), whatever today's
    # defaults are, so a variant's name says all it is.
    config = {
        "loop_operator": base,
        "feedback": False,
        "loop_readout": "shared",
        "backward": "ift",
        "loop_order": "input",
    }
    recipe = {"loop_weighting": "uniform"}
    for option in options:
        if option in OPTIONS:
            config.update(OPTIONS[option])
        elif option in ("hard", "unsure"):  # the loop loss weighted toward hard samples
            recipe["loop_weighting"] = option
        elif option == "distill":  # the loops learn half from plain-2x's soft labels, T = 4
            recipe.update(distill_weight=0.5, distill_temperature=4.0)
        elif option.startswith("rank"):
            config["loop_rank"] = int(option[4:])
        elif option.startswith("share"):  # a share of each batch loops: +share0.5
            recipe["loop_share"] = float(option[5:])
        elif option.startswith("jac"):  # Jacobian regulariser, weight 1 unless given: +jac0.1
            recipe["jacobian_weight"] = float(option[3:] or 1.0)
        elif option.startswith("iter") and option[4:].isdigit():  # loss after 1..K iterations
            recipe["iterate_losses"] = tuple(range(1, int(option[4:]) + 1))
        else:
            raise SystemExit(f"unknown option {option!r} in variant {variant!r}")
    return config, recipe


@torch.no_grad()
def read_paths(model: DynaLayNet, split, loops: bool = True, batch_size: int = 500) -> dict:
    """Per image: each path's correctness (N, n+1), FLOPs (N, n+1), NOP's top probability
    (``loops=False``: the straight path only, (N, 1): a plain baseline's loops are untrained)."""
    model.eval()
    correct, flops, confidence = [], [], []
    for start in range(0, len(split), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(split)))
        images, labels = split.normalized(rows), split.labels[rows]
        out = model.straight(images)
        confidence.append(out.state.logits.softmax(1).amax(1))
        right, spent = [out.state.logits.argmax(1) == labels], [out.flops.double()]
        for action in range(1, model.n_actions if loops else 1):
            step = model.step(out.state, torch.full((len(rows),), action))
            right.append(step.state.logits.argmax(1) == labels)
            spent.append((out.flops + step.flops).double())
        correct.append(torch.stack(right, 1))
        flops.append(torch.stack(spent, 1))
    return {
        "correct": torch.cat(correct).double(),
        "flops": torch.cat(flops) / model.straight_flops(),
        "confidence": torch.cat(confidence),
    }


def summarise(paths: dict, best: int | None = None) -> dict:
    """Static paths, rescued / broken, the threshold curve and the oracle of one split.

    ``best``: the loop the threshold takes when unsure; by default the one most accurate on
    this split, which is right for the holdout only: the test split takes the holdout's.
    """
    correct, flops, confidence = paths["correct"], paths["flops"], paths["confidence"]
    nop = correct[:, 0]
    loops = []
    for action in range(1, correct.shape[1]):
        loops.append(
            {
                "action": action,
                "accuracy": float(correct[:, action].mean()),
                "flops": float(flops[:, action].mean()),
                "rescued": int(((nop == 0) & (correct[:, action] == 1)).sum()),
                "broken": int(((nop == 1) & (correct[:, action] == 0)).sum()),
            }
        )
    if correct.shape[1] == 1:  # a plain baseline: its straight path only
        return {"images": len(nop), "nop_accuracy": float(nop.mean()), "loops": [], "threshold": []}
    if best is None:
        best = 1 + int(correct[:, 1:].mean(0).argmax())
    threshold = []
    for tau in TAUS:
        loop = confidence < tau
        threshold.append(
            {
                "tau": tau,
                "loop": best,
                "accuracy": float(torch.where(loop, correct[:, best], nop).mean()),
                "flops": float(torch.where(loop, flops[:, best], flops[:, 0]).mean()),
            }
        )
    oracle = float(correct.amax(1).mean())
    return {
        "images": len(nop),
        "nop_accuracy": float(nop.mean()),
        "loops": loops,
        "threshold": threshold,
        "oracle": oracle,
    }


def train_variant(variant: str, splits: dict, args: argparse.Namespace, seed: int):
    """(model, result dict) of ``variant`` trained with ``seed``."""
    widths = tuple(args.widths)
    if variant in BASELINES:
        recipe_name, factor = BASELINES[variant]
        recipe, overrides = get_recipe(recipe_name), {}
        widths = tuple(round(w * factor) for w in widths)
    else:
        overrides, recipe_overrides = variant_settings(variant)
        recipe = dataclasses.replace(get_recipe("dynalay"), **recipe_overrides)
    config = model_config_for(splits["train"], widths, strides=tuple(args.strides), **overrides)
    teacher = None
    if recipe.distill_weight > 0:
        teacher_path = args.out / f"plain-2x_s{seed}.pt"
        if not teacher_path.exists():
            raise SystemExit(
                f"{variant} distils from {teacher_path}, which is not there: list plain-2x "
                "before it in --variants (same --out and seed)"
            )
        teacher = straight_logits_of(load_main_model(teacher_path)[0])
    started = time.perf_counter()
    model, history = train_main_model(
        splits["train"],
        epochs=args.epochs,
        config=config,
        learning_rate=args.lr,
        recipe=recipe,
        seed=seed,
        progress=False,
        teacher=teacher,
    )
    seconds = time.perf_counter() - started
    return model, {
        "variant": variant,
        "dataset": args.dataset,
        "config": config.to_dict(),
        "recipe": dataclasses.asdict(recipe),
        "epochs": args.epochs,
        "train_size": args.train_size,
        "seed": seed,
        "straight_flops": model.straight_flops(),
        "train_seconds": round(seconds, 1),
        "backward_seconds": round(sum(h.backward_seconds for h in history), 1),
    }


def print_result(result: dict, split: str) -> None:
    h = result[split]
    loops = " | ".join(
        f"loop-{p['action']} {p['accuracy']:.2%} {p['flops']:.2f}x +{p['rescued']}/-{p['broken']}"
        for p in h["loops"]
    )
    print(
        f"{result['variant']} s{result['seed']} {split}: {result['train_seconds']:.0f} s; "
        f"NOP {h['nop_accuracy']:.2%} | {loops} | oracle {h.get('oracle', h['nop_accuracy']):.2%}",
        flush=True,
    )
    if h["loops"]:
        print(
            "  threshold: "
            + " ".join(f"{t['tau']}:{t['accuracy']:.2%}@{t['flops']:.2f}x" for t in h["threshold"]),
            flush=True,
        )


def report(out: Path) -> None:
    """Per variant over seeds (test): NOP, best loop, the threshold points against the line
    through plain and plain-2x at their FLOPs (paired bootstrap per seed, mean over seeds)."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    results = [r for r in results if "test" in r]
    by_seed: dict[int, dict[str, dict]] = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["variant"]] = r
    seeds = sorted(s for s, v in by_seed.items() if {"plain", "plain-2x"} <= set(v))
    variants = sorted({r["variant"] for r in results} - set(BASELINES))
    print(f"seeds with both baselines: {seeds}")

    def mean_std(values):
        return f"{np.mean(values):.2%} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2%}"

    for name in ("plain", "plain-2x"):
        accs = [by_seed[s][name]["test"]["nop_accuracy"] for s in seeds]
        flops = [
            by_seed[s][name]["straight_flops"] / by_seed[s]["plain"]["straight_flops"]
            for s in seeds
        ]
        print(f"| {name} | {mean_std(accs)} | {np.mean(flops):.2f}x |")
    for variant in variants:
        runs = [s for s in seeds if variant in by_seed[s]]
        if not runs:
            continue
        nop = [by_seed[s][variant]["test"]["nop_accuracy"] for s in runs]
        print(f"| {variant} NOP | {mean_std(nop)} | 1.00x |")
        n_loops = len(by_seed[runs[0]][variant]["test"]["loops"])
        for k in range(n_loops):
            accs = [by_seed[s][variant]["test"]["loops"][k]["accuracy"] for s in runs]
            flops = [by_seed[s][variant]["test"]["loops"][k]["flops"] for s in runs]
            rescued = [by_seed[s][variant]["test"]["loops"][k]["rescued"] for s in runs]
            broken = [by_seed[s][variant]["test"]["loops"][k]["broken"] for s in runs]
            print(
                f"| {variant} loop-{k + 1} | {mean_std(accs)} | {np.mean(flops):.2f}x | "
                f"+{np.mean(rescued):.0f} / -{np.mean(broken):.0f} |"
            )
        # Per seed, once: the variant's per-image outcomes and the two baselines' (plain, wide).
        outcomes = {
            s: (
                dict(np.load(out / f"{variant}_s{s}_test.npz")),  # read every array once
                np.load(out / f"plain_s{s}_test.npz")["correct"][:, 0],
                np.load(out / f"plain-2x_s{s}_test.npz")["correct"][:, 0],
                by_seed[s]["plain-2x"]["straight_flops"] / by_seed[s]["plain"]["straight_flops"],
            )
            for s in runs
        }
        # The loop the threshold takes: the one most accurate on the holdout (results written
        # before the test summary took it from there chose it on test; this re-reads it).
        chosen = {s: by_seed[s][variant]["holdout"]["threshold"][0]["loop"] for s in runs}
        for tau in TAUS:
            gaps, accs, flops = [], [], []
            for s in runs:
                arrays, plain, wide, wide_flops = outcomes[s]
                loop = arrays["confidence"] < tau
                correct = np.where(loop, arrays["correct"][:, chosen[s]], arrays["correct"][:, 0])
                spent = np.where(loop, arrays["flops"][:, chosen[s]], arrays["flops"][:, 0])
                share = (spent.mean() - 1.0) / (wide_flops - 1.0)  # where on the line
                line = (1 - share) * plain + share * wide
                gaps.append(paired_interval(correct - line, seed=s))
                accs.append(correct.mean())
                flops.append(spent.mean())
            gap = np.mean([g[0] for g in gaps])
            print(
                f"| {variant} threshold tau={tau} | {mean_std(accs)} | {np.mean(flops):.2f}x | "
                f"vs line {gap:+.2%} (per-seed 95% CIs "
                + ", ".join(f"[{g[1]:+.2%}, {g[2]:+.2%}]" for g in gaps)
                + ") |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--variants", nargs="+", default=[], help="e.g. plain conv3x3 dwsep+feedback")
    add("--out", type=Path, default=Path("runs/loop_search"))
    add("--dataset", default="FashionMNIST", help="FashionMNIST or CorruptedFashionMNIST")
    add("--epochs", type=int, default=3)
    add("--train-size", type=int, default=30000)
    add("--widths", type=int, nargs="+", default=[16, 32, 64])
    add("--strides", type=int, nargs="+", default=[2, 2, 2])
    add("--lr", type=float, default=1e-2)
    add("--seeds", type=int, nargs="+", default=[0])
    add("--test", action="store_true", help="also read the test split (for --report)")
    add("--report", action="store_true", help="print the table over seeds of --out and stop")
    add("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.report:
        report(args.out)
        return
    torch.set_num_threads(args.threads)
    splits = load_splits(args.dataset, None, train_size=args.train_size)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in args.variants:
            target = args.out / f"{variant}_s{seed}.json"
            if target.exists():
                print(f"{variant} s{seed}: done before ({target})", flush=True)
                continue
            model, result = train_variant(variant, splits, args, seed)
            loops = variant not in BASELINES
            result["holdout"] = summarise(read_paths(model, splits["holdout"], loops))
            if args.test:
                paths = read_paths(model, splits["test"], loops)
                # the threshold's loop is the one chosen on the holdout, never on test
                chosen = result["holdout"]["threshold"]  # empty for a plain baseline
                result["test"] = summarise(paths, chosen[0]["loop"] if chosen else None)
                np.savez_compressed(
                    args.out / f"{variant}_s{seed}_test.npz",
                    **{key: value.numpy() for key, value in paths.items()},
                )
            save_main_model(model, args.out / f"{variant}_s{seed}.pt")
            write_json_atomic(result, target)  # last: marks the variant done
            print_result(result, "holdout")
            if args.test:
                print_result(result, "test")


if __name__ == "__main__":
    main()
