"""The loop maps W of the FPI layers: linear maps whose operator norm is held below a bound.

f(z, u) = act(W z + u) is a contraction in z when ``norm(W) <= bound < 1`` and act is
1-Lipschitz. Every operator here rescales its weights at every use (training included) from a
norm that is an upper bound of the map's actual operator norm, never a proxy from below:

- :class:`ContractiveConv`: a full ``C -> C`` convolution (``conv3x3`` for images, causal for
  sequences), bounded by the circulant (FFT) bound, or by power iteration for old checkpoints;
- :class:`ContractiveConv1x1`: a 1x1 convolution, exact matrix 2-norm;
- :class:`DepthwiseSeparableLoop`: depthwise 3x3 then 1x1, product of exact factor norms;
- :class:`LowRankLoop`: a rank-r 1x1 bottleneck B A, exact norm of B A.

:func:`build_loop_operator` makes one by name (:data:`LOOP_OPERATORS`); each has
``effective_weight()``, ``conv(z, weights)`` and ``iteration_flops`` (per sample, one use).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from main_model.cost import conv1d_flops, conv2d_flops

_EPS = 1e-12


#: How :class:`ContractiveConv` bounds its operator norm (``DynaLayConfig.spectral_norm``).
SPECTRAL_NORMS = ("fft", "power")


def circulant_operator_norm(weight: Tensor, size: int) -> Tensor:
    """Operator norm of a zero-padded convolution by ``weight`` on maps of side ``size`` (1-D
    sequences or 2-D images), from above: exactly the norm of the circular convolution on a grid
    of side ``size + k - 1``.

    Any zero-padded convolution whose outputs stay within the input's extent (same padding, or
    causal left padding over time) is that circular convolution restricted to maps that vanish
    on the extra ``k - 1`` positions per axis (no wrap-around reaches them) and read on a subset
    of its outputs, so its norm can only be smaller. A circular convolution is diagonalised by
    the DFT: at each frequency it multiplies by the ``(C_out, C_in)`` matrix of the kernel's
    DFT, so its norm is the largest singular value over frequencies (Sedghi et al., 2019).
    Differentiable.

    Args:
        weight: (C_out, C_in, k) or (C_out, C_in, k, k) kernel.
        size: side (length) of the maps the convolution acts on.

    Returns:
        A 0-d tensor >= the operator norm of the zero-padded convolution.
    """
    axes = weight.dim() - 2
    grid = (size + weight.shape[-1] - 1,) * axes
    # Real kernel: half the spectrum suffices.
    spectrum = torch.fft.rfftn(weight, s=grid, dim=tuple(range(2, 2 + axes)))
    per_frequency = spectrum.permute(*range(2, 2 + axes), 0, 1)  # (*frequencies, C_out, C_in)
    return torch.linalg.matrix_norm(per_frequency, ord=2).amax()


class ContractiveConv(nn.Module):
    """A ``C -> C`` convolution rescaled so its operator norm is at most ``bound``.

    ``dims=2`` (images): same padding on ``(C, size, size)`` maps. ``dims=1`` (sequences):
    causal over time on ``(C, size)`` sequences, i.e. output t sees inputs t-k+1..t only, so a
    language model's position t never sees the token it must predict.

    The norm is that of the convolution as a linear map on those maps (not
    of the reshaped weight matrix, which can under-estimate it up to ``kernel_size``-fold). The
    effective weight is ``W * min(1, bound / norm(W))``, computed from the current weights at
    every use, so the bound holds while the optimiser moves them. ``method`` is how the norm is
    obtained:

    - ``fft`` (default): :func:`circulant_operator_norm`, an upper bound, so the effective norm
      is *guaranteed* <= ``bound`` in training and evaluation alike (with the gradient through
      the norm in training). It costs ``O(size^2 C^3)`` per use: milliseconds at widths up to
      64, about a second per training step at 256 channels on a CPU.
    - ``power``: power iteration on ``A^T A`` with a persistent vector, like
      :func:`torch.nn.utils.parametrizations.spectral_norm`: converged before first use and
      whenever the weights changed in evaluation mode, one warm-started step per training
      forward. It approaches the norm from below, so while the weights move in training the
      effective norm can exceed the bound (0.94 measured on a tiny layer under SGD). Kept for
      checkpoints trained with it (those written before ``fft`` existed); images only.
    """

    def __init__(
        self,
        channels: int,
        size: int,
        bound: float,
        kernel_size: int = 3,
        method: str = "fft",
        dims: int = 2,
    ) -> None:
        super().__init__()
        if not 0.0 < bound < 1.0:
            raise ValueError(f"contraction bound must be in (0, 1), got {bound}")
        if method not in SPECTRAL_NORMS:
            raise ValueError(
                f"spectral norm method must be one of {SPECTRAL_NORMS}, got {method!r}"
            )
        if dims not in (1, 2) or (dims == 1 and method != "fft"):
            raise ValueError(f"dims must be 2, or 1 with method 'fft'; got {dims}, {method!r}")
        self.bound = bound
        self.size = size
        self.method = method
        self.dims = dims
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(channels, channels, *(kernel_size,) * dims))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        #: FLOPs per sample of one application (a C -> C convolution over the whole map).
        self.iteration_flops = (
            conv2d_flops(channels, channels, kernel_size, size)
            if dims == 2
            else conv1d_flops(channels, channels, kernel_size, size)
        )
        # The power-iteration state is a buffer for both methods, so checkpoints of either load
        # into the same architecture.
        vector = torch.randn(1, channels, *(size,) * dims)
        self.register_buffer("power_vector", vector / vector.norm())
        self.register_buffer("weight_norm", torch.ones(()))
        self._norm_for_version: int | None = None
        # Training converges the vector once (lazily: loading a checkpoint brings its own), then
        # tracks the norm with one step per forward as the weights move.
        self._vector_converged = False

    def conv(self, z: Tensor, weight: Tensor) -> Tensor:
        """``weight * z``: z (B, C, size, size) same-padded, or (B, C, size) causal."""
        if self.dims == 2:
            return F.conv2d(z, weight, padding=self.padding)
        return F.conv1d(F.pad(z, (self.kernel_size - 1, 0)), weight)

    def _power_step(self) -> Tensor:
        """One power-iteration step on ``A^T A``; updates the persistent vector, returns ``A v``."""
        image = self.conv(self.power_vector, self.weight)
        back = F.conv_transpose2d(image, self.weight, padding=self.padding)
        self.power_vector.copy_(back / back.norm().clamp_min(_EPS))
        return self.conv(self.power_vector, self.weight)

    @torch.no_grad()
    def estimate_norm(self, max_steps: int = 500, rtol: float = 1e-6) -> float:
        """Store and return ``norm(W)`` by this layer's ``method`` (power: run to convergence)."""
        if self.method == "fft":
            norm = circulant_operator_norm(self.weight, self.size).item()
        else:
            previous = 0.0
            for _ in range(max_steps):
                norm = self._power_step().norm().item()
                if abs(norm - previous) <= rtol * norm:
                    break
                previous = norm
            self._vector_converged = True
        self.weight_norm.fill_(norm)
        self._norm_for_version = self.weight._version
        return norm

    def _training_norm(self) -> Tensor:
        """``norm(W)`` with its gradient, for a training forward."""
        if self.method == "fft":
            return circulant_operator_norm(self.weight, self.size)
        if not self._vector_converged:
            self.estimate_norm()
        with torch.no_grad():
            self._power_step()
        # Gradient flows through the norm (as in spectral_norm); the vector is a constant,
        # cloned because the next call updates the buffer in place.
        return self.conv(self.power_vector.clone(), self.weight).norm()

    def effective_weight(self) -> Tensor:
        """The weight actually used in f, operator norm <= ``bound``. Shape (C, C, k[, k])."""
        if self.training:
            norm = self._training_norm()
            self.weight_norm.copy_(norm.detach())
            self._norm_for_version = None
        else:
            if self._norm_for_version != self.weight._version:
                self.estimate_norm()
            norm = self.weight_norm
        return self.weight * (self.bound / torch.clamp(norm, min=self.bound))

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._norm_for_version = None  # loaded weights: re-estimate before use in eval mode
        self._vector_converged = True  # the saved vector was converged by its training


