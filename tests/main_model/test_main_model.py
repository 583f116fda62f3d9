"""Tests of the FPI block, the DynaLay network, its cost model and its checkpoints."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import jacobian_norm_by_power_iteration
from torch import nn

from main_model import (
    CheckpointError,
    ContractiveConv,
    DynaLayConfig,
    DynaLayNet,
    FPIBlock,
    load_main_model,
    save_main_model,
)
from main_model.checkpoint import FORMAT_VERSION, read_main_model_file
from main_model.network import THESIS_LOOP

# The thesis's loop (a contractive 3x3 conv, FFT bound): what these tests of the FPI machinery
# (contraction, gradients, batching, FLOPs) hand-check; the other loops: test_loop_operators.py.
TINY = DynaLayConfig(
    in_channels=1, image_size=8, num_classes=3, widths=(3, 4, 5), tol=1e-3, **THESIS_LOOP
)
# Today's default loop (1x1, feedback, residual readout) on the same shapes.
TINY_DEFAULT = DynaLayConfig(in_channels=1, image_size=8, num_classes=3, widths=(3, 4, 5), tol=1e-3)


def make_net(config: DynaLayConfig = TINY, seed: int = 0, weight_scale: float = 1.0) -> DynaLayNet:
    torch.manual_seed(seed)
    net = DynaLayNet(config)
    with torch.no_grad():
        for block in net.blocks:
            block.loop_conv.weight.mul_(weight_scale)
            norm = block.inject_norm
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.2, 0.2)
            if isinstance(norm, nn.BatchNorm2d):
                # Non-trivial running statistics so eval mode is not the identity.
                norm.running_mean.uniform_(-0.2, 0.2)
                norm.running_var.uniform_(0.5, 1.5)
    return net.eval()


def images_for(config: DynaLayConfig, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(
        batch, config.in_channels, config.image_size, config.image_size, generator=generator
    )


# ----- contraction --------------------------------------------------------------------------------
@pytest.mark.parametrize("weight_scale", [1.0, 25.0])
@pytest.mark.parametrize("train_mode", [False, True])
def test_fpi_map_is_a_contraction_in_z_at_random_points(weight_scale, train_mode):
    net = make_net(weight_scale=weight_scale)
    net.train(train_mode)
    images = images_for(TINY, 2)
    state = net.straight(images).state
    for index, block in enumerate(net.blocks):
        weight = block.loop_conv.effective_weight().detach()
        u = state.injection[index].detach()
        for point_seed in range(3):
            torch.manual_seed(point_seed)
            z = torch.rand_like(u) * 3.0

            def f(z, block=block, u=u, weight=weight):
                return block.f(z, u, weight)

            lipschitz = jacobian_norm_by_power_iteration(f, z)
            assert lipschitz < 1.0
            assert lipschitz <= TINY.contraction * (1 + 1e-3)


def dense_conv_norm(conv: ContractiveConv, weight: torch.Tensor, circular: bool = False) -> float:
    """Largest singular value of the convolution by ``weight`` as a dense matrix (exact)."""
    channels, size = weight.shape[0], conv.size
    if circular:  # the circular convolution on the grid of side size + k - 1

        def apply(x):
            return torch.nn.functional.conv2d(
                torch.nn.functional.pad(x, (conv.padding,) * 4, mode="circular"), weight
            )

        size += weight.shape[-1] - 1
    else:

        def apply(x):
            return conv.conv(x, weight)

    dense = torch.autograd.functional.jacobian(apply, torch.zeros(1, channels, size, size))
    return torch.linalg.matrix_norm(dense.reshape(channels * size**2, -1), ord=2).item()


@pytest.mark.parametrize("method", ["fft", "power"])
def test_operator_norm_estimate_against_dense_svd_not_the_reshaped_matrix(method):
    torch.manual_seed(0)
    conv = ContractiveConv(channels=2, size=5, bound=0.9, method=method).eval()
    estimate = conv.estimate_norm()
    weight = conv.weight.detach()
    true_norm = dense_conv_norm(conv, weight)
    reshaped_norm = torch.linalg.matrix_norm(weight.reshape(2, -1), ord=2).item()
    assert abs(reshaped_norm - true_norm) > 1e-2  # the proxy would be a different number
    if method == "power":  # converged power iteration: the norm itself
        assert estimate == pytest.approx(true_norm, rel=1e-4)
    else:  # the circular convolution's exact norm, which bounds the zero-padded one from above
        assert estimate == pytest.approx(dense_conv_norm(conv, weight, circular=True), rel=1e-5)
        assert true_norm <= estimate < 1.5 * true_norm
    effective = conv.effective_weight().detach()
    assert dense_conv_norm(conv, effective) <= 0.9 * (1 + 1e-4)


@pytest.mark.parametrize("method", ["fft", "power"])
def test_contraction_holds_while_training_moves_the_weights(method):
    """After every optimiser step the loop weight a training forward would use, by dense SVD, is
    within the bound with ``fft``; ``power``'s one warm-started step lags big moves and breaks it
    (this is why ``fft`` is the default)."""
    config = DynaLayConfig(**{**TINY.to_dict(), "spectral_norm": method, "max_iter": 5})
    net = make_net(config).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(60):
        images = images_for(config, 8, seed=int(torch.randint(1000, (1,), generator=generator)))
        actions = torch.randint(0, 4, (8,), generator=generator)
        labels = torch.randint(0, 3, (8,), generator=generator)
        logits = net(images, actions)
        # Large random moves of the loop weights, as large learning rates make.
        kick = sum(
            (
                torch.randn(block.loop_conv.weight.shape, generator=generator)
                * block.loop_conv.weight
            ).sum()
            for block in net.blocks
        )
        loss = torch.nn.functional.cross_entropy(logits, labels) + kick
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for block in net.blocks:
            used = block.loop_conv.effective_weight().detach()  # what the next forward uses
            worst = max(worst, dense_conv_norm(block.loop_conv, used))
    if method == "fft":
        assert worst <= config.contraction * (1 + 1e-5)
    else:
        assert worst > config.contraction * 1.02, worst


def test_norm_is_re_estimated_after_weights_change_in_eval_mode():
    torch.manual_seed(0)
    conv = ContractiveConv(channels=3, size=4, bound=0.5).eval()
    first = conv.effective_weight()
    with torch.no_grad():
        conv.weight.mul_(10.0)
    second = conv.effective_weight()
    assert conv.weight_norm.item() == pytest.approx(10 * conv.estimate_norm() / 10, rel=1e-5)
    assert torch.allclose(first, second, rtol=1e-4, atol=1e-6)  # rescaled back to the bound


# ----- looping ----------------------------------------------------------------------------------
def test_loop_reaches_tolerance_and_is_a_fixed_point():
    net = make_net(weight_scale=5.0)
    images = images_for(TINY, 6)
    with torch.no_grad():
        output = net.step(net.straight(images).state, torch.full((6,), 3))
    assert (output.state.residual < TINY.tol).all()
    assert (output.iterations > 1).all() and (output.iterations < TINY.max_iter).all()
    assert not output.diverged.any()
    for index, block in enumerate(net.blocks):
        z = output.state.z[index]
        with torch.no_grad():
            fz = block.f(z, output.state.injection[index])
        relative = (fz - z).flatten(1).norm(dim=1) / fz.flatten(1).norm(dim=1)
        # One more step from a point with residual r moves at most gamma * r.
        assert (relative < TINY.tol).all()


def test_loop_stops_at_max_iter_when_tolerance_is_unreachable():
    config = DynaLayConfig(**{**TINY.to_dict(), "tol": 1e-30, "max_iter": 4})
    net = make_net(config, weight_scale=5.0)
    with torch.no_grad():
        output = net.step(net.straight(images_for(config, 3)).state, torch.full((3,), 2))
    assert output.iterations[:, :2].eq(4).all() and output.iterations[:, 2].eq(0).all()


@pytest.mark.parametrize("failure", ["nan", "growth"])
def test_divergence_is_detected_per_sample_and_not_propagated(failure):
    block = FPIBlock(2, 2, in_size=4, stride=1, contraction=0.5).eval()
    u = torch.rand(3, 2, 4, 4)
    z0 = torch.rand(3, 2, 4, 4)
    calls = {"n": 0}
    honest_f = block.f

    def broken_f(z, u, weight=None):
        calls["n"] += 1
        out = honest_f(z, u, weight)
        if calls["n"] >= 2 and out.shape[0] == 3:
            bad = out.clone()
            bad[1] = math.nan if failure == "nan" else bad[1] * 1e6 + 1e6
            return bad
        return out

    block.f = broken_f
    with torch.no_grad():
        result = block.solve(u, z0, block.loop_conv.effective_weight(), tol=1e-6, max_iter=20)
    assert result.diverged.tolist() == [False, True, False]
    assert torch.isfinite(result.z).all()
    assert result.iterations[1].item() == 2
    assert result.residual[0] < 1e-6 and result.residual[2] < 1e-6


# ----- implicit backward ------------------------------------------------------------------------
def unrolled_logits(net: DynaLayNet, images: torch.Tensor, iterations: int) -> torch.Tensor:
    """Reference: loop every block by plain autograd through ``iterations`` applications of f."""
    x = images
    for block in net.blocks:
        u = block.inject(x)
        weight = block.loop_conv.effective_weight()
        z = block.straight(u)
        for _ in range(iterations):
            z = block.f(z, u, weight)
        x = z
    return net.head(x.mean(dim=(2, 3)))


def test_implicit_gradients_match_unrolled_backprop_in_float64():
    config = DynaLayConfig(
        **{
            **TINY.to_dict(),
            "tol": 1e-13,
            "max_iter": 400,
            "backward_tol": 1e-13,
            "backward_max_iter": 400,
        }
    )
    net = make_net(config, weight_scale=4.0).double()
    images = images_for(config, 4).double()
    weights = torch.randn(4, config.num_classes, dtype=torch.float64)

    def gradients(logits_fn):
        net.zero_grad()
        x = images.clone().requires_grad_()
        (logits_fn(x) * weights).sum().backward()
        return [x.grad.clone()] + [p.grad.clone() for p in net.parameters()]

    implicit = gradients(lambda x: net(x, torch.full((4,), config.n_blocks)))
    unrolled = gradients(lambda x: unrolled_logits(net, x, iterations=400))
    names = ["images"] + [name for name, _ in net.named_parameters()]
    for name, a, b in zip(names, implicit, unrolled, strict=True):
        error = (a - b).norm() / b.norm().clamp_min(1e-30)
        assert error < 1e-4, f"{name}: relative gradient error {error:.2e}"
        assert b.norm() > 0, f"{name}: no gradient reached it"


def test_implicit_backward_does_not_store_the_iterations():
    net = make_net(weight_scale=5.0)
    images = images_for(TINY, 2).requires_grad_()
    logits = net(images, torch.full((2,), 3))
    # The graph behind the logits holds one application of f per block, not one per iteration.
    seen, stack, relu_nodes = set(), [logits.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        relu_nodes += "Relu" in type(node).__name__
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert relu_nodes <= 2 * TINY.n_blocks  # straight relu + one f application per block


# ----- grouping by action and FLOPs ---------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [TINY, DynaLayConfig(**{**TINY.to_dict(), "loop_order": "output"}), TINY_DEFAULT],
    ids=["thesis", "output-order", "default"],
)
def test_mixed_action_batch_equals_each_sample_alone(config):
    net = make_net(config, weight_scale=5.0)
    images = images_for(TINY, 8)
    actions = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad():
        batched = net.step(net.straight(images).state, actions)
        for i in range(8):
            alone = net.step(net.straight(images[i : i + 1]).state, actions[i : i + 1])
            assert torch.allclose(batched.state.logits[i], alone.state.logits[0], atol=1e-5)
            assert batched.flops[i] == alone.flops[0]
            assert torch.equal(batched.iterations[i], alone.iterations[0])
            for z_batched, z_alone in zip(batched.state.z, alone.state.z, strict=True):
                assert torch.allclose(z_batched[i], z_alone[0], atol=1e-5)


@pytest.mark.parametrize("loop_order", ["input", "output"])
@pytest.mark.parametrize("norm", ["batch", "group"])
def test_train_mode_mixed_action_batch_gives_each_sample_its_own_result(norm, loop_order):
    """In training mode too, a sample's result does not depend on who shares its action.

    GroupNorm needs no batch statistics: each sample equals itself run alone. BatchNorm uses
    the straight pass's batch statistics on every path: each sample equals itself in the same
    batch with every sample taking its action (the group composition does not matter).
    """
    config = DynaLayConfig(**{**TINY.to_dict(), "norm": norm, "loop_order": loop_order})
    net = make_net(config, weight_scale=5.0).train()
    images = images_for(config, 8)
    actions = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])

    def run(rows: slice, batch_actions: torch.Tensor):
        trial = copy.deepcopy(net)  # the power iteration advances in training mode
        with torch.no_grad():
            return trial.step(trial.straight(images[rows]).state, batch_actions)

    mixed = run(slice(None), actions)
    for i in range(8):
        if norm == "group":
            reference, row = run(slice(i, i + 1), actions[i : i + 1]), 0
        else:
            reference, row = run(slice(None), torch.full((8,), int(actions[i]))), i
        assert torch.allclose(mixed.state.logits[i], reference.state.logits[row], atol=1e-5)
        assert torch.equal(mixed.iterations[i], reference.iterations[row])
        for z_mixed, z_reference in zip(mixed.state.z, reference.state.z, strict=True):
            assert torch.allclose(z_mixed[i], z_reference[row], atol=1e-5)


def test_batchnorm_running_statistics_see_only_straight_inputs():
    net = make_net(weight_scale=5.0).train()
    images = images_for(TINY, 8)
    straight_only, mixed = copy.deepcopy(net), copy.deepcopy(net)
    straight_only(images)
    mixed(images, torch.tensor([0, 1, 2, 3, 3, 2, 1, 0]))
    for block_a, block_b in zip(straight_only.blocks, mixed.blocks, strict=True):
        assert torch.equal(block_a.inject_norm.running_mean, block_b.inject_norm.running_mean)
        assert torch.equal(block_a.inject_norm.running_var, block_b.inject_norm.running_var)
        assert block_a.inject_norm.num_batches_tracked == 1


def test_train_mode_loop_without_a_straight_pass_is_refused():
    net = make_net(weight_scale=5.0)
    with torch.no_grad():
        state = net.straight(images_for(TINY, 2)).state
    fresh = DynaLayNet(TINY).train()
    with pytest.raises(RuntimeError, match="before any straight pass"):
        fresh.step(state, torch.tensor([2, 2]))


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_deq_cost_and_result_of_a_sample_do_not_depend_on_its_batch(solver):
    net = make_net(weight_scale=5.0)
    images = images_for(TINY, 6)
    with torch.no_grad():
        batched = net.step(net.straight(images).state, torch.full((6,), 3), solver=solver)
        for i in range(6):
            alone = net.step(
                net.straight(images[i : i + 1]).state, torch.tensor([3]), solver=solver
            )
            assert torch.equal(batched.iterations[i], alone.iterations[0])
            assert batched.flops[i] == alone.flops[0]
            assert torch.allclose(batched.state.logits[i], alone.state.logits[0], atol=1e-5)
    # The batch as a whole needs more solver steps than its fastest sample: costs differ.
    assert batched.iterations[:, 0].unique().numel() > 1


def test_flops_are_ordered_by_action():
    net = make_net(weight_scale=5.0)
    images = images_for(TINY, 1).expand(4, -1, -1, -1)
    with torch.no_grad():
        output = net.step(net.straight(images).state, torch.tensor([0, 1, 2, 3]))
    flops = output.flops.tolist()
    assert flops[0] == 0
    assert flops[0] < flops[1] < flops[2] < flops[3]
    assert max(flops) <= net.max_step_flops()


def test_flops_equal_a_hand_count_on_a_tiny_network():
    # 1x4x4 input, blocks of 2 (stride 1, 4x4) and 3 channels (stride 2, 2x2), 2 classes.
    config = DynaLayConfig(
        in_channels=1,
        image_size=4,
        num_classes=2,
        widths=(2, 3),
        max_iter=7,
        tol=1e-4,
        **THESIS_LOOP,
    )
    net = make_net(config, weight_scale=3.0)
    inject_1 = 2 * (1 * 9) * (2 * 4 * 4)  # 576: 2 FLOPs per MAC, 9 MACs per output, 32 outputs
    iterate_1 = 2 * (2 * 9) * (2 * 4 * 4)  # 1152
    inject_2 = 2 * (2 * 9) * (3 * 2 * 2)  # 432
    iterate_2 = 2 * (3 * 9) * (3 * 2 * 2)  # 648
    head = 2 * 3 * 2 + 2  # 14: weights plus bias
    images = images_for(config, 3)
    with torch.no_grad():
        straight = net.straight(images)
        step = net.step(straight.state, torch.tensor([0, 1, 2]))
    assert straight.flops.tolist() == [inject_1 + inject_2 + head] * 3 == [1022] * 3
    its = step.iterations.tolist()
    assert step.flops.tolist() == [
        0,
        inject_2 + its[1][0] * iterate_1 + head,
        inject_2 + its[2][0] * iterate_1 + its[2][1] * iterate_2 + head,
    ]
    assert net.max_step_flops() == inject_2 + 7 * (iterate_1 + iterate_2) + head

    # loop_order="output": loop-1 loops block 2 alone and re-runs nothing below it
    output_first = make_net(DynaLayConfig(**{**config.to_dict(), "loop_order": "output"}), 0, 3.0)
    with torch.no_grad():
        step = output_first.step(output_first.straight(images).state, torch.tensor([0, 1, 2]))
    its = step.iterations.tolist()
    assert its[1][0] == 0 and its[1][1] > 0 and its[2][0] > 0
    assert step.flops.tolist() == [
        0,
        its[1][1] * iterate_2 + head,
        inject_2 + its[2][0] * iterate_1 + its[2][1] * iterate_2 + head,
    ]


def test_output_order_loops_the_last_blocks_and_keeps_the_ones_below():
    """loop-1 from the output is the last block's loop from the injection the straight pass
    stored, every block below it untouched; loop-n loops them all, as from the input."""
    config = DynaLayConfig(**{**TINY.to_dict(), "loop_order": "output"})
    net, thesis = make_net(config, weight_scale=5.0), make_net(weight_scale=5.0)
    images = images_for(TINY, 4)
    with torch.no_grad():
        before = net.straight(images).state
        step = net.step(before, torch.ones(4, dtype=torch.long))
        last = net.blocks[-1]
        weight = last.loop_conv.effective_weight()
        expected = last.loop(
            before.injection[-1], before.z[-1], TINY.tol, TINY.max_iter, "fpi", weight
        )
        every = net.step(before, torch.full((4,), 3))
        every_thesis = thesis.step(thesis.straight(images).state, torch.full((4,), 3))
    for index in range(2):
        assert torch.equal(step.state.z[index], before.z[index])
        assert torch.equal(step.state.injection[index], before.injection[index])
    assert torch.allclose(step.state.z[-1], expected.z, atol=1e-6)
    assert torch.allclose(step.state.logits, net.readout(expected.z), atol=1e-6)
    assert step.iterations[:, :2].eq(0).all() and step.iterations[:, 2].gt(0).all()
    assert torch.allclose(every.state.logits, every_thesis.state.logits, atol=1e-6)


def test_bad_actions_and_images_give_clear_errors():
    net = make_net()
    state = net.straight(images_for(TINY, 2)).state
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\]"):
        net.step(state, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
        net.step(state, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        net.straight(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="contraction must be in"):
        DynaLayConfig(contraction=1.0)


# ----- checkpoints --------------------------------------------------------------------------------
def test_save_load_round_trips_exactly(tmp_path: Path):
    net = make_net(weight_scale=5.0)
    path = save_main_model(net, tmp_path / "model.pt", metadata={"dataset": "tiny"})
    loaded, metadata = load_main_model(path)
    assert metadata == {"dataset": "tiny"}
    assert loaded.config == net.config
    for (name, a), (_, b) in zip(
        net.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    images, actions = images_for(TINY, 4), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert torch.equal(net(images, actions), loaded(images, actions))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_bad_checkpoints_give_clear_errors(tmp_path: Path):
    net = make_net()
    good = save_main_model(net, tmp_path / "good.pt")

    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_main_model(tmp_path / "missing.pt")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt.*not a readable"):
        load_main_model(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt is not a DynaLay main-model"):
        load_main_model(foreign)

    payload = read_main_model_file(good)
    newer = tmp_path / "newer.pt"
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer.pt has checkpoint format version 2.*upgrade"):
        load_main_model(newer)

    with pytest.raises(CheckpointError, match=r"another architecture: in_channels: checkpoint 1"):
        load_main_model(good, expected_config=DynaLayConfig())

    mangled = tmp_path / "mangled.pt"
    state = dict(payload["state_dict"])
    state["head.weight"] = torch.zeros(7, 7)
    torch.save({**payload, "state_dict": state}, mangled)
    with pytest.raises(CheckpointError, match="mangled.pt: weights do not match"):
        load_main_model(mangled)


def test_saved_files_get_a_normal_mode_not_the_temporary_files_private_one(tmp_path: Path):
    path = save_main_model(make_net(), tmp_path / "model.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable by others, like open()


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    net = make_net()

    def exploding_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_main_model(net, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def test_default_network_matches_the_thesis_shapes():
    net = DynaLayNet()
    assert [b.loop_conv.weight.shape[0] for b in net.blocks] == [64, 128, 256]
    assert [b.out_size for b in net.blocks] == [32, 16, 8]
    assert isinstance(net.head, nn.Linear) and net.head.out_features == 10
    mnist = DynaLayNet(DynaLayConfig(in_channels=1, image_size=28))
    assert [b.out_size for b in mnist.blocks] == [28, 14, 7]


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_accelerated_solvers_reach_the_same_fixed_point(solver):
    net = make_net(weight_scale=5.0)
    images = images_for(TINY, 4)
    with torch.no_grad():
        state = net.straight(images).state
        plain = net.step(state, torch.full((4,), 3))
        fast = net.step(state, torch.full((4,), 3), solver=solver)
    assert torch.allclose(plain.state.logits, fast.state.logits, atol=1e-3)
    assert (fast.iterations[:, :3] >= 1).all() and not fast.diverged.any()
    assert (fast.flops <= net.max_step_flops()).all()
    with pytest.raises(ValueError, match="solver must be one of"):
        net.step(state, torch.full((4,), 3), solver="newton")
