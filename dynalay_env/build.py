"""The ways to build a batched core: :func:`build_core` (data and model looked up, for the
single and the vector env faces) and :func:`sequential_core` (a given model walking a given
split in order, for evaluation)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from dynalay_env.core import DynaLayCore
from dynalay_env.data import (
    SPLITS,
    ImageSplit,
    TextSpec,
    TextSplit,
    check_holdout_unseen,
    get_spec,
    load_splits,
)
from dynalay_env.mdp import MDPConfig
from dynalay_env.models import obtain_main_model
from main_model import DynaLayNet
from main_model.distributed import resolve_device


def build_core(
    num_slots: int,
    dataset: str = "CIFAR10",
    *,
    split: str = "holdout",
    checkpoint: str | os.PathLike | None = None,
    model: DynaLayNet | None = None,
    splits: Mapping[str, ImageSplit] | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    holdout_size: int | None = None,
    data_seed: int = 0,
    seq_len: int | None = None,
    max_vocab: int | None = None,
    mdp: MDPConfig = MDPConfig(),
    max_episode_steps: int | None = None,
    sequential: bool = False,
    solver: str = "fpi",
    device: str = "auto",
    pretrain_epochs: int = 20,
    widths: tuple[int, ...] | None = None,
    pretrain_limit_minutes: float | None = None,
    progress: bool = True,
) -> DynaLayCore:
    """Load the data and the main model and build a :class:`DynaLayCore` with ``num_slots``
    (1 for the single env). The arguments are the envs' (``## Arguments`` of
    :class:`~dynalay_env.env.DynaLayEnv`), with the reward's settings as one ``mdp``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec = get_spec(dataset)
    text_options = {}
    if isinstance(spec, TextSpec):
        text_options = {"seq_len": seq_len, "max_vocab": max_vocab}
    elif seq_len is not None or max_vocab is not None:
        raise ValueError(f"seq_len and max_vocab apply to text datasets, not {spec.name}")
    if splits is None:
        splits = load_splits(spec.name, data_dir, holdout_size, data_seed, download, **text_options)
    if split not in splits:
        raise ValueError(f"splits has no {split!r} split (it has {sorted(splits)})")
    if splits[split].spec.name != spec.name:
        raise ValueError(f"splits hold {splits[split].spec.name} data, not {spec.name}")
    resolved_device = resolve_device(device)
    main_model = obtain_main_model(
        spec,
        model=model,
        checkpoint=checkpoint,
        train_split=splits.get("train"),
        pretrain_epochs=pretrain_epochs,
        widths=widths,
        device=resolved_device,
        progress=progress,
        pretrain_limit_minutes=pretrain_limit_minutes,
    )
    mismatch = splits[split].model_mismatch(main_model)  # before the holdout's row check
    if mismatch is not None:
        raise ValueError(mismatch)
    if split == "holdout":
        if checkpoint is not None:
            model_name = f"main model {checkpoint}"
        elif model is not None:
            model_name = "the given main model"
        else:
            model_name = f"the cached or shipped {spec.name} main model"
        check_holdout_unseen(main_model.provenance, splits["holdout"], model_name)
    return DynaLayCore(
        main_model,
        splits[split],
        num_slots,
        mdp=mdp,
        max_episode_steps=max_episode_steps,
        sequential=sequential,
        device=resolved_device,
        solver=solver,
    )


def sequential_core(
    model: DynaLayNet,
    split: ImageSplit | TextSplit,
    *,
    mdp: MDPConfig = MDPConfig(),
    device: torch.device | str = "cpu",
    episodes: int | None = None,
    max_slots: int = 1024,
    solver: str = "fpi",
) -> tuple[DynaLayCore, int]:
    """A core of ``model`` walking ``split`` in order (at most ``max_slots`` slots), and how many
    episodes cover the split (or ``episodes``, when fewer)."""
    count = min(episodes or len(split), len(split))
    core = DynaLayCore(
        model, split, min(count, max_slots), mdp=mdp, sequential=True, device=device, solver=solver
    )
    return core, count
