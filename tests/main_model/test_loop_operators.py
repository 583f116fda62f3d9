"""The loop operators (conv3x3, conv1x1, dwsep, lowrank), feedback and the cheap backwards.

Each operator must keep f(z) = relu(W z + u) a contraction at every use: its bound is checked
against the dense SVD of the map it actually applies, in training after large optimiser steps
too; its FLOPs against a hand count; the straight path must not depend on it; the phantom and
Jacobian-free gradients against the exact implicit one on a tiny problem.
"""

from __future__ import annotations

import pytest
import torch

from main_model import DynaLayConfig, DynaLayNet
from main_model.fpi import FPIBlock
from main_model.loop_operators import LOOP_OPERATORS, build_loop_operator


def dense_operator_norm(operator, weights, channels: int, size: int) -> float:
    """Largest singular value of z -> W z on (channels, size, size) maps, from its dense matrix."""
    basis = torch.eye(channels * size * size, dtype=torch.float64)
    if isinstance(weights, tuple):  # the factored operators
        weights = tuple(w.detach().double() for w in weights)
    else:  # conv3x3: one tensor
        weights = weights.detach().double()
    with torch.no_grad():
        images = operator.conv(basis.view(-1, channels, size, size), weights)
    return float(torch.linalg.matrix_norm(images.flatten(1), ord=2))


@pytest.mark.parametrize("name", LOOP_OPERATORS)
def test_bound_holds_at_init_and_after_large_training_steps(name):
    torch.manual_seed(0)
    channels, size, bound = 4, 5, 0.8
    operator = build_loop_operator(name, channels, size, bound, rank=2).train()
    optimizer = torch.optim.Adam(operator.parameters(), lr=0.5)
    z = torch.randn(8, channels, size, size)
    worst = 0.0
    for _ in range(25):
        weights = operator.effective_weight()
        worst = max(worst, dense_operator_norm(operator, weights, channels, size))
        loss = -operator.conv(z, weights).square().sum()  # push the map's norm up, hard
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert worst <= bound * (1 + 1e-6), f"{name}: operator norm {worst} above bound {bound}"
    assert worst >= 0.5 * bound, f"{name}: the push should bring the norm near the bound"
    operator.eval()  # evaluation re-computes its norm for the moved weights
    final = dense_operator_norm(operator, operator.effective_weight(), channels, size)
    assert final <= bound * (1 + 1e-6)


def test_exact_operators_reach_their_bound():
    """conv1x1 and lowrank bounds are exact: a map scaled past the bound lands on it."""
    torch.manual_seed(1)
    for name in ("conv1x1", "lowrank"):
        operator = build_loop_operator(name, 4, 3, 0.7, rank=2).eval()
        with torch.no_grad():
            for parameter in operator.parameters():
                parameter.mul_(10.0)
        norm = dense_operator_norm(operator, operator.effective_weight(), 4, 3)
        assert norm == pytest.approx(0.7, rel=1e-5), name


def test_iteration_flops_against_a_hand_count():
    channels, size = 16, 7
    pixels = size * size
    expected = {
        "conv3x3": 2 * channels * channels * 9 * pixels,
        "conv1x1": 2 * channels * channels * pixels,
        "dwsep": 2 * channels * 9 * pixels + 2 * channels * channels * pixels,
        "lowrank": 2 * (2 * channels * 4 * pixels),  # rank 4: C -> 4 -> C
    }
    for name, flops in expected.items():
        operator = build_loop_operator(name, channels, size, 0.8, rank=4)
        assert operator.iteration_flops == flops, name


def test_step_flops_count_feedback_once_per_looped_block():
    config = DynaLayConfig(
        in_channels=1, image_size=8, num_classes=3, widths=(4, 6), strides=(2, 2), feedback=False
    )
    plain, fed = (
        DynaLayNet(c).eval()
        for c in (config, DynaLayConfig(**{**config.to_dict(), "feedback": True}))
    )
    iterations = [3, 2]
    assert fed.step_flops(1, iterations) - plain.step_flops(1, iterations) == 2 * 3 * 4 + 4
    extra = (2 * 3 * 4 + 4) + (2 * 3 * 6 + 6)
    assert fed.step_flops(2, iterations) - plain.step_flops(2, iterations) == extra
    # the batched count of step() agrees with step_flops per sample
    images = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        out = fed.straight(images)
        step = fed.step(out.state, torch.tensor([1, 2, 0, 2, 1]))
    for row in range(5):
        action = [1, 2, 0, 2, 1][row]
        assert int(step.flops[row]) == fed.step_flops(action, step.iterations[row].tolist())


