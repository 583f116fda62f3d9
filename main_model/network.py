"""The DynaLay network: a stack of FPI blocks and a classifier head, run per-sample by action.

Actions (per sample): ``0`` = NOP (keep the current prediction, spend nothing); ``k >= 1`` =
loop blocks 1..k to their fixed points (warm-started from the current state), then run blocks
k+1..n straight through and the head again. With ``loop_order="output"`` loop-k loops the k
blocks nearest the head instead (blocks n-k+1..n), and the blocks before them keep their state:
a loop then re-runs nothing below it. Each block runs as one batch for all the samples
that loop it and one for those that run it straight, whatever their actions, and nothing in a
sample's computation depends on the others, so a mixed batch gives the results of running every
sample alone (up to the last bits of convolutions on batches of other sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from main_model.cost import linear_flops
from main_model.fpi import FPIBlock
from main_model.network_config import (
    LOOP_ORDERS,
    LOOP_READOUTS,
    THESIS_LOOP,
    DynaLayConfig,
    FPIConfig,
)
from main_model.state import TOP_PROBABILITIES, NetState, StepOutput

__all__ = [
    "LOOP_ORDERS",
    "LOOP_READOUTS",
    "SOLVERS",
    "THESIS_LOOP",
    "TOP_PROBABILITIES",
    "DynaLayConfig",
    "DynaLayNet",
    "FPIConfig",
    "FPINetwork",
    "NetState",
    "StepOutput",
]

SOLVERS = ("fpi", "anderson", "broyden")


class FPINetwork(nn.Module):
    """What every DynaLay network shares: actions, grouped stepping and the FLOP model.

    A network is a stack of n :class:`~main_model.fpi.FixedPointLayer` blocks (``self.blocks``)
    between an ``embed`` of the inputs and a ``readout`` of the last block's output. Subclasses
    set ``config`` (with ``tol`` and ``max_iter``), ``blocks`` and ``head_flops`` (FLOPs of one
    readout per sample), and define :meth:`embed`, :meth:`readout` and :meth:`_check_inputs`.
    ``straight(inputs)`` is the plain network; ``step(state, actions)`` applies one decision per
    sample; ``forward(inputs, actions)`` is both at once (the supervised-training entry point).
    """

    config: Any
    blocks: nn.ModuleList
    head_flops: int

    def embed(self, inputs: Tensor) -> Tensor:
        """The first block's input x from the network's inputs."""
        raise NotImplementedError

    def readout(self, z: Tensor) -> Tensor:
        """Logits from the last block's output z."""
        raise NotImplementedError

    def loop_readout(self, z: Tensor, previous_logits: Tensor) -> Tensor:
        """Logits after a loop step from the last block's output z and the logits before the
        step: the same readout unless the network reads loops out its own way."""
        return self.readout(z)

    def _check_inputs(self, inputs: Tensor) -> None:
        """Raise a ValueError that says what is wrong when ``inputs`` do not fit the network."""
        raise NotImplementedError

    @property
    def probability_features(self) -> int:
        """Width F of :meth:`NetState.class_probabilities` for this network's logits."""
        return self.config.num_classes

    def checkpoint_fields(self) -> dict[str, Any]:
        """Entries a checkpoint holds beside weights, config and provenance (none here)."""
        return {}

    @property
    def activation_bounds(self) -> tuple[float, float]:
        """The range of every block's output, so of its averages in the observation."""
        return self.blocks[0].output_bounds

    # ----- cost model -------------------------------------------------------------------------
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def n_actions(self) -> int:
        """NOP plus one loop action per block."""
        return self.n_blocks + 1

    def straight_flops(self) -> int:
        """FLOPs per sample of the plain network (every block straight through, the head)."""
        return sum(b.inject_flops for b in self.blocks) + self.head_flops

    def looped_blocks(self, action: int) -> range:
        """Indices (0-based) of the blocks loop action ``action`` loops (none for NOP)."""
        if action == 0:
            return range(0)
        n = self.n_blocks
        return range(action) if self.config.loop_order == "input" else range(n - action, n)

    def step_flops(self, action: int, iterations: Sequence[int]) -> int:
        """FLOPs of one step with loop action ``action`` and the given per-block iterations.

        The first looped block's injection depends only on what comes before it, which the
        step does not change, and is reused; every later block sees a new input and
        recomputes its injection; looped blocks add iterations x one W conv.
        """
        looped = self.looped_blocks(action)
        if not looped:
            return 0
        injections = sum(b.inject_flops for b in self.blocks[looped[0] + 1 :])
        loops = sum(
            int(iterations[i]) * self.blocks[i].iteration_flops
            + (self.blocks[i].loop_setup_flops if int(iterations[i]) > 0 else 0)
            for i in looped
        )
        return injections + loops + self.head_flops

    def max_step_flops(self) -> int:
        """FLOPs of the most expensive possible step: loop every block for ``max_iter``."""
        return self.step_flops(self.n_blocks, [self.config.max_iter] * self.n_blocks)

    def _step_flops_tensor(self, actions: Tensor, iterations: Tensor) -> Tensor:
        """Vectorised :meth:`step_flops`: (G,) FLOPs of G rows with loop ``actions`` (G,) and
        (G, n) iterations (0 for the blocks a row does not loop)."""
        device = iterations.device
        per_iteration = torch.tensor([b.iteration_flops for b in self.blocks], device=device)
        setup = torch.tensor([b.loop_setup_flops for b in self.blocks], device=device)
        fixed = torch.tensor(
            [self.step_flops(a, [0] * self.n_blocks) for a in range(self.n_actions)],
            device=device,
        )
        return fixed[actions] + (iterations * per_iteration + (iterations > 0) * setup).sum(1)

    # ----- forward paths ----------------------------------------------------------------------
    def straight(self, inputs: Tensor) -> StepOutput:
        """The straight pass (every block run once: the plain network) on a batch of inputs."""
        self._check_inputs(inputs)
        z, injections, x = [], [], self.embed(inputs)
        for block in self.blocks:
            u = block.inject(x)
            x = block.straight(u)
            injections.append(u)
            z.append(x)
        batch, n = inputs.shape[0], self.n_blocks
        state = NetState(
            z=tuple(z),
            injection=tuple(injections),
            logits=self.readout(x),
            residual=torch.ones(batch, n, device=x.device, dtype=x.dtype),
        )
        flops = torch.full((batch,), self.straight_flops(), dtype=torch.long, device=x.device)
        no_iterations = torch.zeros(batch, n, dtype=torch.long, device=x.device)
        return StepOutput(state, flops, no_iterations, torch.zeros_like(no_iterations, dtype=bool))

    def loop_weights(self) -> tuple[Tensor, ...]:
        """Every block's contractive loop weight, computed once per :meth:`step`.

        In training mode computing it advances the power iteration; doing it once per step
        (not once per action group) keeps a sample's result independent of its group.
        """
        return tuple(block.loop_conv.effective_weight() for block in self.blocks)

    def _run_loop_actions(
        self,
        state: NetState,
        counts: Sequence[int],
        weights: Sequence[Tensor],
        solver: str,
        unroll: int = 0,
        jacobian: bool = False,
    ) -> StepOutput:
        """Loop actions on samples sorted by action, deepest loop first (none is NOP).

        ``counts[k]``: how many samples chose loop-k (``counts[0]`` is ignored). The samples
        that loop block l are a prefix of them (those with action >= l, or >= n - l + 1 with
        ``loop_order="output"``), and so are those whose block l sees a new input (a block
        before it was looped): one batch per block for all actions at once, instead of one per
        action and block, which ran block 1's loop in as many small batches as there were
        actions (small convolutions cost several times more per sample on a CPU). A row that
        neither loops a block nor sees a new input there keeps its state (``output`` only).
        ``unroll`` and ``jacobian``: as :meth:`step`.
        """
        batch, n = state.batch_size, self.n_blocks
        device = state.logits.device
        from_input = self.config.loop_order == "input"
        z, injections, residual = [], [], []
        iterations = torch.zeros(batch, n, dtype=torch.long, device=device)
        diverged = torch.zeros(batch, n, dtype=torch.bool, device=device)
        # What feedback loops read: the prediction before this step (computed only if needed).
        feedback = any(block.has_feedback for block in self.blocks)
        probabilities = state.class_probabilities() if feedback else None
        penalty = state.logits.new_zeros(()) if jacobian else None
        for index, block in enumerate(self.blocks):
            # rows whose action loops this block, and rows whose input here is new
            if from_input:
                looped, fed = sum(counts[index + 1 :]), batch if index else 0
            else:
                looped, fed = sum(counts[n - index :]), sum(counts[n - index + 1 :])
            u = state.injection[index]
            if fed:
                new = block.inject(z[-1][:fed], straight=False)
                u = new if fed == batch else torch.cat([new, u[fed:]])
            parts, residuals = [], []
            if looped:
                u_loop = (
                    u[:looped]
                    if probabilities is None
                    else block.loop_injection(u[:looped], probabilities[:looped])
                )
                z_init = state.z[index][:looped]
                if unroll:
                    result = block.unrolled(u_loop, z_init, unroll, weights[index])
                else:
                    result = block.loop(
                        u_loop,
                        z_init,
                        self.config.tol,
                        self.config.max_iter,
                        solver,
                        weights[index],
                    )
                if jacobian:
                    share = looped / batch  # each looped (sample, block) pair counts alike
                    penalty = penalty + share * block.jacobian_penalty(
                        u_loop, result.z, weights[index]
                    )
                parts.append(result.z)
                residuals.append(result.residual.to(state.residual.dtype))
                iterations[:looped, index] = result.iterations
                diverged[:looped, index] = result.diverged
            if looped < fed:  # a new input, not looped: run straight
                parts.append(block.straight(u[looped:fed]))
                residuals.append(torch.ones_like(state.residual[looped:fed, index]))
            kept = max(looped, fed)
            if kept < batch:  # neither looped nor a new input: as it was
                parts.append(state.z[index][kept:])
                residuals.append(state.residual[kept:, index])
            z.append(parts[0] if len(parts) == 1 else torch.cat(parts))
            residual.append(residuals[0] if len(residuals) == 1 else torch.cat(residuals))
            injections.append(u)
        new_state = NetState(
            z=tuple(z),
            injection=tuple(injections),
            logits=self.loop_readout(z[-1], state.logits),
            residual=torch.stack(residual, dim=1),
        )
        # each row's action, in the rows' order (deepest loop first); no host sync
        repeats = torch.tensor(counts[n:0:-1], device=device)
        actions = torch.repeat_interleave(
            torch.arange(n, 0, -1, device=device), repeats, output_size=batch
        )
        flops = self._step_flops_tensor(actions, iterations)
        return StepOutput(new_state, flops, iterations, diverged, penalty)

    def step(
        self,
        state: NetState,
        actions: Tensor,
        solver: str = "fpi",
        *,
        unroll: int = 0,
        jacobian: bool = False,
    ) -> StepOutput:
        """Apply one action per sample. actions: (B,) ints in [0, n]; one batched run per block.

        ``solver``: ``fpi`` (per-sample fixed-point iteration) or TorchDEQ's ``anderson`` /
        ``broyden`` (the DEQ baseline). Training options (:mod:`main_model.train`):
        ``unroll`` > 0 stops every looped block after exactly that many iterations,
        differentiated through them (an iterate on the way to the fixed point, for a loss on
        several iterations; the action's FLOPs are those iterations'); ``jacobian`` also returns
        :attr:`StepOutput.jacobian`, TorchDEQ's Jacobian regulariser at each looped block's
        fixed point (:meth:`~main_model.fpi.FixedPointLayer.jacobian_penalty`), averaged over
        the batch's looped (sample, block) pairs with the rows that do not loop counted as 0.
        """
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if actions.dim() != 1 or actions.shape[0] != state.batch_size:
            raise ValueError(
                f"actions must have shape ({state.batch_size},), got {tuple(actions.shape)}"
            )
        actions = actions.to(device=state.logits.device, dtype=torch.long)
        batch, n, device = state.batch_size, self.n_blocks, state.logits.device
        # The step's one read from the device: how many samples chose each action, with the
        # out-of-range ones counted in two extra bins (below 0, above n). The loop rows then
        # come from one stable sort, so they need no further host syncs.
        bins = actions.clamp(-1, n + 1) + 1
        counts = torch.bincount(bins, minlength=n + 3).tolist() if batch else [0] * (n + 3)
        if counts[0] or counts[-1]:
            raise ValueError(
                f"actions must be in [0, {n}] (0 = NOP, k = loop blocks 1..k), "
                f"got values in [{int(actions.min())}, {int(actions.max())}]"
            )
        counts = counts[1:-1]  # samples per action 0..n
        if counts[0] == batch:  # all NOP: nothing runs, the state stays as it is
            flops = torch.zeros(batch, dtype=torch.long, device=device)
            iterations = torch.zeros(batch, n, dtype=torch.long, device=device)
            no_penalty = state.logits.new_zeros(()) if jacobian else None
            return StepOutput(
                state, flops, iterations, torch.zeros_like(iterations, dtype=bool), no_penalty
            )
        weights = self.loop_weights()
        options = dict(unroll=unroll, jacobian=jacobian)
        if max(counts) == batch:  # one loop action for all: no gather or scatter
            return self._run_loop_actions(state, counts, weights, solver, **options)
        # The looping samples, deepest loop first (a stable sort keeps their order within an
        # action), so each block's looped samples are a prefix of them; NOP rows come last.
        order = torch.argsort(actions, descending=True, stable=True)
        rows = order[: batch - counts[0]]
        run = self._run_loop_actions(state.select(rows), counts, weights, solver, **options)
        if counts[0] == 0:  # every row ran: put them back in place by the inverse order
            back = torch.argsort(order)
            return StepOutput(
                run.state.select(back),
                run.flops.index_select(0, back),
                run.iterations.index_select(0, back),
                run.diverged.index_select(0, back),
                run.jacobian,
            )
        # NOP rows: nothing runs, their state stays as it is
        flops = torch.zeros(batch, dtype=torch.long, device=device).index_copy(0, rows, run.flops)
        iterations = torch.zeros(batch, n, dtype=torch.long, device=device)
        return StepOutput(
            state.clone().put_rows_(rows, run.state),
            flops,
            iterations.index_copy(0, rows, run.iterations),
            torch.zeros_like(iterations, dtype=bool).index_copy(0, rows, run.diverged),
            None if run.jacobian is None else run.jacobian * (len(rows) / batch),
        )

    def forward(self, inputs: Tensor, actions: Tensor | None = None, solver: str = "fpi") -> Tensor:
        """Logits after the straight pass and, if given, one action per sample."""
        output = self.straight(inputs)
        if actions is not None:
            output = self.step(output.state, actions, solver)
        return output.state.logits


