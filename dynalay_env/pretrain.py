"""Pre-train the main model for a dataset and cache it where the environments look for it.

python -m dynalay_env.pretrain --dataset FashionMNIST --epochs 20
python -m dynalay_env.pretrain --dataset CIFAR10 --download      # fetch CIFAR-10 first
"""

from __future__ import annotations

import argparse
import sys

from dynalay_env.data import DATASETS, DataNotFoundError, load_splits
from dynalay_env.models import (
    DEFAULT_WIDTHS,
    cached_model_path,
    config_for,
    pretrain_main_model,
    resolve_device,
)
from main_model import save_main_model
from main_model.train import RECIPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="CIFAR10", choices=sorted(DATASETS))
    parser.add_argument("--epochs", type=int, default=20, help="warm-up epochs (default: 20)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam peak learning rate (cosine)")
    parser.add_argument("--recipe", default="dynalay", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="where to look for the data first")
    parser.add_argument("--download", action="store_true", help="let torchvision download")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", default=None, help="default: the cache the envs read")
    args = parser.parse_args(argv)
    try:
        splits = load_splits(args.dataset, args.data_dir, download=args.download)
    except DataNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    spec = splits["train"].spec
    model = pretrain_main_model(
        splits["train"],
        epochs=args.epochs,
        config=config_for(spec, tuple(args.widths)),
        batch_size=args.batch_size,
        learning_rate=args.lr,
        recipe=args.recipe,
        seed=args.seed,
        device=resolve_device(args.device),
        eval_split=splits["test"],
    )
    path = save_main_model(
        model,
        args.output or cached_model_path(spec),
        metadata={"dataset": spec.name, "epochs": args.epochs, "seed": args.seed},
    )
    print(f"saved the pretrained {spec.name} main model to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
