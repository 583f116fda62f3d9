"""Deploy a trained run: one file with the main model and the agent, and a command to use it.

    python run_rl.py export RUN_DIR --output dynalay.pt     # main model + agent, one file
    python run_rl.py export SEED_DIR --router-beta 0.01     # a table's router instead
    python run_rl.py predict dynalay.pt IMAGE [IMAGE ...]   # label, confidence, action, FLOPs

The SB3 side lives here: :func:`classifier_from_run` takes the run's final main model, agent
and observation statistics once (nothing unpickled: :func:`agents.algorithms.load_saved_agent`)
and folds them into a :class:`~main_model.adaptive.
AdaptiveClassifier`, which needs only torch and ``main_model`` from then on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from torch import nn
from torchvision.io import ImageReadMode
from torchvision.transforms.v2 import functional as image_functional

from agents.algorithms import load_saved_agent
from agents.config import load_run_config
from agents.files import MODEL_FILE, RunFileError, final_checkpoints
from agents.normalization import NormalizerState
from agents.router import SavedRouter, router_classifier
from dynalay_env.data import get_spec
from dynalay_env.registry import dataset_of
from main_model import CheckpointError, DynaLayNet, load_main_model
from main_model.adaptive import (
    ACTIVATIONS,
    AdaptiveClassifier,
    ObservationNormalizer,
    PolicyNetwork,
)
from main_model.checkpoint import state_digest
from main_model.paths import path_name


# ----- extraction -----------------------------------------------------------------------------
def _layer_spec(module: nn.Module) -> list:
    """``["Linear", in, out, bias]`` or ``[activation]`` for one layer of an SB3 MLP."""
    if isinstance(module, nn.Linear):
        return ["Linear", module.in_features, module.out_features, module.bias is not None]
    name = type(module).__name__
    # An activation with non-default settings (e.g. LeakyReLU's slope) would not rebuild.
    if name in ACTIVATIONS and module.extra_repr() == getattr(nn, name)().extra_repr():
        return [name]
    raise ValueError(
        f"the agent's network has a {module!r} layer; export supports MlpPolicy networks "
        f"(Linear layers and the activations {ACTIVATIONS} with their default settings)"
    )


def _check_flat_features(extractor: nn.Module, observation_space: spaces.Space) -> None:
    if not isinstance(extractor, FlattenExtractor) or not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"export supports MlpPolicy agents on the flat DynaLay observation, not a "
            f"{type(extractor).__name__} over {observation_space}"
        )


def policy_from_agent(agent: BaseAlgorithm) -> PolicyNetwork:
    """The agent's greedy decision network as a plain torch module, weights copied.

    PPO/A2C (``ActorCriticPolicy``): ``mlp_extractor.policy_net`` then ``action_net``, the
    action logits, and the most probable action. DQN: ``q_net``, the Q-values, and the largest.
    SB3 feeds a float32 Box observation unscaled through a ``FlattenExtractor`` (identity on
    (B, D)), so the observation goes straight into the first layer.
    """
    policy = agent.policy
    if not isinstance(policy.action_space, spaces.Discrete):
        raise ValueError(f"the agent's action space must be Discrete, got {policy.action_space}")
    if isinstance(policy, ActorCriticPolicy):
        _check_flat_features(policy.pi_features_extractor, policy.observation_space)
        modules = [*policy.mlp_extractor.policy_net, policy.action_net]
        rule = "categorical"
    elif isinstance(agent, DQN):
        q_network = policy.q_net
        _check_flat_features(q_network.features_extractor, policy.observation_space)
        modules, rule = list(q_network.q_net), "argmax"
    else:
        raise ValueError(f"cannot export a {type(agent).__name__} agent: PPO, A2C or DQN only")
    network = PolicyNetwork([_layer_spec(m) for m in modules], rule)
    for copy, original in zip(network.net, modules, strict=True):
        copy.load_state_dict(original.state_dict())
    return network.cpu()


def normalizer_from(stats: NormalizerState) -> ObservationNormalizer | None:
    """VecNormalize's observation statistics as a torch module (None when it leaves them)."""
    if not stats.norm_obs:
        return None
    running = stats.obs_rms
    return ObservationNormalizer(
        torch.as_tensor(running.mean, dtype=torch.float64),
        torch.as_tensor(running.var, dtype=torch.float64),
        clip=stats.clip_obs,
        epsilon=stats.epsilon,
    )


def class_names_of(dataset: str) -> list[str] | None:
    """The dataset's class names where torchvision knows them without its files."""
    names = getattr(
        getattr(torchvision.datasets, get_spec(dataset).torchvision_class), "classes", None
    )
    return list(names) if isinstance(names, list) else None


