"""Fixed-point-iteration (FPI) block: a conv layer that can also be looped to its fixed point.

Block l maps its input x to z. With the input injection u = inject(x) (conv + normalisation, may
downsample and change channels) the FPI map is

    f(z, u) = relu(W * z + u),

where ``W`` is a loop operator (:mod:`main_model.loop_operators`: a 3x3 or 1x1 convolution,
depthwise-separable or low-rank) whose operator norm is held at or below ``contraction`` < 1.
ReLU is 1-Lipschitz, so f is a contraction in z whatever the weights and the fixed point
z* = f(z*, u) exists and is unique. A block may also feed the network's previous prediction
back into its loops (``feedback_classes``: top-down feedback), never into the straight pass.

Nothing inside the loop uses batch statistics, and the injection's normalisation cannot depend
on which path (action) group a sample falls in (``norm`` of :class:`FPIBlock`):

- ``batch``: :class:`StraightStatsBatchNorm`, BatchNorm whose statistics come from the straight
  pass only. In training mode the straight pass normalises with its batch's statistics and
  every loop path of that batch reuses them; running statistics are updated by straight passes
  only. (Plain BatchNorm recomputed per action group normalised samples with the statistics of
  whatever 2-3 samples shared their action and mixed straight and looped inputs in its running
  statistics: the straight path lost most of its accuracy; see docs/results.md.)
- ``group``: GroupNorm, per sample, no batch statistics at all.

- Straight through: one application from z = 0, i.e. relu(u), an ordinary conv-BN-ReLU layer.
- Looping: iterate z <- f(z, u) from a warm start until the relative residual
  ||z_{t+1} - z_t|| / ||z_{t+1}|| < tol or ``max_iter`` applications, per sample.
- Backward through a fixed point: implicit differentiation (TorchDEQ's IFT backward, which
  solves g = J_f(z*)^T g + dL/dz* by fixed-point iteration), never backprop through the loop;
  or TorchDEQ's phantom gradient, or the Jacobian-free one (``backward``, :data:`BACKWARDS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdeq.grad import backward_factory
from torchdeq.loss import jac_reg
from torchdeq.solver import get_solver

import main_model.distributed as distributed
from main_model.cost import conv2d_flops, conv_output_size, linear_flops
from main_model.loop_operators import ContractiveConv, build_loop_operator

#: How a looped block's gradient is computed (:meth:`FixedPointLayer._init_implicit_backward`).
BACKWARDS = ("ift", "phantom", "jfb")

#: A sample whose residual grows past this multiple of its first residual is declared diverged.
#: For a contraction the residual can only shrink, so growth means non-finite or broken numerics.
DIVERGENCE_GROWTH = 10.0
_EPS = 1e-12


@dataclass
class FixedPointResult:
    """Outcome of looping one block on a batch of B samples.

    Attributes:
        z: (B, C, H, W) or (B, C, T) the fixed point (the last finite iterate for diverged samples).
        iterations: (B,) int64, applications of f spent on each sample.
        residual: (B,) float, last relative residual ||z_{t+1} - z_t|| / ||z_{t+1}||
            (``inf`` where it was not finite).
        diverged: (B,) bool, residual became non-finite or grew instead of shrinking.
    """

    z: Tensor
    iterations: Tensor
    residual: Tensor
    diverged: Tensor


class StraightStatsBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose batch statistics are those of the straight pass, shared by all paths.

    ``forward(x)`` (the straight pass) behaves as BatchNorm2d and, in training mode, remembers
    the batch mean and variance it used (with their graph, so gradients flow as in BatchNorm).
    ``forward(x, reuse_straight_stats=True)`` (a loop path recomputing this injection on a new
    input) normalises with those remembered statistics in training mode and with the running
    statistics in evaluation mode. A sample's result then depends on its batch only through
    the straight pass, never on which other samples chose its action, and the running
    statistics describe the straight inputs only, as at evaluation time.

    Under torchrun (:mod:`main_model.distributed`) the straight pass's statistics are those of
    the global batch, every rank's samples (:meth:`_global_batch_forward`), not of the rank's
    share: several processes then train as one process on the whole batch does.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self._straight_stats: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor, reuse_straight_stats: bool = False) -> Tensor:
        if not self.training:
            return super().forward(x)
        if not reuse_straight_stats and distributed.is_distributed():
            return self._global_batch_forward(x)
        if not reuse_straight_stats:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            self._straight_stats = (mean, var)
            return super().forward(x)  # same normalisation, plus the running-statistics update
        if self._straight_stats is None:
            raise RuntimeError(
                "a loop path ran in training mode before any straight pass: run "
                "DynaLayNet.straight on the batch first (forward() does)"
            )
        mean, var = (t.view(1, -1, 1, 1) for t in self._straight_stats)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.view(1, -1, 1, 1)

    def _global_batch_forward(self, x: Tensor) -> Tensor:
        """The straight pass in training under torchrun: x (b, C, H, W), this rank's share.

        Normalises with the mean and biased variance of the global batch (two passes, each
        summed over the ranks, differentiably: gradients reach every rank's samples through the
        statistics as in one process) and updates the running statistics with them, so they
        stay equal on every rank. SyncBatchNorm computes the same statistics but cannot take
        this class's place: it has no reuse of the straight statistics by the loop paths.
        """
        channels = (1, -1, *([1] * (x.dim() - 2)))
        dims = (0, *range(2, x.dim()))
        local = torch.cat([x.sum(dim=dims), x.new_full((1,), x.numel() / x.shape[1])])
        totals = distributed.all_reduce_sum(local)
        count = totals[-1]
        mean = totals[:-1] / count
        centred = x - mean.view(channels)
        var = distributed.all_reduce_sum((centred * centred).sum(dim=dims)) / count
        self._straight_stats = (mean, var)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # BatchNorm's cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(var * count / (count - 1).clamp_min(1), momentum)
        scale = self.weight.view(channels) * torch.rsqrt(var.view(channels) + self.eps)
        return centred * scale + self.bias.view(channels)


class FixedPointLayer(nn.Module):
    """What every looped layer shares: the map f(z, u) = act(W * z + u) with ``W`` a
    :class:`ContractiveConv` (``self.loop_conv``) and ``act`` 1-Lipschitz (``activation``), so f
    is a contraction in z; per-sample fixed-point solves; implicit backward.

    Subclasses build ``loop_conv``, an ``inject`` and the FLOP counts ``inject_flops`` and
    ``iteration_flops``, and call :meth:`_init_implicit_backward`. z and u have the same shape,
    (B, C, H, W) for images or (B, C, T) for sequences.
    """

    loop_conv: ContractiveConv
    inject_flops: int
    iteration_flops: int

    def _init_implicit_backward(
        self,
        backward_tol: float,
        backward_max_iter: int,
        backward: str = "ift",
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
    ) -> None:
        """The gradient through a fixed point z* (:data:`BACKWARDS`), from TorchDEQ:

        - ``ift``: exact implicit differentiation, the adjoint g = J_f(z*)^T g + dL/dz* solved
          by fixed-point iteration to ``backward_tol`` (at most ``backward_max_iter`` steps).
        - ``phantom``: the phantom gradient (Geng et al., 2021): backprop through
          ``phantom_steps`` damped steps z <- tau f(z) + (1 - tau) z from z*; an approximation
          of the implicit gradient whose cost is fixed.
        - ``jfb``: Jacobian-free backprop (Fung et al., 2022): backprop through one step
          f(z*) alone, i.e. the implicit gradient with J_f taken as 0.
        """
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
        self.backward = backward
        if backward == "ift":
            self._implicit_backward = backward_factory(
                grad_type="ift",
                b_solver=get_solver("fixed_point_iter"),
                b_solver_kwargs={
                    "tol": backward_tol,
                    "max_iter": backward_max_iter,
                    "stop_mode": "rel",
                },
            )
        elif backward == "phantom":
            self._implicit_backward = backward_factory(grad_type=phantom_steps, tau=phantom_tau)
        else:
            self._implicit_backward = backward_factory(grad_type=1, tau=1.0)

    #: FLOPs per sample a loop spends once, whatever its iterations (the feedback V p).
    loop_setup_flops: int = 0

    @property
    def has_feedback(self) -> bool:
        """Whether loops see top-down feedback: a submodule ``feedback`` V (K -> C), as
        :class:`FPIBlock` builds with ``feedback_classes``."""
        return self._modules.get("feedback") is not None

    def loop_injection(self, u: Tensor, probabilities: Tensor) -> Tensor:
        """The injection a loop iterates with: u, plus the feedback V p where the block has it.

        u: (B, C, H, W) or (B, C, T); probabilities: (B, F), what the network concluded before
        this step (detached: the loop reads the straight pass's conclusion, it does not train
        it), broadcast over the positions."""
        if not self.has_feedback:
            return u
        bias = self.feedback(probabilities.detach())
        return u + bias.view(*bias.shape, *([1] * (u.dim() - 2)))

    #: The 1-Lipschitz activation of f (ReLU for the image blocks) and the range of its values.
    activation = staticmethod(F.relu)
    output_bounds: tuple[float, float] = (0.0, float("inf"))

    def f(self, z: Tensor, u: Tensor, weight: Tensor | None = None) -> Tensor:
        """The FPI map f(z, u) = act(W * z + u); ``weight`` avoids re-normalising W per call."""
        weight = self.loop_conv.effective_weight() if weight is None else weight
        return self.activation(self.loop_conv.conv(z, weight) + u)

    def straight(self, u: Tensor) -> Tensor:
        """One application of f from z = 0: act(u) (W * 0 vanishes, so no loop conv runs)."""
        return self.activation(u)

    @torch.no_grad()
    def solve(self, u: Tensor, z_init: Tensor, weight: Tensor, tol: float, max_iter: int):
        """Per-sample fixed-point iteration from ``z_init``; returns a :class:`FixedPointResult`.

        Samples leave the batch as soon as they converge or diverge, so a converged sample costs
        no further compute and its result does not depend on what else is in the batch.
        """
        batch = u.shape[0]
        device = u.device
        z_out = z_init.detach().clone()
        iterations = torch.zeros(batch, dtype=torch.long, device=device)
        residual = torch.ones(batch, dtype=u.dtype, device=device)
        diverged = torch.zeros(batch, dtype=torch.bool, device=device)
        active = torch.arange(batch, device=device)
        z, u_active, first_step = z_init.detach(), u.detach(), None
        for step in range(1, max_iter + 1):
            z_next = self.f(z, u_active, weight)
            step_size = (z_next - z).flatten(1).norm(dim=1)
            relative = step_size / (z_next.flatten(1).norm(dim=1) + _EPS)
            first_step = step_size if first_step is None else first_step
            bad = ~torch.isfinite(relative) | (step_size > DIVERGENCE_GROWTH * first_step)
            finished = bad | (relative < tol) if step < max_iter else torch.ones_like(bad)
            iterations[active] = step
            residual[active] = torch.where(torch.isfinite(relative), relative, torch.inf)
            diverged[active] = bad
            # The iteration's one read from the device: which samples run on (selecting by
            # boolean masks instead would wait for the device once per mask).
            running = torch.nonzero(~finished).squeeze(1)
            if running.numel() < active.numel():
                # Every active sample's latest iterate (a diverged one keeps its last finite
                # one); those still running overwrite theirs when they finish.
                keep_old = bad.view(-1, *([1] * (z.dim() - 1)))
                z_out[active] = torch.where(keep_old, z, z_next)
                if running.numel() == 0:
                    break
                active, z_next, u_active = active[running], z_next[running], u_active[running]
                first_step = first_step[running]
            z = z_next
        return FixedPointResult(z_out, iterations, residual, diverged)

    @torch.no_grad()
    def solve_accelerated(
        self, u: Tensor, z_init: Tensor, weight: Tensor, solver: str, tol: float, max_iter: int
    ) -> FixedPointResult:
        """Solve with TorchDEQ's ``anderson`` or ``broyden`` solver (the DEQ baseline).

        TorchDEQ runs the whole batch until its slowest sample converges and returns each
        sample's lowest-residual iterate, which would make a sample's result and cost depend on
        the batch it is in. Its per-sample updates are independent, so we watch every
        evaluation of f and keep, per sample, the first one whose relative residual is below
        ``tol``: that value and that many evaluations are what the sample gets and is charged,
        in any batch. Samples that never get there keep their last evaluation, at ``max_iter``.
        """
        batch = u.shape[0]
        z_out = z_init.detach().clone()
        iterations = torch.full((batch,), max_iter, dtype=torch.long, device=u.device)
        residual = torch.full((batch,), torch.inf, dtype=u.dtype, device=u.device)
        done = torch.zeros(batch, dtype=torch.bool, device=u.device)
        evaluations = 0

        def watched(z: Tensor) -> Tensor:
            nonlocal evaluations
            evaluations += 1
            z_next = self.f(z, u, weight)
            if evaluations > max_iter:  # past the budget: nothing more is recorded
                return z_next
            step_size = (z_next - z).flatten(1).norm(dim=1)
            relative = step_size / (z_next.flatten(1).norm(dim=1) + _EPS)
            usable = torch.isfinite(z_next.flatten(1)).all(dim=1) & torch.isfinite(relative)
            record = ~done & usable
            z_out[record] = z_next[record]
            residual[record] = relative[record].to(u.dtype)
            iterations[record] = evaluations
            done.logical_or_(record & (relative < tol))
            return z_next

        get_solver(solver)(watched, z_init, max_iter=max_iter, tol=tol, stop_mode="rel")
        diverged = ~torch.isfinite(residual)
        return FixedPointResult(z_out, iterations, residual, diverged)

    def loop(
        self,
        u: Tensor,
        z_init: Tensor,
        tol: float,
        max_iter: int,
        solver: str = "fpi",
        weight: Tensor | None = None,
    ) -> FixedPointResult:
        """Loop to the fixed point; when autograd is on, z carries the implicit gradient.

        Shapes: u and z_init (the warm start) (B, C, H, W) or (B, C, T). ``solver``: ``fpi`` (plain
        per-sample iteration, what DynaLay's actions run) or ``anderson``/``broyden``.
        ``weight``: the loop conv's effective weight when the caller already has it.
        """
        weight = self.loop_conv.effective_weight() if weight is None else weight
        if solver == "fpi":
            result = self.solve(u, z_init, weight, tol, max_iter)
        else:
            result = self.solve_accelerated(u, z_init, weight, solver, tol, max_iter)
        if torch.is_grad_enabled() and (u.requires_grad or _requires_grad(weight)):

            def damped_f(z: Tensor, tau: float = 1.0) -> Tensor:
                # TorchDEQ's phantom gradient calls f(z, tau=...); the IFT calls f(z).
                step = self.f(z, u, weight)
                return step if tau == 1.0 else tau * step + (1.0 - tau) * z

            (z_grad,) = self._implicit_backward(self, damped_f, result.z)
            result.z = z_grad
        return result

    def unrolled(self, u: Tensor, z_init: Tensor, steps: int, weight: Tensor) -> FixedPointResult:
        """Exactly ``steps`` applications of f from ``z_init``, differentiated by autograd through
        every step: an iterate on the way to the fixed point, not the fixed point. What a loss
        on several iterations reads (``Recipe.iterate_losses``); shapes as :meth:`loop`."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        z = z_init
        for _ in range(steps):
            z_previous, z = z, self.f(z, u, weight)
        with torch.no_grad():
            step_size = (z - z_previous).flatten(1).norm(dim=1)
            relative = step_size / (z.flatten(1).norm(dim=1) + _EPS)
        batch = u.shape[0]
        return FixedPointResult(
            z,
            torch.full((batch,), steps, dtype=torch.long, device=u.device),
            torch.where(torch.isfinite(relative), relative, torch.inf).to(u.dtype),
            ~torch.isfinite(relative),
        )

    def jacobian_penalty(self, u: Tensor, z_star: Tensor, weight: Tensor) -> Tensor:
        """TorchDEQ's Jacobian regulariser at the fixed point: a one-vector Hutchinson estimate
        of ||J_f(z*)||_F^2 / (numel of z*), with its graph (so it trains W and u).

        u: the injection the loop iterated with (feedback included); z_star: (B, ...) its fixed
        point (detached here: the penalty trains f at z*, not the path that reached z*);
        ``weight``: the loop conv's effective weight of this step. A
        small Frobenius norm is a map that converges in fewer iterations and forgets its warm
        start (path independence, Bai et al. 2021 "Stabilizing Equilibrium Models by Jacobian
        Regularization")."""
        z0 = z_star.detach().requires_grad_()
        return jac_reg(self.f(z0, u, weight), z0, vecs=1, create_graph=True)


def _requires_grad(weight: Tensor | tuple[Tensor, ...]) -> bool:
    """Whether a loop operator's effective weight (one tensor or a tuple) carries gradients."""
    weights = weight if isinstance(weight, tuple) else (weight,)
    return any(w.requires_grad for w in weights)


NORMS = ("batch", "group")


def group_count(channels: int, norm_groups: int) -> int:
    """GroupNorm groups for ``channels``: the largest divisor of ``channels`` <= ``norm_groups``."""
    return max(g for g in range(1, min(channels, norm_groups) + 1) if channels % g == 0)


class FPIBlock(FixedPointLayer):
    """One FPI block: injection ``u = norm(conv(x))`` and contraction ``f(z, u) = relu(W*z + u)``.

    Args:
        in_channels: channels of the block input x.
        out_channels: channels of z.
        in_size: side of the (square) input x; z has side ``out_size``.
        stride: stride of the injection conv (2 halves the resolution).
        contraction: bound gamma < 1 on the operator norm of W.
        norm: the injection's normalisation, ``batch`` or ``group`` (module docstring).
        norm_groups: GroupNorm groups of the injection (at most; see :func:`group_count`).
        spectral_norm: how a ``conv3x3`` loop's norm is bounded (:class:`ContractiveConv`).
        backward_tol: relative tolerance of the implicit-backward solve.
        backward_max_iter: iteration cap of the implicit-backward solve.
        loop_operator: the map W (:data:`LOOP_OPERATORS`, :func:`build_loop_operator`).
        loop_rank: rank of a ``lowrank`` W (0: ``out_channels // 4``).
        backward, phantom_steps, phantom_tau: the gradient through the fixed point
            (:meth:`FixedPointLayer._init_implicit_backward`).
        feedback_classes: K > 0 gives the loop top-down feedback: a loop solves
            z = relu(W z + u + V p) with p (B, K) the class probabilities the network
            concluded before the step and V a K -> C linear map (zero at initialisation),
            broadcast over the positions. The straight pass never sees it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int,
        stride: int,
        contraction: float,
        norm: str = "batch",
        norm_groups: int = 8,
        spectral_norm: str = "fft",
        backward_tol: float = 1e-6,
        backward_max_iter: int = 60,
        loop_operator: str = "conv3x3",
        loop_rank: int = 0,
        backward: str = "ift",
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        feedback_classes: int = 0,
    ) -> None:
        super().__init__()
        self.inject_conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.inject_norm = (
            StraightStatsBatchNorm(out_channels)
            if norm == "batch"
            else nn.GroupNorm(group_count(out_channels, norm_groups), out_channels)
        )
        self.out_size = conv_output_size(in_size, kernel_size=3, stride=stride, padding=1)
        self.loop_conv = build_loop_operator(
            loop_operator,
            out_channels,
            self.out_size,
            contraction,
            rank=loop_rank,
            spectral_norm=spectral_norm,
        )
        if feedback_classes:
            self.feedback = nn.Linear(feedback_classes, out_channels)
            nn.init.zeros_(self.feedback.weight)
            nn.init.zeros_(self.feedback.bias)
            self.loop_setup_flops = linear_flops(feedback_classes, out_channels)
        #: FLOPs per sample of the injection conv and of one application of f (the W map).
        self.inject_flops = conv2d_flops(in_channels, out_channels, 3, self.out_size)
        self.iteration_flops = self.loop_conv.iteration_flops
        self._init_implicit_backward(
            backward_tol, backward_max_iter, backward, phantom_steps, phantom_tau
        )

    def inject(self, x: Tensor, straight: bool = True) -> Tensor:
        """Input injection u: (B, C_in, H_in, W_in) -> (B, C, H, W).

        ``straight=False`` when a loop path recomputes it on a looped input: BatchNorm then
        reuses the straight pass's statistics (see :class:`StraightStatsBatchNorm`).
        """
        out = self.inject_conv(x)
        if isinstance(self.inject_norm, StraightStatsBatchNorm):
            return self.inject_norm(out, reuse_straight_stats=not straight)
        return self.inject_norm(out)