def _shared_weights(source: DynaLayNet, target: DynaLayNet) -> None:
    """Copy every parameter and buffer the two nets share by name (all but the loop maps)."""
    own = target.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    target.load_state_dict({**own, **shared})


def test_straight_path_is_the_same_function_whatever_the_loop():
    base = dict(in_channels=1, image_size=8, num_classes=3, widths=(4, 6), strides=(2, 2))
    torch.manual_seed(0)
    reference = DynaLayNet(DynaLayConfig(**base, loop_operator="conv3x3")).eval()
    images = torch.randn(6, 1, 8, 8)
    expected = reference.straight(images).state.logits
    for name in LOOP_OPERATORS:
        for feedback in (False, True):
            net = DynaLayNet(DynaLayConfig(**base, loop_operator=name, feedback=feedback)).eval()
            _shared_weights(reference, net)
            torch.testing.assert_close(net.straight(images).state.logits, expected)


def test_feedback_changes_the_loop_and_starts_as_none():
    # the shared readout: a residual one starts at zero and would hide what the loop does
    base = dict(
        in_channels=1,
        image_size=8,
        num_classes=3,
        widths=(4, 6),
        strides=(2, 2),
        loop_readout="shared",
    )
    torch.manual_seed(0)
    plain = DynaLayNet(DynaLayConfig(**base, loop_operator="conv1x1", feedback=False)).eval()
    fed = DynaLayNet(DynaLayConfig(**base, loop_operator="conv1x1", feedback=True)).eval()
    _shared_weights(plain, fed)
    images, actions = torch.randn(6, 1, 8, 8), torch.full((6,), 2)
    with torch.no_grad():
        for block in (*plain.blocks, *fed.blocks):
            block.loop_conv.weight.mul_(5.0)  # loops that iterate
        same = [net.step(net.straight(images).state, actions).state.logits for net in (plain, fed)]
        torch.testing.assert_close(same[0], same[1])  # V = 0 at initialisation
        for block in fed.blocks:
            block.feedback.weight.normal_()
        changed = fed.step(fed.straight(images).state, actions).state.logits
    assert (changed - same[0]).abs().max() > 1e-3
    # what the loop reads is the prediction before the step: NOP rows never see it
    with torch.no_grad():
        mixed = fed.step(fed.straight(images).state, torch.tensor([0, 2, 0, 2, 0, 2]))
    torch.testing.assert_close(mixed.state.logits[0::2], fed.straight(images).state.logits[0::2])


def _loop_gradient(backward: str, steps: int = 5, tau: float = 0.5) -> torch.Tensor:
    torch.manual_seed(0)
    block = FPIBlock(
        2,
        3,
        5,
        1,
        contraction=0.5,
        loop_operator="conv1x1",
        backward=backward,
        phantom_steps=steps,
        phantom_tau=tau,
        backward_tol=1e-10,
        backward_max_iter=200,
    ).train()
    x = torch.randn(4, 2, 5, 5)
    with torch.no_grad():
        block.loop_conv.weight.mul_(5.0)
    u = block.inject(x)
    result = block.loop(u, block.straight(u), tol=1e-10, max_iter=200)
    loss = (result.z * torch.linspace(-1, 1, result.z.numel()).view_as(result.z)).sum()
    (grad,) = torch.autograd.grad(loss, block.loop_conv.weight)
    return grad.flatten()