def classifier_from_run(run_dir: Path) -> AdaptiveClassifier:
    """The run's final main model and agent as one :class:`AdaptiveClassifier` (on the CPU)."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    folder = final_checkpoints(run_dir)
    model, _ = load_main_model(folder / MODEL_FILE)
    if not isinstance(model, DynaLayNet):
        raise ValueError(
            f"{run_dir} trained a {type(model).__name__} on {config.env}: export supports the "
            f"image networks (DynaLayNet) only"
        )
    agent, stats = load_saved_agent(folder, config, device="cpu", model=model)
    normalizer = None if stats is None else normalizer_from(stats)
    dataset = dataset_of(config.env)
    spec = get_spec(dataset)
    metadata = {
        "algo": config.algo,
        "env": config.env,
        "dataset": dataset,
        "alpha": config.alpha,
        "beta": config.beta,
        "penalty": config.penalty,
        "run_dir": str(run_dir),
        "checkpoints": str(folder),
        "main_model_digest": state_digest(model),
    }
    return AdaptiveClassifier(
        model,
        policy_from_agent(agent),
        config.max_steps,
        normalizer,
        pixel_mean=spec.mean,
        pixel_std=spec.std,
        class_names=class_names_of(dataset),
        metadata=metadata,
        observe_changes=config.observe_changes,
    )


#: What a table's seed directory holds for :func:`classifier_from_router` (``run_rl.py table``).
TABLE_MODEL, TABLE_ROUTER, TABLE_CONFIG = "dynalay.pt", "router.pt", "table_config.json"


def classifier_from_router(
    seed_dir: Path, beta: float, dataset: str | None = None
) -> AdaptiveClassifier:
    """A ``run_rl.py table`` seed directory's DynaLay model and full-information router (its
    fit on the holdout, :mod:`agents.router`) at cost weight ``beta`` as one classifier.

    ``dataset``: the images' dataset (pixel normalisation, class names); by default the env of
    the table's ``table_config.json`` in the directory above ``seed_dir``.
    """
    seed_dir = Path(seed_dir)
    for name in (TABLE_MODEL, TABLE_ROUTER):
        if not (seed_dir / name).is_file():
            raise FileNotFoundError(
                f"{seed_dir / name} is missing: --router-beta exports from a 'run_rl.py table' "
                f"seed directory (e.g. docs/results/tradeoff/seed0), which holds {TABLE_MODEL} "
                f"and {TABLE_ROUTER}"
            )
    if dataset is None:
        table_config = seed_dir.parent / TABLE_CONFIG
        if not table_config.is_file():
            raise FileNotFoundError(
                f"{table_config} is missing, so the dataset is unknown: pass --dataset"
            )
        dataset = dataset_of(json.loads(table_config.read_text())["env"])
    spec = get_spec(dataset)
    model, _ = load_main_model(seed_dir / TABLE_MODEL)
    router = SavedRouter.load(seed_dir / TABLE_ROUTER)
    metadata = {
        "dataset": dataset,
        "run_dir": str(seed_dir),
        "main_model_digest": state_digest(model),
    }
    return router_classifier(
        model,
        router.fit,
        router.alpha,
        beta,
        router.cost,
        pixel_mean=spec.mean,
        pixel_std=spec.std,
        class_names=class_names_of(dataset),
        metadata=metadata,
    )


# ----- images ---------------------------------------------------------------------------------
class ImageError(ValueError):
    """An image file is missing or unreadable; the message names it."""


def read_images(
    paths: Sequence[str | Path], channels: int, size: int
) -> tuple[torch.Tensor, list[str]]:
    """(B, channels, size, size) uint8 pixels of image files, and a warning per resized one.

    PNG, JPEG, GIF or WebP, converted to gray (1 channel) or RGB (3) and resized (antialiased)
    to ``size`` x ``size`` when they differ. Raises :class:`ImageError` naming every bad path.
    """
    mode = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}.get(channels)
    if mode is None:
        raise ValueError(f"images with {channels} channels cannot be read from files")
    images, warnings, problems = [], [], []
    for path in map(Path, paths):
        if not path.is_file():
            problems.append(f"{path}: no such file")
            continue
        try:
            image = torchvision.io.decode_image(str(path), mode=mode)
        except (RuntimeError, ValueError) as error:
            problems.append(f"{path}: not a readable image ({error})")
            continue
        height, width = image.shape[1:]
        if (height, width) != (size, size):
            warnings.append(
                f"{path} is {width}x{height} pixels, resized to the model's {size}x{size}"
            )
            image = image_functional.resize(image, [size, size], antialias=True)
        images.append(image)
    if problems:
        raise ImageError("cannot classify: " + "; ".join(problems))
    return torch.stack(images), warnings


# ----- command line ---------------------------------------------------------------------------
def export_main(argv: list[str]) -> int:
    """``run_rl.py export RUN_DIR --output FILE``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py export",
        description="Write a finished run's main model and agent (with its observation "
        "normalisation) as one file that torch and DynaLay's main_model load without "
        "Stable-Baselines3: AdaptiveClassifier.load(FILE), or 'run_rl.py predict FILE IMAGE'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("run_dir", help="a finished run directory (or, with --router-beta, a "
                        "'run_rl.py table' seed directory)")  # fmt: skip
    parser.add_argument("--output", default="dynalay.pt", help="the file to write")
    parser.add_argument(
        "--router-beta",
        type=float,
        default=None,
        help="export the table's full-information router at this cost weight instead of an "
        "agent (RUN_DIR: a table's seed directory, with dynalay.pt and router.pt)",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="with --router-beta: the dataset (default: the env of ../table_config.json)",
    )
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if args.router_beta is not None:
        if args.router_beta < 0:
            parser.error(f"--router-beta must be >= 0, got {args.router_beta}")
        try:
            classifier = classifier_from_router(run_dir, args.router_beta, args.dataset)
        except (FileNotFoundError, CheckpointError, KeyError, ValueError) as error:
            print(f"run_rl.py export: {error}", file=sys.stderr)
            return 2
        path = classifier.save(args.output)
        print(
            f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): main model "
            f"{'/'.join(map(str, classifier.model.config.widths))} on "
            f"{classifier.metadata['dataset']}, full-information router (alpha "
            f"{classifier.metadata['alpha']:g}, beta {args.router_beta:g}, one decision per "
            f"image) from {run_dir}"
        )
        return 0
    if not (run_dir / "config.yaml").is_file():
        parser.error(f"{run_dir / 'config.yaml'} is missing; is {run_dir} a run directory?")
    try:
        classifier = classifier_from_run(run_dir)
    except (FileNotFoundError, CheckpointError, RunFileError, ValueError) as error:
        print(f"run_rl.py export: {error}", file=sys.stderr)
        return 2
    path = classifier.save(args.output)
    model = classifier.model
    print(
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): main model "
        f"{'/'.join(map(str, model.config.widths))} on {classifier.metadata['dataset']}, "
        f"{classifier.metadata['algo']} agent (beta {classifier.metadata['beta']:g}, max_steps "
        f"{classifier.max_steps}, observation normalisation "
        f"{'on' if classifier.normalizer is not None else 'off'}) from {run_dir}"
    )
    return 0


