"""Training options of a recipe: a loss on several iterations (``Recipe.iterate_losses``), the
Jacobian regulariser (``Recipe.jacobian_weight``) and loops on a share of each batch
(``Recipe.loop_share``): each against an independent recomputation.

- ``FixedPointLayer.unrolled`` is k applications of f, differentiated through each of them;
- a step with ``unroll=k`` loops every looped block exactly k times;
- the iterate losses join the loop loss with TorchDEQ's exponential weights (hand-computed);
- the Jacobian penalty is an unbiased estimate of ||J_f(z*)||_F^2 / numel, checked against the
  dense Jacobian; a mixed batch counts the rows that do not loop as 0;
- training with the penalty lowers the loops' Jacobian norm and iterations;
- a loop share draws NOP for the other samples, scales their loop losses by 1 / share, and a
  share of 1 draws exactly what the recipe drew before the option existed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from main_model import DynaLayConfig, DynaLayNet
from main_model.fpi import FPIBlock
from main_model.recipes import Recipe, get_recipe, recipe_actions
from main_model.train import fit, sample_losses
from main_model.training_forward import PathLogits


def tiny_block() -> tuple[FPIBlock, torch.Tensor]:
    """A 1x1-loop block (2 -> 3 channels, 4x4 maps) with weights pushed near its bound, and an
    injection u (2, 3, 4, 4)."""
    torch.manual_seed(0)
    block = FPIBlock(2, 3, 4, 1, contraction=0.8, loop_operator="conv1x1").eval()
    with torch.no_grad():
        block.loop_conv.weight.mul_(5.0)
    u = block.inject(torch.randn(2, 2, 4, 4))
    return block, u


def test_unrolled_is_k_applications_of_f_with_their_gradient():
    block, u = tiny_block()
    weight = block.loop_conv.effective_weight()
    z0 = block.straight(u)
    result = block.unrolled(u, z0, 3, weight)
    z = z0
    for _ in range(3):
        z = torch.relu(block.loop_conv.conv(z, weight) + u)
    torch.testing.assert_close(result.z, z)
    assert result.iterations.tolist() == [3, 3]
    # the gradient flows through the three steps into W (unlike a solve, which has no graph)
    (grad,) = torch.autograd.grad(result.z.sum(), block.loop_conv.weight, retain_graph=True)
    (expected,) = torch.autograd.grad(z.sum(), block.loop_conv.weight)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="steps must be >= 1"):
        block.unrolled(u, z0, 0, weight)


def test_a_step_unrolled_k_times_loops_each_looped_block_k_times():
    torch.manual_seed(1)
    config = DynaLayConfig(
        in_channels=1, image_size=28, widths=(4, 4, 4), loop_order="output", feedback=True
    )
    net = DynaLayNet(config).eval()
    images = torch.randn(3, 1, 28, 28)
    straight = net.straight(images)
    actions = torch.tensor([2, 0, 1])
    out = net.step(straight.state, actions, unroll=2)
    assert out.iterations.tolist() == [[0, 2, 2], [0, 0, 0], [0, 0, 2]]
    # row 2 (loop-1, output order: the last block) by hand: two steps of f, feedback included
    block = net.blocks[2]
    weight = block.loop_conv.effective_weight()
    u = block.loop_injection(
        straight.state.injection[2][2:], straight.state.class_probabilities()[2:]
    )
    z = straight.state.z[2][2:]
    for _ in range(2):
        z = block.f(z, u, weight)
    expected = net.loop_readout(z, straight.state.logits[2:])
    torch.testing.assert_close(out.state.logits[2:], expected)
    torch.testing.assert_close(out.state.logits[1], straight.state.logits[1])  # NOP as it was


def test_iterate_losses_join_the_loop_loss_with_exponential_weights():
    straight = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]]))
    fixed_point = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    after_one = torch.log(torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]))
    after_two = torch.log(torch.tensor([[0.75, 0.25], [0.25, 0.75], [0.4, 0.6]]))
    labels = torch.tensor([0, 0, 1])
    actions = torch.tensor([1, 2, 0])  # the NOP sample has no loop loss at all
    recipe = Recipe("x", 1, None, True, iterate_losses=(1, 2), iterate_gamma=0.5)
    paths = PathLogits(straight, fixed_point, (after_one, after_two))
    losses, path_losses = sample_losses(paths, labels, actions, recipe)
    ce = {
        "straight": -torch.log(torch.tensor([0.9, 0.4, 0.5])),
        "fixed": -torch.log(torch.tensor([0.8, 0.3, 0.4])),
        "one": -torch.log(torch.tensor([0.7, 0.2, 0.5])),
        "two": -torch.log(torch.tensor([0.75, 0.25, 0.6])),
    }
    # TorchDEQ's exp weights over the 3 states: 0.5^2 (after 1), 0.5^1 (after 2), 1 (z*)
    loop = ce["fixed"] + 0.5 * ce["two"] + 0.25 * ce["one"]
    torch.testing.assert_close(losses, ce["straight"] + loop * torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(path_losses, ce["fixed"])  # what the statistics report
    with pytest.raises(ValueError, match=r"after \(1, 2\) iterations, got 1 such answers"):
        sample_losses(PathLogits(straight, fixed_point, (after_one,)), labels, actions, recipe)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(iterate_losses=(2, 1)), "increasing iteration counts"),
        (dict(iterate_losses=(0,)), "increasing iteration counts"),
        (dict(iterate_gamma=0.0), r"iterate_gamma must be in \(0, 1\]"),
        (dict(jacobian_weight=-1.0), "jacobian_weight must be >= 0"),
    ],
)
def test_bad_recipe_options_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        Recipe("x", 1, None, True, **fields)
    with pytest.raises(ValueError, match="iterate_losses needs train_straight"):
        Recipe("x", 1, None, False, iterate_losses=(1,))
    assert Recipe("x", 1, None, True, iterate_losses=[1, 3]).iterate_losses == (1, 3)  # JSON


def dense_jacobian_norm(block: FPIBlock, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||J_f(z)||_F^2 / numel(z) from the dense Jacobian of z -> f(z, u) (all rows at once)."""
    weight = block.loop_conv.effective_weight()
    weight = tuple(w.detach() for w in weight) if isinstance(weight, tuple) else weight.detach()
    jacobian = torch.autograd.functional.jacobian(
        lambda z_: block.f(z_, u.detach(), weight), z.detach()
    )
    return jacobian.square().sum() / z.numel()