def test_phantom_and_jfb_gradients_against_the_exact_implicit_one():
    exact = _loop_gradient("ift")
    long_phantom = _loop_gradient("phantom", steps=40, tau=1.0)
    # 40 undamped steps from z*: the Neumann series of (I - J)^-1 up to 0.5^40
    torch.testing.assert_close(long_phantom, exact, rtol=1e-4, atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity
    phantom = _loop_gradient("phantom", steps=5, tau=0.5)
    jfb = _loop_gradient("jfb")
    assert float(cosine(phantom, exact, dim=0)) > 0.95
    assert float(cosine(jfb, exact, dim=0)) > 0.7  # J taken as 0 with ||J|| <= 0.5
    assert (jfb - exact).norm() > 1e-3 * exact.norm()  # the option does change the gradient


def test_config_defaults_and_legacy_checkpoints():
    legacy = DynaLayConfig().to_dict()
    for key in (
        "loop_operator",
        "backward",
        "feedback",
        "loop_rank",
        "phantom_steps",
        "phantom_tau",
        "loop_readout",
        "loop_order",
    ):
        legacy.pop(key)
    restored = DynaLayConfig.from_dict(legacy)
    assert (
        restored.loop_operator,
        restored.backward,
        restored.feedback,
        restored.loop_readout,
        restored.loop_order,
    ) == ("conv3x3", "ift", False, "shared", "input")
    with pytest.raises(ValueError, match="loop_operator must be one of"):
        DynaLayConfig(loop_operator="conv5x5")
    with pytest.raises(ValueError, match="backward must be one of"):
        DynaLayConfig(backward="bptt")
    with pytest.raises(ValueError, match="loop_rank"):
        DynaLayConfig(widths=(4, 8), loop_rank=5)
    with pytest.raises(ValueError, match="loop_order must be one of"):
        DynaLayConfig(loop_order="middle")


@pytest.mark.parametrize("readout", ["head", "residual"])
def test_loop_readout_reads_out_loop_steps_only(readout):
    base = dict(in_channels=1, image_size=8, num_classes=3, widths=(4, 6), strides=(2, 2))
    torch.manual_seed(0)
    net = DynaLayNet(DynaLayConfig(**base, loop_operator="conv1x1", loop_readout=readout)).eval()
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        net.loop_head.weight.normal_()  # a residual head starts at zero: give it a value
        out = net.straight(images)
        pooled = out.state.z[-1].mean(dim=(2, 3))
        torch.testing.assert_close(out.state.logits, net.head(pooled))  # straight: the head
        step = net.step(out.state, torch.tensor([1, 0, 2, 1]))
        looped = step.state.z[-1].mean(dim=(2, 3))
        expected = net.loop_head(looped)
        if readout == "residual":  # the logits before the step plus the loop's correction
            expected = expected + out.state.logits
        torch.testing.assert_close(step.state.logits[[0, 2, 3]], expected[[0, 2, 3]])
        torch.testing.assert_close(step.state.logits[1], out.state.logits[1])  # NOP row
    fresh = DynaLayNet(DynaLayConfig(**base, loop_operator="conv1x1", loop_readout="residual"))
    assert fresh.loop_head.weight.abs().sum() == 0  # a residual loop starts as "no change"


def test_residual_readout_trains_the_loop_not_the_straight_head():
    base = dict(in_channels=1, image_size=8, num_classes=3, widths=(4, 6), strides=(2, 2))
    torch.manual_seed(0)
    net = DynaLayNet(DynaLayConfig(**base, loop_operator="conv1x1", loop_readout="residual"))
    net.train()
    out = net.straight(torch.randn(4, 1, 8, 8))
    logits = net.step(out.state, torch.full((4,), 2)).state.logits
    logits.sum().backward()
    assert net.head.weight.grad is None  # the previous logits enter detached
    assert net.loop_head.weight.grad is not None


def test_loop_weighting_against_hand_computed_losses():
    from main_model.recipes import Recipe
    from main_model.train import sample_losses
    from main_model.training_forward import PathLogits

    straight = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]))
    loop = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    paths = PathLogits(straight, loop)
    labels = torch.tensor([0, 0, 1])
    actions = torch.tensor([1, 2, 0])  # the third sample takes NOP: no loop loss
    ce_straight = -torch.log(torch.tensor([0.9, 0.4, 0.5]))
    ce_loop = -torch.log(torch.tensor([0.8, 0.3, 0.4]))
    uniform, _ = sample_losses(paths, labels, actions, Recipe("x", 1, None, True))
    torch.testing.assert_close(uniform, ce_straight + ce_loop * torch.tensor([1.0, 1.0, 0.0]))
    # hard: 1 - p_straight(label) = 0.1, 0.6 over the two looped samples, mean 0.35
    hard, _ = sample_losses(
        paths, labels, actions, Recipe("x", 1, None, True, loop_weighting="hard")
    )
    weights = torch.tensor([0.1 / 0.35, 0.6 / 0.35, 0.0])
    torch.testing.assert_close(hard, ce_straight + ce_loop * weights)
    # unsure: 1 - max p_straight = 0.1, 0.4, mean 0.25
    unsure, _ = sample_losses(
        paths, labels, actions, Recipe("x", 1, None, True, loop_weighting="unsure")
    )
    torch.testing.assert_close(unsure, ce_straight + ce_loop * torch.tensor([0.4, 1.6, 0.0]))
    with pytest.raises(ValueError, match="loop_weighting must be one of"):
        Recipe("x", 1, None, True, loop_weighting="focal")
    with pytest.raises(ValueError, match="needs train_straight"):
        Recipe("x", 1, None, False, loop_weighting="hard")