def describe(classifier: AdaptiveClassifier, paths: Sequence[str], output) -> list[dict]:
    """One JSON-like record per image of an :class:`~main_model.adaptive.AdaptiveOutput`."""
    probabilities = torch.softmax(output.logits.float(), dim=1)
    confidence, labels = probabilities.max(dim=1)
    plain = classifier.model.straight_flops()
    records = []
    for row, path in enumerate(paths):
        label = int(labels[row])
        actions = [int(a) for a in output.actions[row] if a >= 0]
        records.append(
            {
                "image": str(path),
                "label": label,
                "class_name": None if classifier.class_names is None
                else classifier.class_names[label],
                "confidence": float(confidence[row]),
                "actions": actions,
                "action_names": [path_name(a) for a in actions],
                "flops": int(output.flops[row]),
                "relative_flops": int(output.flops[row]) / plain,
            }
        )  # fmt: skip
    return records


def predict_main(argv: list[str]) -> int:
    """``run_rl.py predict FILE IMAGE...``; returns the exit code (2 for bad files)."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py predict",
        description="Classify image files with an exported DynaLay classifier (run_rl.py "
        "export): label, class name, confidence, the agent's actions and the FLOPs spent, per "
        "image. Images are converted to the model's channels and resized to its input size "
        "(with a warning) and normalised as its dataset was.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("classifier", help="a file written by 'run_rl.py export'")
    parser.add_argument("images", nargs="+", help="PNG or JPEG files")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    try:
        classifier = AdaptiveClassifier.load(args.classifier, args.device)
        config = classifier.model.config
        pixels, warnings = read_images(args.images, config.in_channels, config.image_size)
        output = classifier.classify_pixels(pixels)
    except (CheckpointError, ImageError, ValueError) as error:
        print(f"run_rl.py predict: {error}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    records = describe(classifier, args.images, output)
    if args.json:
        print(json.dumps({"classifier": str(args.classifier), "predictions": records}, indent=2))
        return 0
    for record in records:
        name = "" if record["class_name"] is None else f" {record['class_name']!r}"
        print(
            f"{record['image']}: label {record['label']}{name}, confidence "
            f"{record['confidence']:.3f}, actions {' then '.join(record['action_names'])}, "
            f"{record['flops']:,} FLOPs ({record['relative_flops']:.2f}x the plain CNN)"
        )
    return 0