def test_jacobian_penalty_estimates_the_dense_frobenius_norm():
    block, u = tiny_block()
    weight = block.loop_conv.effective_weight()
    z_star = block.loop(u.detach(), block.straight(u).detach(), tol=1e-8, max_iter=200).z
    exact = dense_jacobian_norm(block, u, z_star)
    torch.manual_seed(2)
    estimates = torch.stack([block.jacobian_penalty(u, z_star, weight) for _ in range(2000)])
    # Hutchinson's estimate is unbiased: the mean of 2000 is within a few percent
    torch.testing.assert_close(estimates.mean(), exact, rtol=0.05, atol=0.0)
    assert 0 < float(exact) <= 0.8**2 + 1e-6  # |J v| <= ||W|| |v|: per element at most 0.64
    # it has a graph into W, so it can be trained
    (grad,) = torch.autograd.grad(estimates[0], block.loop_conv.weight)
    assert grad.abs().sum() > 0


def test_a_step_penalty_counts_the_rows_that_do_not_loop_as_zero():
    torch.manual_seed(3)
    net = DynaLayNet(DynaLayConfig(in_channels=1, image_size=28, widths=(4, 4, 4))).train()
    images = torch.randn(4, 1, 28, 28)
    straight = net.straight(images)
    torch.manual_seed(4)
    mixed = net.step(straight.state, torch.tensor([1, 0, 1, 0]), jacobian=True).jacobian
    rows = torch.tensor([0, 2])
    torch.manual_seed(4)  # the same random vector, now on the two looping rows alone
    alone = net.step(straight.state.select(rows), torch.tensor([1, 1]), jacobian=True).jacobian
    torch.testing.assert_close(mixed, alone * 0.5)
    assert float(alone.detach()) > 0
    nop = net.step(straight.state, torch.zeros(4, dtype=torch.long), jacobian=True).jacobian
    assert float(nop.detach()) == 0.0
    assert net.step(straight.state, torch.tensor([1, 0, 1, 0])).jacobian is None


def test_training_with_the_penalty_lowers_the_loops_jacobian_and_iterations():
    config = DynaLayConfig(
        in_channels=1, image_size=28, widths=(4, 4, 4), loop_order="output", tol=1e-3
    )
    torch.manual_seed(5)
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 64, 16)]

    def trained(weight: float) -> tuple[float, float]:
        torch.manual_seed(6)
        net = DynaLayNet(config)
        recipe = dataclasses.replace(get_recipe("dynalay"), jacobian_weight=weight)
        fit(
            net, lambda _: batches, epochs=3, batches_per_epoch=4, recipe=recipe, learning_rate=1e-2
        )
        net.eval()
        with torch.no_grad():
            straight = net.straight(images)
            out = net.step(straight.state, torch.full((64,), 3))
        block = net.blocks[2]
        u = block.loop_injection(out.state.injection[2], straight.state.class_probabilities())
        norm = float(dense_jacobian_norm(block, u[:4], out.state.z[2][:4]))
        return norm, float(out.iterations.float().mean())

    free_norm, free_iterations = trained(0.0)
    penalised_norm, penalised_iterations = trained(100.0)
    assert penalised_norm < 0.7 * free_norm  # measured: 0.074 against 0.141
    assert penalised_iterations < free_iterations


def test_a_loop_share_draws_nop_for_the_rest_and_a_share_of_one_draws_as_before():
    images = torch.zeros(4000, 1, 1, 1)
    full = get_recipe("dynalay")
    drawn = recipe_actions(full, 4, torch.Generator().manual_seed(7))(images, None)
    before = torch.randint(1, 4, (4000,), generator=torch.Generator().manual_seed(7))
    assert torch.equal(drawn, before)  # the committed runs' draws are unchanged
    half = dataclasses.replace(full, loop_share=0.25)
    shared = recipe_actions(half, 4, torch.Generator().manual_seed(7))(images, None)
    looping = shared != 0
    assert 0.22 < float(looping.float().mean()) < 0.28
    assert torch.equal(shared[looping], before[looping])  # the loop draws themselves as before
    with pytest.raises(ValueError, match=r"loop_share must be in \(0, 1\]"):
        dataclasses.replace(full, loop_share=0.0)
    with pytest.raises(ValueError, match="loop_share < 1 needs train_straight"):
        Recipe("x", 1, None, False, loop_share=0.5)


def test_a_loop_share_scales_the_loop_losses_by_its_inverse():
    straight = torch.log(torch.tensor([[0.9, 0.1], [0.4, 0.6]]))
    loop = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7]]))
    labels, actions = torch.tensor([0, 0]), torch.tensor([1, 0])
    recipe = Recipe("x", 1, None, True, loop_share=0.25)
    losses, _ = sample_losses(PathLogits(straight, loop), labels, actions, recipe)
    ce_straight = -torch.log(torch.tensor([0.9, 0.4]))
    expected = ce_straight + torch.tensor([-4.0 * float(torch.log(torch.tensor(0.8))), 0.0])
    torch.testing.assert_close(losses, expected)
