"""The configuration of an FPI network: :class:`DynaLayConfig` (the image network) and what every
FPI network's config shares (:class:`FPIConfig`), with the choices they check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from main_model.fpi import BACKWARDS, NORMS
from main_model.loop_operators import LOOP_OPERATORS, SPECTRAL_NORMS

#: How a loop step's logits are read out (``DynaLayConfig.loop_readout``).
LOOP_READOUTS = ("shared", "head", "residual")
#: Which blocks loop-k loops (``DynaLayConfig.loop_order``): the k nearest the input (the
#: thesis: blocks 1..k) or the k nearest the head (blocks n-k+1..n).
LOOP_ORDERS = ("input", "output")
#: The thesis's loop (a full 3x3 conv, no feedback, the shared head, exact implicit backward,
#: loop-k = blocks 1..k): ``DynaLayConfig(**THESIS_LOOP, ...)`` reproduces it.
THESIS_LOOP = {
    "loop_operator": "conv3x3",
    "backward": "ift",
    "feedback": False,
    "loop_readout": "shared",
    "loop_order": "input",
}


class FPIConfig:
    """What the configs of every FPI network share (a frozen dataclass subclasses it): the
    checks of the widths and the loops' settings, the block count and the dict round trip."""

    widths: tuple[int, ...]
    contraction: float
    tol: float
    max_iter: int
    backward_tol: float
    backward_max_iter: int
    #: A class default, not a field, for configs that do not offer the choice (the sequence
    #: network's): loop-k loops blocks 1..k. DynaLayConfig makes it a field.
    loop_order: str = "input"

    def _fpi_problems(self) -> list[str]:
        """What is wrong with the widths and the loop settings (empty when nothing)."""
        problems = []
        if not self.widths or min(self.widths) < 1:
            problems.append(f"widths must be a non-empty list of positive ints, got {self.widths}")
        if not 0.0 < self.contraction < 1.0:
            problems.append(f"contraction must be in (0, 1), got {self.contraction}")
        if self.max_iter < 1 or self.backward_max_iter < 1:
            problems.append("max_iter and backward_max_iter must be >= 1")
        if self.tol <= 0 or self.backward_tol <= 0:
            problems.append("tol and backward_tol must be > 0")
        if self.loop_order not in LOOP_ORDERS:
            problems.append(f"loop_order must be one of {LOOP_ORDERS}, got {self.loop_order!r}")
        return problems

    @property
    def n_blocks(self) -> int:
        return len(self.widths)

    def to_dict(self) -> dict:
        return asdict(self)

    #: Values of fields added after checkpoints were first written, for a saved config that
    #: lacks them (what those checkpoints were trained with, not today's defaults).
    LEGACY_DEFAULTS: dict[str, Any] = {}

    @classmethod
    def parse_changes(cls, items: Sequence[str]) -> dict[str, Any]:
        """``["feedback=false", "loop_order=output"]`` as field values (a command line's
        ``--set FIELD=VALUE``): plain-typed fields only, a clear ValueError otherwise."""
        plain = {
            f.name: type(f.default)
            for f in fields(cls)
            if type(f.default) in (bool, int, float, str)
        }
        changes: dict[str, Any] = {}
        for item in items:
            name, equals, value = item.partition("=")
            if not equals or name not in plain:
                raise ValueError(
                    f"{item!r}: expected FIELD=VALUE with FIELD one of {sorted(plain)}"
                )
            kind = plain[name]
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"{item!r}: {name} is true or false")
                changes[name] = value.lower() in ("true", "1")
            else:
                try:
                    changes[name] = kind(value)
                except ValueError:
                    raise ValueError(f"{item!r}: {name} must be a {kind.__name__}") from None
        return changes

    @classmethod
    def from_dict(cls, values: dict) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**{**cls.LEGACY_DEFAULTS, **values})


