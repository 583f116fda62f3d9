"""A supervised run that diverges stops in the step it happens, saying where and what to try;
a finite run is untouched by the checks, which cost one host sync per step."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_splits
from torch.profiler import ProfilerActivity, profile

import main_model.train as train
from main_model.checkpoint import state_digest
from main_model.divergence import TrainingDiverged, check_finite_step
from main_model.train import fit, iterate_batches
from main_model.training_forward import TrainingForward

TRAIN = make_splits("MNIST", n_train=64)["train"]  # 32 rows: 4 batches of 8 an epoch


def batches(epoch: int):
    return iterate_batches(TRAIN, 8, torch.Generator().manual_seed(epoch))


def fit_tiny(model, learning_rate: float = 1e-2, epochs: int = 2):
    return fit(
        model, batches, epochs=epochs, batches_per_epoch=4, learning_rate=learning_rate, seed=0
    )


def test_a_finite_run_is_unaffected_by_the_checks(monkeypatch):
    checked = make_model("MNIST").train()
    history = fit_tiny(checked)
    monkeypatch.setattr(train, "check_finite_step", lambda loss, model, step: None)
    unchecked = make_model("MNIST").train()
    fit_tiny(unchecked)
    assert state_digest(checked) == state_digest(unchecked)
    assert all(torch.isfinite(torch.tensor(stats.loss)) for stats in history)


def test_a_huge_learning_rate_stops_in_the_step_that_diverges_naming_epoch_and_step():
    with pytest.raises(TrainingDiverged) as caught:
        fit_tiny(make_model("MNIST").train(), learning_rate=1e30)
    error = caught.value
    assert error.epoch == 1 and error.step is not None and error.step >= 1
    message = str(error)
    assert message.startswith(f"training diverged in epoch 1, step {error.step}: ")
    assert "not finite" in message or "the loss is nan" in message
    assert "try a lower learning rate" in message


def test_a_forward_returning_nan_stops_at_that_step_and_names_the_loss(monkeypatch):
    forward = TrainingForward.forward
    calls = []

    def nan_at_third_step(self, images, actions, solver="fpi"):
        calls.append(1)
        paths = forward(self, images, actions, solver)
        if len(calls) == 3:
            paths.chosen = paths.chosen * float("nan")
        return paths

    monkeypatch.setattr(TrainingForward, "forward", nan_at_third_step)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 3: the loss is nan"):
        fit_tiny(make_model("MNIST").train())


def test_a_non_finite_loop_weight_coming_in_is_named_not_a_linear_algebra_error():
    """The FFT bound's SVD fails on a NaN loop weight: said in the project's words."""
    model = make_model("MNIST").train()
    with torch.no_grad():
        model.blocks[1].loop_conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1: the loops' contraction bound"):
        fit_tiny(model)


def test_the_first_non_finite_gradient_and_weight_are_named():
    model = make_model("MNIST").train()
    loss = model(torch.zeros(2, 1, 28, 28)).sum()
    loss.backward()
    with torch.no_grad():
        model.head.weight.grad[0, 0] = float("inf")
        model.head.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"step 7: the gradient of head.weight"):
        check_finite_step(loss, model, 7)
    model.head.weight.grad = None
    with pytest.raises(TrainingDiverged, match=r"the weight or statistic head.weight is not"):
        check_finite_step(loss, model, 7)
    with torch.no_grad():
        model.head.weight[0, 0] = 0.0
        model.blocks[0].loop_conv.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"the loop weight blocks.0.loop_conv.weight"):
        check_finite_step(loss, model, 7)


def test_the_check_of_a_step_costs_one_host_sync():
    model = make_model("MNIST").train()
    loss = model(torch.zeros(2, 1, 28, 28)).sum()
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        check_finite_step(loss, model, 1)
    names = [event.name for event in recorded.events()]
    assert names.count("aten::_local_scalar_dense") == 1
    assert names.count("aten::nonzero") == 0
