"""One constructor for the batched core, shared by the single and the vector env faces."""

from __future__ import annotations

import os
from collections.abc import Mapping

from dynalay_env.core import DynaLayCore
from dynalay_env.data import SPLITS, ImageSplit, check_holdout_unseen, get_spec, load_splits
from dynalay_env.models import obtain_main_model, resolve_device
from dynalay_env.text import TextSpec
from main_model import DynaLayNet

#: Images of the training set kept unseen by the main model, for the agent (default).


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
    alpha: float = 0.5,
    beta: float = 0.3,
    max_steps: int = 1,
    max_episode_steps: int | None = None,
    sequential: bool = False,
    solver: str = "fpi",
    penalty: str = "consecutive",
    device: str = "auto",
    pretrain_epochs: int = 20,
    widths: tuple[int, ...] | None = None,
    pretrain_limit_minutes: float | None = None,
    progress: bool = True,
) -> DynaLayCore:
    """Load the data and the main model and build a :class:`DynaLayCore` with ``num_slots``.

    Args:
        num_slots: episodes run side by side (1 for the single env).
        dataset: ``CIFAR10``, ``CIFAR100``, ``FashionMNIST``, ``MNIST`` (images, the CNN) or
            ``IMDB``, ``WikiText2`` (text, the LSTM network; :mod:`dynalay_env.text`).
        split: where episodes come from: ``holdout`` (agent training; the main model never saw
            it), ``test`` (evaluation) or ``train``.
        checkpoint: a main-model checkpoint; default: the cached pretrained one, else the one
            shipped with the package (Fashion-MNIST), else pre-train one (see
            :mod:`dynalay_env.models`).
        model: a main model object to use as is (shared with a trainer, for example).
        splits: in-memory splits ({"train", "holdout", "test"} -> ImageSplit) instead of files.
        data_dir: where to look first for the dataset files.
        download: let torchvision download the dataset when no copy is found.
        holdout_size, data_seed: size and seed of the holdout carved out of the training set
            (default size: 5000 images, or the text dataset's ``TextSpec.holdout_size``).
            A main model that trained on any holdout sample is refused (SplitOverlapError).
        seq_len, max_vocab: text only: tokens per episode (T) and the vocabulary's cap
            (defaults: the dataset's, :data:`dynalay_env.text.TEXT_DATASETS`).
        alpha, beta: reward per correct answer and weight of the compute penalty.
        max_steps: decisions per episode (1 = the thesis's one-shot choice).
        max_episode_steps: optional truncation below ``max_steps``.
        sequential: walk the split in order instead of drawing samples at random.
        solver: how loop actions run: ``fpi`` (plain per-sample iteration, the thesis's) or
            TorchDEQ's ``anderson`` / ``broyden`` (fewer iterations per loop, more overhead).
        penalty: ``consecutive`` (default) or ``layer``: what multiplies ``beta * cost`` in a
            loop's reward (see :class:`~dynalay_env.core.DynaLayCore`).
        device: ``auto`` (GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...
        pretrain_epochs, widths: how to pre-train a main model when none is cached or shipped
            (a given ``widths`` also selects the cached or shipped model: only one with them).
        pretrain_limit_minutes: refuse (``PretrainTooLongError``) a pre-training estimated to
            take longer; default ``$DYNALAY_PRETRAIN_LIMIT_MINUTES`` or 10.
        progress: print progress bars and where the model came from.
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
        alpha=alpha,
        beta=beta,
        max_steps=max_steps,
        max_episode_steps=max_episode_steps,
        sequential=sequential,
        device=resolved_device,
        solver=solver,
        penalty=penalty,
    )
