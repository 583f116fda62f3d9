"""What a DynaLay network carries between steps: its per-sample state and one step's output."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Per-position predictions show their this many largest probabilities (NetState.class_probabilities).
TOP_PROBABILITIES = 8


@dataclass
class NetState:
    """Per-sample state of the network on a batch of B inputs (n blocks, K classes).

    Attributes:
        z: n tensors (B, C_l, H_l, W_l), the current output of each block.
        injection: n tensors (B, C_l, H_l, W_l), each block's input injection u_l.
        logits: (B, K) the current prediction.
        residual: (B, n) last relative FPI residual of each block (1.0 after a straight pass,
            which is one step from z = 0; ``inf`` where a loop diverged).
    """

    z: tuple[Tensor, ...]
    injection: tuple[Tensor, ...]
    logits: Tensor
    residual: Tensor

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]

    def select(self, index: Tensor) -> NetState:
        """The sub-state of the samples at ``index`` (1-D long tensor)."""
        return NetState(
            z=tuple(t.index_select(0, index) for t in self.z),
            injection=tuple(t.index_select(0, index) for t in self.injection),
            logits=self.logits.index_select(0, index),
            residual=self.residual.index_select(0, index),
        )

    def clone(self) -> NetState:
        return NetState(
            z=tuple(t.clone() for t in self.z),
            injection=tuple(t.clone() for t in self.injection),
            logits=self.logits.clone(),
            residual=self.residual.clone(),
        )

    def put_rows_(self, index: Tensor, part: NetState) -> NetState:
        """In place: rows ``index`` of this state become the rows of ``part``; returns self."""
        pairs = [
            *zip(self.z, part.z, strict=True),
            *zip(self.injection, part.injection, strict=True),
        ]
        pairs += [(self.logits, part.logits), (self.residual, part.residual)]
        for whole, rows in pairs:
            whole.index_copy_(0, index, rows.to(whole.dtype))
        return self

    def pooled(self) -> Tensor:
        """(B, sum_l C_l) activations of every block averaged over their positions (the pixels
        of (B, C, H, W) maps, the time steps of (B, C, T) sequences)."""
        return torch.cat([t.mean(dim=tuple(range(2, t.dim()))) for t in self.z], dim=1)

    def class_probabilities(self) -> Tensor:
        """(B, F) what the observation shows of the prediction.

        One prediction per sample, logits (B, K): the softmax, F = K. One prediction per
        position, logits (B, K, T) (a language model's next-token logits): each position's
        :data:`TOP_PROBABILITIES` largest probabilities, sorted descending and averaged over the
        positions, F = ``TOP_PROBABILITIES`` (K is the vocabulary: too wide to show whole).
        Either way every value is in [0, 1] and the largest comes first where it is a maximum.
        """
        probabilities = torch.softmax(self.logits, dim=1)
        if probabilities.dim() == 2:
            return probabilities
        top = probabilities.topk(TOP_PROBABILITIES, dim=1).values  # (B, F, T), sorted
        return top.mean(dim=2)


@dataclass
class StepOutput:
    """What one call of :meth:`DynaLayNet.step` (or :meth:`DynaLayNet.straight`) did.

    Attributes:
        state: the new :class:`NetState`.
        flops: (B,) int64, FLOPs actually spent on each sample by this call.
        iterations: (B, n) int64, loop iterations spent per block (0 = not looped).
        diverged: (B, n) bool, a block's loop diverged on that sample.
        jacobian: () the Jacobian regulariser of the looped blocks, when the step was asked
            for it (``DynaLayNet.step(..., jacobian=True)``, training only); else None.
    """

    state: NetState
    flops: Tensor
    iterations: Tensor
    diverged: Tensor
    jacobian: Tensor | None = None
