"""The sequence network: the thesis's LSTM variant of DynaLay (Sec. 4.0.7), built from FPI layers.

Tokens are embedded, then run through n stacked LSTM layers (three by default); each layer can
also be looped to a fixed point. Layer l with input sequence X (B, C_in, T):

- injection ``U = LSTM_l(X)`` (B, C, T), computed once per input sequence;
- the FPI map over the layer's hidden sequence H (B, C, T), its *state*:

      f(H, U) = hardtanh(A * H + U),

  where ``A * H`` is a causal convolution over time (kernel k, output t sees H_{t-k+1..t})
  whose operator norm on length-T sequences is held at or below ``contraction`` < 1 by the
  FFT bound of :class:`~main_model.loop_operators.ContractiveConv` (the image blocks' machinery, 1-D).
  ``hardtanh`` (clip to [-1, 1]) is 1-Lipschitz, so
  ``||f(H, U) - f(H', U)|| <= ||A * (H - H')|| <= contraction * ||H - H'||``: f is a
  contraction in H whatever the weights, and the fixed point exists and is unique (Banach).
- Straight through: one application from H = 0, ``hardtanh(U) = U`` (an LSTM's outputs
  ``o * tanh(c)`` lie in (-1, 1)), so the straight path is exactly the plain stacked LSTM, each
  layer run once.
- Looping mixes each position's hidden state with its recent past until it settles; causal, so
  the language model never sees the token it predicts. Backward through the fixed point is
  implicit (TorchDEQ's IFT), like the image blocks'.

Two tasks share the layers: ``lm`` (next-token prediction at every position: logits (B, V, T),
the class axis second as :func:`torch.nn.functional.cross_entropy` takes it) and ``classify``
(one label per sequence: logits (B, K) from the last layer averaged over time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from main_model.cost import linear_flops, lstm_flops
from main_model.fpi import FixedPointLayer
from main_model.loop_operators import ContractiveConv
from main_model.network import TOP_PROBABILITIES, FPIConfig, FPINetwork

#: What a sequence network predicts (see the module docstring).
TASKS = ("lm", "classify")


@dataclass(frozen=True)
class DynaLaySeqConfig(FPIConfig):
    """Everything needed to rebuild a :class:`DynaLaySeqNet` (saved in every checkpoint).

    Attributes:
        vocab_size: V, tokens of the vocabulary (ids 0..V-1).
        seq_len: T, tokens per input sequence.
        task: ``lm`` (predict the next token at every position; ``num_classes`` is V) or
            ``classify`` (one of ``num_classes`` labels per sequence).
        num_classes: K, labels of the head (ignored and set to V for ``lm``).
        embed_dim: width of the token embedding.
        widths: hidden size of each LSTM layer; its length is the number of layers n.
        kernel_size: k, time steps the loop convolution A looks back over (causal).
        contraction: bound gamma < 1 on the operator norm of each layer's A.
        tol, max_iter: a loop stops at relative residual ``tol`` or ``max_iter`` applications.
        backward_tol, backward_max_iter: the implicit backward's adjoint solve.
    """

    vocab_size: int = 10000
    seq_len: int = 32
    task: str = "lm"
    num_classes: int = 2
    embed_dim: int = 64
    widths: tuple[int, ...] = (64, 64, 64)
    kernel_size: int = 3
    contraction: float = 0.8
    tol: float = 3e-2
    max_iter: int = 30
    backward_tol: float = 1e-6
    backward_max_iter: int = 60

    #: Checkpoints tag the sequence network's files with this (the image network's have none).
    ARCHITECTURE = "sequence"
    #: Fields an environment's data fixes; a checkpoint must match them (load_main_model).
    DATA_FIELDS = ("vocab_size", "seq_len", "task", "num_classes")

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.task == "lm":
            object.__setattr__(self, "num_classes", int(self.vocab_size))
        problems = self._fpi_problems()
        if self.task not in TASKS:
            problems.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.vocab_size < 2 or self.seq_len < 1 or self.embed_dim < 1:
            problems.append("vocab_size must be >= 2, seq_len and embed_dim >= 1")
        if self.num_classes < 2:
            problems.append(f"num_classes must be >= 2, got {self.num_classes}")
        if self.task == "lm" and self.vocab_size < TOP_PROBABILITIES:
            problems.append(
                f"a language model's vocabulary needs >= {TOP_PROBABILITIES} tokens (the agent "
                f"sees the {TOP_PROBABILITIES} largest next-token probabilities), got "
                f"{self.vocab_size}"
            )
        if self.kernel_size < 1:
            problems.append(f"kernel_size must be >= 1, got {self.kernel_size}")
        if problems:
            raise ValueError("invalid DynaLaySeqConfig: " + "; ".join(problems))


class LSTMFPIBlock(FixedPointLayer):
    """One LSTM layer that can be looped: ``U = LSTM(X)``, ``f(H, U) = hardtanh(A * H + U)``.

    Args:
        in_size: features of the input sequence X (B, in_size, T).
        hidden_size: C, features of U and H (B, C, T).
        seq_len: T, the length A's operator norm is bounded on.
        contraction: bound gamma < 1 on the operator norm of A.
        kernel_size: time steps A looks back over.
        backward_tol, backward_max_iter: the implicit backward's adjoint solve.
    """

    activation = staticmethod(F.hardtanh)
    output_bounds = (-1.0, 1.0)

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        seq_len: int,
        contraction: float,
        kernel_size: int = 3,
        backward_tol: float = 1e-6,
        backward_max_iter: int = 60,
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_size, hidden_size, batch_first=True)
        self.loop_conv = ContractiveConv(
            hidden_size, seq_len, contraction, kernel_size, method="fft", dims=1
        )
        #: FLOPs per sample of the LSTM over T steps and of one application of f (the A conv).
        self.inject_flops = lstm_flops(in_size, hidden_size, seq_len)
        self.iteration_flops = self.loop_conv.iteration_flops
        self._init_implicit_backward(backward_tol, backward_max_iter)

    def inject(self, x: Tensor, straight: bool = True) -> Tensor:
        """U = LSTM(X): (B, in_size, T) -> (B, C, T), values in (-1, 1).

        ``straight`` is accepted for the blocks' common interface; an LSTM has no batch
        statistics, so a loop path's recomputation is the same function.
        """
        hidden, _ = self.lstm(x.transpose(1, 2))
        return hidden.transpose(1, 2)


class DynaLaySeqNet(FPINetwork):
    """Token embedding, n :class:`LSTMFPIBlock` and a linear head (per position or pooled).

    ``straight(tokens)`` is the plain stacked LSTM; tokens are (B, T) int64 ids in [0, V).
    Everything about actions, stepping and FLOPs is :class:`~main_model.network.FPINetwork`'s.
    ``vocabulary`` (the V tokens, id order) is saved with the checkpoint, so a model is never
    used with text encoded by another vocabulary.
    """

    def __init__(
        self, config: DynaLaySeqConfig | None = None, vocabulary: tuple[str, ...] | None = None
    ) -> None:
        super().__init__()
        self.config = config or DynaLaySeqConfig()
        if vocabulary is not None and len(vocabulary) != self.config.vocab_size:
            raise ValueError(
                f"vocabulary has {len(vocabulary)} tokens, the config {self.config.vocab_size}"
            )
        self.vocabulary = None if vocabulary is None else tuple(vocabulary)
        self.embedding = nn.Embedding(self.config.vocab_size, self.config.embed_dim)
        blocks, size = [], self.config.embed_dim
        for width in self.config.widths:
            blocks.append(
                LSTMFPIBlock(
                    size,
                    width,
                    self.config.seq_len,
                    self.config.contraction,
                    self.config.kernel_size,
                    self.config.backward_tol,
                    self.config.backward_max_iter,
                )
            )
            size = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(size, self.config.num_classes)
        #: What the model was trained on, saved with its checkpoints (as DynaLayNet's).
        self.provenance: dict[str, Any] = {}
        per_readout = linear_flops(size, self.config.num_classes)
        self.head_flops = per_readout * (self.config.seq_len if self.config.task == "lm" else 1)

    @property
    def probability_features(self) -> int:
        return TOP_PROBABILITIES if self.config.task == "lm" else self.config.num_classes

    def embed(self, inputs: Tensor) -> Tensor:
        """(B, T) token ids -> (B, E, T) embeddings (channels first, like the layers' states)."""
        return self.embedding(inputs).transpose(1, 2)

    def readout(self, z: Tensor) -> Tensor:
        """Logits from the last layer's (B, C, T): (B, V, T) for ``lm``, (B, K) for
        ``classify`` (the head on the time average)."""
        if self.config.task == "lm":
            return self.head(z.transpose(1, 2)).transpose(1, 2)
        return self.head(z.mean(dim=2))

    def _check_inputs(self, inputs: Tensor) -> None:
        if (
            inputs.dim() != 2
            or inputs.shape[1] != self.config.seq_len
            or inputs.is_floating_point()
        ):
            raise ValueError(
                f"inputs must be (B, {self.config.seq_len}) int64 token ids for this network, "
                f"got {inputs.dtype} {tuple(inputs.shape)}"
            )

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a checkpoint holds beside the image network's fields."""
        vocabulary = None if self.vocabulary is None else list(self.vocabulary)
        return {"architecture": self.config.ARCHITECTURE, "vocabulary": vocabulary}
