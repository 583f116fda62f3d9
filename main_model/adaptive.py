"""The deployable DynaLay classifier: the main model and its agent's policy in one torch module.

:class:`AdaptiveClassifier` answers like the environment's evaluation of a trained agent, with
no environment and no RL library: per batch of images it runs the straight pass, builds the
observation the env builds (:mod:`main_model.observation`), asks the agent's policy network
(its observation normalisation folded in) for one action per image, runs the action groups
batched (:meth:`~main_model.network.DynaLayNet.step`) and repeats up to ``max_steps`` decisions
with the env's episode logic (:func:`~main_model.observation.decide`). Greedy and deterministic:
the action with the largest probability (actor-critic agents) or Q-value (DQN).

It needs torch and ``main_model`` only. ``agents.deploy`` extracts one from a run directory
(``python run_rl.py export RUN_DIR --output dynalay.pt``); :meth:`AdaptiveClassifier.load`
reads the file back. File format (``torch.save`` of plain values and CPU tensors)::

    format            "dynalay-adaptive-classifier"      format_version  1
    main_model        a main-model checkpoint's payload (main_model.checkpoint)
    policy            {"layers": [["Linear", in, out, bias], ["Tanh"], ...],
                       "rule": "categorical" | "argmax", "state_dict": {...}}
    normalization     None or {"mean": (D,) float64, "var": (D,) float64, "clip", "epsilon"}
    max_steps         decisions per image (the run's --max-steps)
    pixel_mean/std    per-channel normalisation of [0, 1] pixels (the dataset's), or None
    class_names       list of K names, or None
    metadata          JSON-like: algo, env, alpha, beta, penalty, source run, digests
    observe_changes   True when the observation has the change values (only then written;
                      a file without it: False, the observation every older agent saw)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from main_model.checkpoint import (
    CheckpointError,
    check_main_model_payload,
    main_model_from_payload,
    main_model_payload,
    read_payload,
)
from main_model.io import atomic_save
from main_model.network import DynaLayNet
from main_model.observation import decide, observation_layout, observation_tensor
from main_model.pixels import normalize_pixels

FORMAT_NAME = "dynalay-adaptive-classifier"
FORMAT_VERSION = 1
#: How a policy's scores become an action: ``categorical`` = the most probable action of the
#: categorical distribution over the logits (PPO, A2C), ``argmax`` = the largest score (DQN).
DECISION_RULES = ("categorical", "argmax")
#: Parameter-free activations a policy MLP may use (``torch.nn`` class names).
ACTIVATIONS = ("ReLU", "Tanh", "ELU", "GELU", "SiLU", "Sigmoid", "LeakyReLU")
_REQUIRED_KEYS = ("main_model", "policy", "normalization", "max_steps")


class ObservationNormalizer(nn.Module):
    """VecNormalize's observation normalisation: ``clip((obs - mean) / sqrt(var + eps))``.

    Computed in float64 like Stable-Baselines3's numpy version (float64 statistics), then cast
    to float32 as SB3 does before its policy, so the result is bit-for-bit the same.
    """

    def __init__(self, mean: Tensor, var: Tensor, clip: float, epsilon: float) -> None:
        super().__init__()
        if mean.shape != var.shape or mean.dim() != 1:
            raise ValueError(f"mean and var must be (D,), got {mean.shape} and {var.shape}")
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("var", var.to(torch.float64))
        self.clip, self.epsilon = float(clip), float(epsilon)

    def forward(self, observations: Tensor) -> Tensor:
        """(B, D) float32 -> (B, D) float32 normalised observations."""
        scaled = (observations.double() - self.mean) / torch.sqrt(self.var + self.epsilon)
        return scaled.clamp(-self.clip, self.clip).float()

    def stats(self) -> dict[str, Any]:
        return {"mean": self.mean.cpu(), "var": self.var.cpu(), "clip": self.clip,
                "epsilon": self.epsilon}  # fmt: skip


def _build_layer(spec: Sequence[Any]) -> nn.Module:
    kind = spec[0]
    if kind == "Linear":
        _, in_features, out_features, bias = spec
        return nn.Linear(int(in_features), int(out_features), bias=bool(bias))
    if kind in ACTIVATIONS and len(spec) == 1:
        return getattr(nn, kind)()
    raise ValueError(
        f"unknown policy layer {list(spec)}: a policy is Linear layers and parameter-free "
        f"activations {ACTIVATIONS}"
    )


class PolicyNetwork(nn.Module):
    """The agent's decision network: an MLP from (normalised) observations to action scores.

    Args:
        layers: ``["Linear", in, out, bias]`` or ``[activation]`` per layer, in order.
        rule: one of :data:`DECISION_RULES`, how scores become an action.
    """

    def __init__(self, layers: Sequence[Sequence[Any]], rule: str) -> None:
        super().__init__()
        if rule not in DECISION_RULES:
            raise ValueError(f"rule must be one of {DECISION_RULES}, got {rule!r}")
        self.layers = [list(spec) for spec in layers]
        self.rule = rule
        self.net = nn.Sequential(*(_build_layer(spec) for spec in self.layers))
        linear = [m for m in self.net if isinstance(m, nn.Linear)]
        if not linear:
            raise ValueError("a policy needs at least one Linear layer")
        self.in_features, self.n_actions = linear[0].in_features, linear[-1].out_features

    def forward(self, observations: Tensor) -> Tensor:
        """(B, D) float32 -> (B, A) scores (action logits or Q-values)."""
        return self.net(observations)

    def act(self, observations: Tensor) -> Tensor:
        """(B,) int64 greedy actions."""
        scores = self(observations)
        if self.rule == "categorical":
            # SB3's deterministic action: argmax of the distribution's probabilities, computed
            # by torch's Categorical exactly as SB3 does (ties break as SB3's do).
            probs = torch.distributions.Categorical(logits=scores, validate_args=False).probs
            return probs.argmax(dim=1)
        return scores.argmax(dim=1)


@dataclass
class AdaptiveOutput:
    """What :meth:`AdaptiveClassifier.forward` decided and spent on B images.

    Attributes:
        logits: (B, K) the answer's class logits.
        actions: (B, max_steps) int64, the actions taken in order (0 = NOP, k = loop blocks
            1..k), -1 after the last decision.
        flops: (B,) int64, FLOPs spent on each image, straight pass included.
    """

    logits: Tensor
    actions: Tensor
    flops: Tensor


class AdaptiveClassifier(nn.Module):
    """A DynaLay main model and its agent: images in, answers, actions and FLOPs out.

    Args:
        model: the main model (put in eval mode and frozen).
        policy: the agent's network; its input size must be the model's observation size.
        max_steps: decisions per image before the answer is forced (the env's ``max_steps``).
        normalizer: the agent's observation normalisation, None when it had none.
        pixel_mean, pixel_std: the dataset's per-channel normalisation of [0, 1] pixels, for
            :meth:`classify_pixels` (None: only normalised images can be classified).
        class_names: the K class names, if known.
        metadata: JSON-like facts kept in the file (algorithm, alpha, beta, source run, ...).
    """

    def __init__(
        self,
        model: DynaLayNet,
        policy: PolicyNetwork,
        max_steps: int,
        normalizer: ObservationNormalizer | None = None,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        observe_changes: bool = False,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.model = model.eval().requires_grad_(False)
        self.policy = policy.eval().requires_grad_(False)
        self.normalizer = normalizer
        self.max_steps = int(max_steps)
        config = model.config
        self.observe_changes = bool(observe_changes)
        observation_size = observation_layout(model, self.observe_changes)["step_index"].stop
        problems = []
        if policy.in_features != observation_size:
            problems.append(
                f"the policy reads {policy.in_features} observation values, the main model "
                f"gives {observation_size}"
            )
        if policy.n_actions != model.n_actions:
            problems.append(
                f"the policy scores {policy.n_actions} actions, the main model has "
                f"{model.n_actions}"
            )
        if normalizer is not None and normalizer.mean.shape != (observation_size,):
            problems.append(
                f"the normalisation has {normalizer.mean.shape[0]} values, the observation "
                f"{observation_size}"
            )
        if class_names is not None and len(class_names) != config.num_classes:
            problems.append(f"{len(class_names)} class names for {config.num_classes} classes")
        if (pixel_mean is None) != (pixel_std is None) or (
            pixel_mean is not None and not len(pixel_mean) == len(pixel_std) == config.in_channels  # type: ignore[arg-type]
        ):
            problems.append(f"pixel_mean and pixel_std need {config.in_channels} values each")
        if problems:
            raise ValueError("the agent does not fit the main model: " + "; ".join(problems))
        self.pixel_mean = None if pixel_mean is None else tuple(float(v) for v in pixel_mean)
        self.pixel_std = None if pixel_std is None else tuple(float(v) for v in pixel_std)
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.metadata = dict(metadata or {})

    @torch.no_grad()
    def train(self, mode: bool = True) -> AdaptiveClassifier:
        """Inference only: the main model and the policy stay in eval mode whatever ``mode``
        (a parent's ``.train()`` must not switch BatchNorm to batch statistics and let it
        update its running statistics while classifying)."""
        super().train(mode)
        self.model.eval()
        self.policy.eval()
        return self

    def forward(self, images: Tensor) -> AdaptiveOutput:
        """Classify (B, C, H, W) normalised float images (as the dataset splits give them).

        Exactly the env's episodes, played greedily: every image is one episode, and a batch is
        N slots stepped together, so the answers, actions and FLOPs are those of
        ``agents.evaluate.run_policy`` on the same images in one wave. Images whose episode
        ended take NOP (nothing runs for them) while the others decide again.
        """
        model = self.model
        output = model.straight(images)
        state, flops = output.state, output.flops
        batch, device = state.batch_size, state.logits.device
        previous = torch.full((batch,), -1, dtype=torch.long, device=device)
        consecutive = torch.zeros(batch, dtype=torch.long, device=device)
        steps = torch.zeros(batch, dtype=torch.long, device=device)
        active = torch.ones(batch, dtype=torch.bool, device=device)
        taken = torch.full((batch, self.max_steps), -1, dtype=torch.long, device=device)
        # The answer before the last decision (the change values; none yet: the same answer).
        before = state.logits
        for step in range(self.max_steps):
            observations = observation_tensor(
                state,
                previous,
                consecutive,
                steps,
                model.n_actions,
                before if self.observe_changes else None,
            )
            if self.normalizer is not None:
                observations = self.normalizer(observations)
            actions = torch.where(active, self.policy.act(observations), 0)
            before = state.logits
            output = model.step(state, actions)
            state, flops = output.state, flops + output.flops
            taken[:, step] = torch.where(active, actions, -1)
            decision = decide(previous, consecutive, steps, actions, active, self.max_steps)
            previous, consecutive, steps = (
                decision.previous_action,
                decision.consecutive,
                decision.steps,
            )
            active = active & ~decision.ended
            # One host sync per decision, only when another decision could follow.
            if step + 1 < self.max_steps and not bool(active.any()):
                break
        return AdaptiveOutput(state.logits, taken, flops)

    def normalize(self, pixels: Tensor) -> Tensor:
        """(B, C, H, W) uint8 pixels -> normalised float images, as the dataset splits do."""
        if self.pixel_mean is None or self.pixel_std is None:
            raise ValueError("this classifier has no pixel normalisation; pass normalised images")
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.pixel_mean).view(shape)
        return normalize_pixels(pixels, mean, torch.tensor(self.pixel_std).view(shape))

    def classify_pixels(self, pixels: Tensor) -> AdaptiveOutput:
        """:meth:`forward` on (B, C, H, W) uint8 pixels of the model's size and channels."""
        return self(self.normalize(pixels.to(self.model.head.weight.device)))

    # ----- file -------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        """What :meth:`save` writes (plain values and CPU tensors; module docstring)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "main_model": main_model_payload(self.model),
            "policy": {
                "layers": self.policy.layers,
                "rule": self.policy.rule,
                "state_dict": {k: v.cpu() for k, v in self.policy.state_dict().items()},
            },
            "normalization": None if self.normalizer is None else self.normalizer.stats(),
            "max_steps": self.max_steps,
            "pixel_mean": None if self.pixel_mean is None else list(self.pixel_mean),
            "pixel_std": None if self.pixel_std is None else list(self.pixel_std),
            "class_names": self.class_names,
            "metadata": self.metadata,
            # Only when on: the files of agents without it stay as they were.
            **({"observe_changes": True} if self.observe_changes else {}),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the classifier to ``path`` in one file, atomically."""
        return atomic_save(self.payload(), path)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> AdaptiveClassifier:
        """Read a file written by :meth:`save`; :class:`CheckpointError` says what is wrong."""
        path = Path(path)
        remedy = "export it again with 'python run_rl.py export RUN_DIR --output FILE'"
        if not path.is_file():
            raise CheckpointError(f"{path} is not a file; {remedy}")
        payload = read_payload(
            path, "a readable DynaLay classifier, the file 'run_rl.py export' writes", remedy
        )
        if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
            raise CheckpointError(
                f"{path} is not a DynaLay adaptive classifier (no '{FORMAT_NAME}' format tag); "
                f"main-model checkpoints load with main_model.load_main_model, run directories "
                f"export with 'python run_rl.py export RUN_DIR --output FILE'"
            )
        version = payload.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has classifier format version {version!r}; this DynaLay reads version "
                f"{FORMAT_VERSION}: upgrade DynaLay to load a newer file, or {remedy}"
            )
        missing = [key for key in _REQUIRED_KEYS if key not in payload]
        if missing:
            raise CheckpointError(f"{path} lacks {missing}: it is incomplete; {remedy}")
        try:
            check_main_model_payload(payload["main_model"], path)
            model = main_model_from_payload(payload["main_model"], path)
            policy_part = payload["policy"]
            policy = PolicyNetwork(policy_part["layers"], policy_part["rule"])
            policy.load_state_dict(policy_part["state_dict"])
            stats = payload["normalization"]
            normalizer = None if stats is None else ObservationNormalizer(**stats)
            classifier = cls(
                model,
                policy,
                payload["max_steps"],
                normalizer,
                payload.get("pixel_mean"),
                payload.get("pixel_std"),
                payload.get("class_names"),
                payload.get("metadata"),
                observe_changes=payload.get("observe_changes", False),
            )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{path} holds an invalid classifier: {error!r}; {remedy}"
            ) from error
        return classifier.to(device)