class DynaLayNet(FPINetwork):
    """The image network: a stack of :class:`FPIBlock` and a linear head over
    global-average-pooled features. ``straight(images)`` is the plain CNN; images are
    (B, C, H, W) normalised floats. The rest is :class:`FPINetwork`'s.
    """

    def __init__(self, config: DynaLayConfig | None = None) -> None:
        super().__init__()
        self.config = config or DynaLayConfig()
        blocks, channels, size = [], self.config.in_channels, self.config.image_size
        for width, stride in zip(self.config.widths, self.config.strides, strict=True):
            block = FPIBlock(
                channels,
                width,
                size,
                stride,
                self.config.contraction,
                norm=self.config.norm,
                norm_groups=self.config.norm_groups,
                spectral_norm=self.config.spectral_norm,
                backward_tol=self.config.backward_tol,
                backward_max_iter=self.config.backward_max_iter,
                loop_operator=self.config.loop_operator,
                loop_rank=self.config.loop_rank,
                backward=self.config.backward,
                phantom_steps=self.config.phantom_steps,
                phantom_tau=self.config.phantom_tau,
                feedback_classes=self.config.num_classes if self.config.feedback else 0,
            )
            blocks.append(block)
            channels, size = width, block.out_size
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, self.config.num_classes)
        # A loop's own linear readout (same FLOPs as the head): the looped state's conclusion
        # need not be the straight one's. As a residual it starts at zero: a loop first
        # answers what the network answered before it, then learns to correct it.
        self.loop_head = None
        if self.config.loop_readout != "shared":
            self.loop_head = nn.Linear(channels, self.config.num_classes)
            if self.config.loop_readout == "residual":
                nn.init.zeros_(self.loop_head.weight)
                nn.init.zeros_(self.loop_head.bias)
        #: What the model was trained on (dataset, training rows, recipe), saved with its
        #: checkpoints; whoever trains it fills it in (``dynalay_env.data.training_provenance``).
        self.provenance: dict[str, Any] = {}
        self.head_flops = linear_flops(channels, self.config.num_classes)

    def embed(self, inputs: Tensor) -> Tensor:
        """The images themselves: (B, C, H, W) normalised floats."""
        return inputs

    def readout(self, z: Tensor) -> Tensor:
        """(B, K) logits: the head on the global-average-pooled last block."""
        return self.head(z.mean(dim=(2, 3)))

    def loop_readout(self, z: Tensor, previous_logits: Tensor) -> Tensor:
        """(B, K) logits after a loop step (``config.loop_readout``): the head (``shared``),
        ``loop_head`` (``head``), or ``residual``: the logits before the step (detached: the
        straight pass is not trained through it) plus ``loop_head``'s correction."""
        if self.loop_head is None:
            return self.readout(z)
        logits = self.loop_head(z.mean(dim=(2, 3)))
        if self.config.loop_readout == "residual":
            return previous_logits.detach() + logits
        return logits

    def _check_inputs(self, images: Tensor) -> None:
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) for this "
                f"network, got {tuple(images.shape)}; build the network with a DynaLayConfig "
                f"whose in_channels/image_size match the data"
            )
