"""Choose the main model's recipe on the holdout: train one model, print every path's accuracy.

What produced the holdout tables of docs/results.md ("How the recipe was chosen"), e.g.

    python bench/recipe_search.py --recipe plain --lr 1e-2
    python bench/recipe_search.py --recipe uniform --lr 1e-2 --per-group-batchnorm   # before
    python bench/recipe_search.py --recipe dynalay --lr 1e-2 --loop-settings        # + tol sweep
    python bench/recipe_search.py --recipe dynalay --lr 1e-2 --tol 3e-2 --strides 2 2 2

Real Fashion-MNIST (Debian's dataset-fashion-mnist), data seed 0: the model trains on
``--train-size`` images of the training split and is evaluated on the first ``--eval-size``
images of the 5,000-image holdout, never on the test split.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import nn

from dynalay_env.data import load_splits
from dynalay_env.models import config_for
from main_model import DynaLayNet
from main_model.paths import path_name, path_statistics
from main_model.recipes import RECIPES
from main_model.train import fit, iterate_batches

#: (tol, max_iter) pairs of ``--loop-settings``, evaluated on the trained weights.
LOOP_SETTINGS = [(1e-3, 30), (1e-2, 30), (3e-2, 30), (1e-1, 30), (1e-3, 1), (1e-3, 2), (1e-3, 3)]


def report(title: str, model: DynaLayNet, holdout, solver: str = "fpi") -> None:
    stats = path_statistics(model, iterate_batches(holdout, 500), solver=solver)
    base = model.straight_flops()
    cells = [
        f"{path_name(a)} {s['accuracy']:.2%} at {s['flops'] / base:.2f}x ({s['iterations']:.1f} it)"
        for a, s in stats.items()
    ]
    print(f"{title}: " + " | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--recipe", default="dynalay", choices=sorted(RECIPES))
    add("--epochs", type=int, default=3)
    add("--train-size", type=int, default=30000)
    add("--eval-size", type=int, default=5000, help="holdout images evaluated")
    add("--widths", type=int, nargs="+", default=[16, 32, 64])
    add("--strides", type=int, nargs="+", default=None)
    add("--lr", type=float, default=1e-2)
    add("--tol", type=float, default=1e-3)
    add("--max-iter", type=int, default=30)
    add("--contraction", type=float, default=0.8)
    add("--norm", default="batch", choices=["batch", "group"])
    add("--norm-groups", type=int, default=8)
    add("--seed", type=int, default=0)
    add(
        "--per-group-batchnorm",
        action="store_true",
        help="the previous injection norm: plain BatchNorm, recomputed per action group",
    )
    add("--loop-settings", action="store_true", help="also evaluate other tol/max_iter/solver")
    args = parser.parse_args()

    splits = load_splits("FashionMNIST", holdout_size=5000, seed=0, train_size=args.train_size)
    train, holdout = splits["train"], splits["holdout"].subset(torch.arange(args.eval_size))
    config = config_for(
        train.spec,
        tuple(args.widths),
        strides=tuple(args.strides) if args.strides else None,
        tol=args.tol,
        max_iter=args.max_iter,
        contraction=args.contraction,
        norm=args.norm,
        norm_groups=args.norm_groups,
    )
    torch.manual_seed(args.seed)
    model = DynaLayNet(config)
    if args.per_group_batchnorm:
        for block in model.blocks:
            block.inject_norm = nn.BatchNorm2d(block.inject_conv.out_channels)
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    fit(
        model,
        lambda epoch: iterate_batches(train, 64, generator),
        epochs=args.epochs,
        batches_per_epoch=-(-len(train) // 64),
        recipe=args.recipe,
        learning_rate=args.lr,
        seed=args.seed,
        on_epoch=lambda e, s: print(
            f"epoch {e}: loss {s.loss:.3f}, {s.seconds:.0f} s, "
            f"backward {s.backward_seconds / s.seconds:.0%}",
            flush=True,
        ),
    )
    print(f"trained in {time.perf_counter() - started:.0f} s")
    report(f"{args.recipe}, tol {args.tol:g}, max_iter {args.max_iter}", model, holdout)
    if args.loop_settings:
        state = model.state_dict()
        for tol, max_iter in LOOP_SETTINGS:
            variant = DynaLayNet(dataclasses.replace(config, tol=tol, max_iter=max_iter))
            variant.load_state_dict(state)
            report(f"tol {tol:g}, max_iter {max_iter}", variant.eval(), holdout)
        report(f"anderson, tol {args.tol:g}", model, holdout, solver="anderson")


if __name__ == "__main__":
    main()