def test_distillation_against_hand_computed_losses():
    """A loop's loss = (1 - w) CE(label) + w T^2 KL(teacher_T || loop_T); the straight path
    and NOP samples learn the labels alone, and path_losses stays the cross-entropy."""
    from main_model.recipes import Recipe
    from main_model.train import sample_losses
    from main_model.training_forward import PathLogits

    straight = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]))
    loop = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    teacher = torch.log(torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.2, 0.8]]))
    labels = torch.tensor([0, 0, 1])
    actions = torch.tensor([1, 2, 0])
    weight, temperature = 0.25, 2.0
    recipe = Recipe("x", 1, None, True, distill_weight=weight, distill_temperature=temperature)

    def softened(p: torch.Tensor) -> torch.Tensor:  # softmax(log p / T) = p^(1/T) normalised
        q = p ** (1 / temperature)
        return q / q.sum(1, keepdim=True)

    p_teacher = softened(torch.tensor([[0.7, 0.3], [0.9, 0.1], [0.2, 0.8]]))
    p_loop = softened(torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    kl = (p_teacher * (p_teacher / p_loop).log()).sum(1) * temperature**2
    ce_straight = -torch.log(torch.tensor([0.9, 0.4, 0.5]))
    ce_loop = -torch.log(torch.tensor([0.8, 0.3, 0.4]))
    losses, path_losses = sample_losses(
        PathLogits(straight, loop), labels, actions, recipe, teacher_logits=teacher
    )
    looped = torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(
        losses, ce_straight + ((1 - weight) * ce_loop + weight * kl) * looped
    )
    torch.testing.assert_close(path_losses, ce_loop)
    # a teacher that agrees with the loop leaves only the weighted cross-entropy
    same, _ = sample_losses(
        PathLogits(straight, loop), labels, actions, recipe, teacher_logits=loop
    )
    torch.testing.assert_close(same, ce_straight + (1 - weight) * ce_loop * looped)
    with pytest.raises(ValueError, match="teacher_logits are needed"):
        sample_losses(PathLogits(straight, loop), labels, actions, recipe)
    with pytest.raises(ValueError, match=r"distill_weight must be in \[0, 1\]"):
        Recipe("x", 1, None, True, distill_weight=1.5)
    with pytest.raises(ValueError, match="distillation needs train_straight"):
        Recipe("x", 1, None, False, distill_weight=0.5)


def test_distilling_recipe_needs_a_teacher_and_trains_the_loop_toward_it():
    """fit refuses a distilling recipe without a teacher; with one, the teacher's logits reach
    the loss (a loop trained only toward a teacher that always says class 1 ends up saying 1)."""
    import dataclasses

    from main_model.recipes import get_recipe
    from main_model.train import fit

    torch.manual_seed(0)
    net = DynaLayNet(
        DynaLayConfig(
            in_channels=1,
            image_size=8,
            num_classes=3,
            widths=(4, 4),
            strides=(2, 2),
            loop_operator="conv1x1",
            loop_readout="residual",
        )
    )
    recipe = dataclasses.replace(
        get_recipe("dynalay"), distill_weight=1.0, loop_weighting="uniform"
    )
    images, labels = torch.randn(32, 1, 8, 8), torch.zeros(32, dtype=torch.long)
    batches = lambda epoch: [(images, labels)]  # noqa: E731
    with pytest.raises(ValueError, match="no teacher was given"):
        fit(net, batches, epochs=1, batches_per_epoch=1, recipe=recipe)

    def says_one(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 8.0, 0.0]]).expand(x.shape[0], 3)

    fit(
        net,
        batches,
        epochs=30,
        batches_per_epoch=1,
        recipe=recipe,
        learning_rate=5e-2,
        teacher=says_one,
    )
    with torch.no_grad():
        out = net.straight(images)
        looped = net.step(out.state, torch.full((32,), 1)).state.logits
    assert (out.state.logits.argmax(1) == 0).all()  # the straight path learned the labels
    assert (looped.argmax(1) == 1).float().mean() > 0.9  # the loop learned the teacher