#: Which linear map W an image block loops with (``DynaLayConfig.loop_operator``): each keeps
#: f(z) = relu(W z + u) a contraction at every use, with a bound that is exact or a product of
#: exact factor norms. FLOPs per iteration on C channels at side s, relative to ``conv3x3``
#: (18 C^2 s^2): ``conv1x1`` 1/9, ``dwsep`` (depthwise 3x3, then 1x1) (C + 9) / (9 C),
#: ``lowrank`` (1x1 of rank r, B A) 2r / (9 C).
LOOP_OPERATORS = ("conv3x3", "conv1x1", "dwsep", "lowrank")


class _FactoredLoop(nn.Module):
    """What the cheap loop operators share: weights ``factors()`` whose map has operator norm
    at most ``norm()`` (a cheap exact value or product of exact factor norms); the first factor
    is rescaled by ``min(1, bound / norm)`` at every use, so the bound holds while the optimiser
    moves the weights, as in :class:`ContractiveConv`. ``effective_weight()`` returns a tuple
    that ``conv(z, weights)`` applies."""

    bound: float

    def _init_bound(self, bound: float) -> None:
        if not 0.0 < bound < 1.0:
            raise ValueError(f"contraction bound must be in (0, 1), got {bound}")
        self.bound = bound
        self.register_buffer("weight_norm", torch.ones(()))
        self._norm_for_versions: tuple[int, ...] | None = None

    def norm(self) -> Tensor:
        """A 0-d tensor >= the operator norm of the unscaled map (differentiable)."""
        raise NotImplementedError

    def factors(self) -> tuple[Tensor, ...]:
        """The unscaled weights; the first is the one the rescaling multiplies."""
        raise NotImplementedError

    def effective_weight(self) -> tuple[Tensor, ...]:
        """The weights actually used in f: the first factor rescaled so that the map's norm is
        <= ``bound``. Training: the norm from the current weights, with its gradient.
        Evaluation: the norm computed once per change of the parameters."""
        if self.training:
            norm = self.norm()
            self.weight_norm.copy_(norm.detach())
            self._norm_for_versions = None
        else:
            versions = tuple(p._version for p in self.parameters())
            if self._norm_for_versions != versions:
                with torch.no_grad():
                    self.weight_norm.copy_(self.norm())
                self._norm_for_versions = versions
            norm = self.weight_norm
        first, *rest = self.factors()
        return (first * (self.bound / torch.clamp(norm, min=self.bound)), *rest)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._norm_for_versions = None  # loaded weights: recompute the norm before use


