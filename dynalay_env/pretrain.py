"""Pre-train the main model for a dataset and cache it where the environments look for it.

python -m dynalay_env.pretrain --dataset FashionMNIST --epochs 20
python -m dynalay_env.pretrain --dataset CIFAR10 --download      # fetch CIFAR-10 first
python -m dynalay_env.pretrain --dataset WikiText2 --data-dir ../shared/data --epochs 2

Beside the checkpoint it writes ``<output>.json``: the command, the training settings, the
model's digest and every path's accuracy, loss and FLOPs on the test split (how the model that
ships with the package is documented; see ``dynalay_env/shipped/``).
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time

import torch

from dynalay_env.data import (
    DATASETS,
    DEFAULT_IMAGE_HOLDOUT,
    TEXT_DATASETS,
    DataNotFoundError,
    load_splits,
)
from dynalay_env.models import (
    DEFAULT_TEXT_WIDTHS,
    DEFAULT_WIDTHS,
    cached_model_path,
    model_config_for,
)
from main_model import DynaLayConfig, DynaLaySeqConfig, save_main_model
from main_model.checkpoint import state_digest
from main_model.distributed import resolve_device
from main_model.io import write_json_atomic
from main_model.paths import path_name, path_statistics
from main_model.recipes import RECIPES
from main_model.train import iterate_batches, train_main_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="CIFAR10", choices=sorted(DATASETS | TEXT_DATASETS))
    parser.add_argument("--epochs", type=int, default=20, help="warm-up epochs (default: 20)")
    parser.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=None,
        help=f"default: {' '.join(map(str, DEFAULT_WIDTHS))} (images), "
        f"{' '.join(map(str, DEFAULT_TEXT_WIDTHS))} (text: LSTM hidden sizes)",
    )
    parser.add_argument(
        "--strides",
        type=int,
        nargs="+",
        default=None,
        help="default: 1 for the first block, 2 after",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="other main-model settings (DynaLayConfig fields), e.g. loop_order=output",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam peak learning rate (cosine)")
    parser.add_argument("--recipe", default="dynalay", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-size", type=int, default=None, help="train on this many images (default: all)"
    )
    parser.add_argument(
        "--holdout-size",
        type=int,
        default=None,
        help=f"default: {DEFAULT_IMAGE_HOLDOUT} images, or the text dataset's",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="seeds the holdout split")
    parser.add_argument("--data-dir", default=None, help="where to look for the data first")
    parser.add_argument("--download", action="store_true", help="let torchvision download")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default=None, help="default: the cache the envs read")
    args = parser.parse_args(argv)
    text = args.dataset in TEXT_DATASETS
    try:
        changes = (DynaLaySeqConfig if text else DynaLayConfig).parse_changes(args.set)
    except ValueError as error:
        parser.error(f"--set {error}")
    # what the data fixes (shapes, classes, vocabulary) comes from the dataset, not from --set
    fixed = {"in_channels", "image_size", "num_classes", "vocab_size", "seq_len", "task"}
    if fixed & set(changes):
        parser.error(f"--set: {sorted(fixed & set(changes))} come from the dataset, not --set")
    try:
        splits = load_splits(
            args.dataset,
            args.data_dir,
            args.holdout_size,  # None: the dataset's default
            args.data_seed,
            args.download,
            train_size=args.train_size,
        )
    except DataNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    spec = splits["train"].spec
    device = resolve_device(args.device)
    try:
        config = model_config_for(splits["train"], args.widths, strides=args.strides, **changes)
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    model, history = train_main_model(
        splits["train"],
        epochs=args.epochs,
        config=config,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        recipe=args.recipe,
        seed=args.seed,
        device=device,
    )
    training_seconds = time.perf_counter() - started
    test = path_statistics(model, iterate_batches(splits["test"].to(device), 256))
    straight_flops = test[0]["flops"]
    for action, stats in test.items():
        print(
            f"{path_name(action)}: test accuracy {100 * stats['accuracy']:.2f}%"
            + (f", perplexity {math.exp(stats['loss']):.1f}" if text else "")
            + f", {stats['flops'] / straight_flops:.2f}x the straight pass's FLOPs",
            file=sys.stderr,
        )
    path = save_main_model(
        model,
        args.output or cached_model_path(spec),
        metadata={"dataset": spec.name, "epochs": args.epochs, "seed": args.seed},
    )
    write_json_atomic(
        {
            "command": "python -m dynalay_env.pretrain "
            + shlex.join(sys.argv[1:] if argv is None else argv),
            "dataset": spec.name,
            "settings": {k: v for k, v in vars(args).items() if k not in ("output", "download")},
            "config": model.config.to_dict(),
            "state_digest": state_digest(model),
            "training_images": len(splits["train"]),
            "training_seconds": round(training_seconds, 1),
            "epoch_seconds": [round(epoch.seconds, 1) for epoch in history],
            "machine": f"{platform.machine()} {device.type}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads",
            "test": {
                path_name(action): {
                    "accuracy": stats["accuracy"],
                    "loss": stats["loss"],
                    "flops": stats["flops"],
                    "relative_flops": stats["flops"] / straight_flops,
                    "iterations": stats["iterations"],
                }
                for action, stats in test.items()
            },
        },
        path.with_suffix(".json"),
    )
    print(f"saved the pretrained {spec.name} main model to {path} (provenance beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