@dataclass(frozen=True)
class DynaLayConfig(FPIConfig):
    """Everything needed to rebuild a :class:`DynaLayNet` (saved in every checkpoint).

    Attributes:
        in_channels: image channels (3 for CIFAR, 1 for MNIST-like).
        image_size: side of the square input image in pixels.
        num_classes: number of classes of the head.
        widths: channels of each FPI block; its length is the number of blocks n.
        strides: stride of each block's injection conv (default: 1 for the first, 2 after).
        contraction: bound gamma < 1 on the operator norm of each block's loop conv W.
        norm: normalisation of each block's injection: ``batch`` (BatchNorm with the straight
            pass's statistics shared by every path) or ``group`` (GroupNorm, per sample).
        norm_groups: GroupNorm groups (at most) when ``norm="group"``.
        spectral_norm: how each loop conv's operator norm is bounded: ``fft`` (a guaranteed
            upper bound, so the contraction holds during training too) or ``power`` (power
            iteration, from below; what checkpoints written before ``fft`` existed used).
        tol: relative-residual tolerance that ends a loop.
        max_iter: most applications of f one loop may spend per block.
        backward_tol: relative tolerance of the implicit-backward adjoint solve.
        backward_max_iter: iteration cap of the implicit-backward adjoint solve.
        loop_operator: the loop map W of every block (:data:`~main_model.loop_operators.LOOP_OPERATORS`):
            ``conv3x3`` (a full 3x3 conv, FFT bound), ``conv1x1``, ``dwsep`` (depthwise 3x3
            then 1x1) or ``lowrank`` (1x1 of rank ``loop_rank``).
        loop_rank: rank of a ``lowrank`` loop (0: a quarter of the block's channels).
        backward: the gradient through a fixed point: ``ift`` (exact implicit), ``phantom``
            (``phantom_steps`` damped steps with factor ``phantom_tau``) or ``jfb``
            (Jacobian-free: one step).
        feedback: a loop also sees the class probabilities the network concluded before the
            step (top-down feedback, :class:`~main_model.fpi.FPIBlock`).
        loop_readout: how a loop step's logits are read out (:data:`LOOP_READOUTS`):
            ``shared`` (the head, as the straight pass), ``head`` (a linear head of the loop's
            own) or ``residual`` (the logits before the step plus a correction by the loop's
            own head, zero at initialisation: with ``max_steps`` 1 the loop learns what the
            straight pass got wrong, a boosting stage; the K additions are not counted).
        loop_order: which blocks loop-k loops (:data:`LOOP_ORDERS`): ``input`` (blocks 1..k,
            the thesis; every later block is re-run, so any loop costs about one more straight
            pass) or ``output`` (the k blocks nearest the head; the blocks before them keep
            the state they have, so loop-1 costs only the last block's iterations and the head).
    """

    #: Checkpoints written before the loop fields existed were trained with the thesis's loop.
    LEGACY_DEFAULTS = THESIS_LOOP

    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10
    widths: tuple[int, ...] = (64, 128, 256)
    strides: tuple[int, ...] | None = None
    contraction: float = 0.8
    norm: str = "batch"
    norm_groups: int = 8
    spectral_norm: str = "fft"
    # Measured on the Fashion-MNIST holdout (docs/results.md): tol 3e-2 stops loops after about
    # 2 iterations instead of 4 (1e-3) with the same accuracy, 40% fewer FLOPs for loop-3.
    tol: float = 3e-2
    max_iter: int = 30
    backward_tol: float = 1e-6
    backward_max_iter: int = 60
    # The loop measured best on the Fashion-MNIST holdout and test over 3 seeds (docs/results.md,
    # "Loops worth their FLOPs"): a 1x1 loop that sees the straight prediction and corrects its
    # logits. The thesis's loop: THESIS_LOOP.
    loop_operator: str = "conv1x1"
    loop_rank: int = 0
    backward: str = "ift"
    phantom_steps: int = 5
    phantom_tau: float = 0.5
    feedback: bool = True
    loop_readout: str = "residual"
    loop_order: str = "input"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        strides = self.strides or (1,) + (2,) * (len(self.widths) - 1)
        object.__setattr__(self, "strides", tuple(int(s) for s in strides))
        problems = self._fpi_problems()
        if len(self.strides) != len(self.widths):
            problems.append(f"strides {self.strides} must have one entry per width {self.widths}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.spectral_norm not in SPECTRAL_NORMS:
            problems.append(
                f"spectral_norm must be one of {SPECTRAL_NORMS}, got {self.spectral_norm!r}"
            )
        if self.norm_groups < 1:
            problems.append(f"norm_groups must be >= 1, got {self.norm_groups}")
        if self.loop_operator not in LOOP_OPERATORS:
            problems.append(
                f"loop_operator must be one of {LOOP_OPERATORS}, got {self.loop_operator!r}"
            )
        if self.loop_rank < 0 or self.loop_rank > min(self.widths or (0,)):
            problems.append(
                f"loop_rank must be in [0, {min(self.widths or (0,))}] (0: a quarter of each "
                f"block's channels), got {self.loop_rank}"
            )
        if self.loop_readout not in LOOP_READOUTS:
            problems.append(
                f"loop_readout must be one of {LOOP_READOUTS}, got {self.loop_readout!r}"
            )
        if self.backward not in BACKWARDS:
            problems.append(f"backward must be one of {BACKWARDS}, got {self.backward!r}")
        if self.phantom_steps < 1 or not 0.0 < self.phantom_tau <= 1.0:
            problems.append(
                f"phantom_steps must be >= 1 and phantom_tau in (0, 1], got "
                f"{self.phantom_steps}, {self.phantom_tau}"
            )
        if self.in_channels < 1 or self.image_size < 1 or self.num_classes < 2:
            problems.append("in_channels, image_size must be >= 1 and num_classes >= 2")
        if problems:
            raise ValueError("invalid DynaLayConfig: " + "; ".join(problems))