class ContractiveConv1x1(_FactoredLoop):
    """``W z`` with W a ``C x C`` 1x1 convolution: the same matrix at every pixel, so the
    operator norm is exactly the matrix's largest singular value (one SVD of C x C per use)."""

    def __init__(self, channels: int, size: int, bound: float) -> None:
        super().__init__()
        self._init_bound(bound)
        self.size = size
        self.weight = nn.Parameter(torch.empty(channels, channels, 1, 1))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.iteration_flops = conv2d_flops(channels, channels, 1, size)

    def factors(self) -> tuple[Tensor, ...]:
        return (self.weight,)

    def norm(self) -> Tensor:
        return torch.linalg.matrix_norm(self.weight[:, :, 0, 0], ord=2)

    def conv(self, z: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        return F.conv2d(z, weights[0])


class DepthwiseSeparableLoop(_FactoredLoop):
    """``P (D * z)``: a depthwise 3x3 convolution D (one kernel per channel, same padding),
    then a 1x1 ``C x C`` mixing P. ``norm(P D) <= norm(P) norm(D)``: norm(P) is the exact
    matrix 2-norm; D is block-diagonal over channels, so its norm is the largest of the
    channels' single-channel norms, each bounded by the circulant bound of
    :func:`circulant_operator_norm` (the largest DFT magnitude of its kernel: O(C s^2))."""

    def __init__(self, channels: int, size: int, bound: float) -> None:
        super().__init__()
        self._init_bound(bound)
        self.size = size
        self.pointwise = nn.Parameter(torch.empty(channels, channels, 1, 1))
        self.depthwise = nn.Parameter(torch.empty(channels, 1, 3, 3))
        nn.init.kaiming_uniform_(self.pointwise, a=5**0.5)
        nn.init.kaiming_uniform_(self.depthwise, a=5**0.5)
        self.iteration_flops = 2 * channels * 9 * size * size + conv2d_flops(
            channels, channels, 1, size
        )

    def factors(self) -> tuple[Tensor, ...]:
        return (self.pointwise, self.depthwise)

    def norm(self) -> Tensor:
        grid = (self.size + 2, self.size + 2)
        spectrum = torch.fft.rfft2(self.depthwise[:, 0], s=grid)  # (C, *frequencies)
        depthwise = spectrum.abs().amax()
        return torch.linalg.matrix_norm(self.pointwise[:, :, 0, 0], ord=2) * depthwise

    def conv(self, z: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        pointwise, depthwise = weights
        return F.conv2d(F.conv2d(z, depthwise, padding=1, groups=z.shape[1]), pointwise)


class LowRankLoop(_FactoredLoop):
    """``B (A z)``: a 1x1 map of rank at most r through an r-channel bottleneck (A: C -> r,
    B: r -> C); its norm is exactly that of the ``C x C`` matrix ``B A``."""

    def __init__(self, channels: int, size: int, bound: float, rank: int) -> None:
        super().__init__()
        if not 1 <= rank <= channels:
            raise ValueError(f"loop rank must be in [1, {channels}], got {rank}")
        self._init_bound(bound)
        self.size = size
        self.expand = nn.Parameter(torch.empty(channels, rank, 1, 1))  # B
        self.reduce = nn.Parameter(torch.empty(rank, channels, 1, 1))  # A
        nn.init.kaiming_uniform_(self.expand, a=5**0.5)
        nn.init.kaiming_uniform_(self.reduce, a=5**0.5)
        self.iteration_flops = 2 * conv2d_flops(channels, rank, 1, size)

    def factors(self) -> tuple[Tensor, ...]:
        return (self.expand, self.reduce)

    def norm(self) -> Tensor:
        return torch.linalg.matrix_norm(self.expand[:, :, 0, 0] @ self.reduce[:, :, 0, 0], ord=2)

    def conv(self, z: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        expand, reduce = weights
        return F.conv2d(F.conv2d(z, reduce), expand)


def build_loop_operator(
    name: str, channels: int, size: int, bound: float, *, rank: int = 0, spectral_norm: str = "fft"
) -> nn.Module:
    """The image block's loop map W by name (:data:`LOOP_OPERATORS`); ``rank`` for ``lowrank``
    (0: channels // 4), ``spectral_norm`` for ``conv3x3`` (:class:`ContractiveConv`)."""
    if name == "conv3x3":
        return ContractiveConv(channels, size, bound, method=spectral_norm)
    if name == "conv1x1":
        return ContractiveConv1x1(channels, size, bound)
    if name == "dwsep":
        return DepthwiseSeparableLoop(channels, size, bound)
    if name == "lowrank":
        return LowRankLoop(channels, size, bound, rank or max(1, channels // 4))
    raise ValueError(f"loop_operator must be one of {LOOP_OPERATORS}, got {name!r}")
