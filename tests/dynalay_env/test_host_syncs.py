"""Host synchronisations per env step and per classifier forward do not grow with the batch.

On a GPU every read of a device value by the host (``.item()``, ``bool(t)``, ``nonzero``) waits
for the device to finish; a loop over slots that reads one would cost N waits a step. The
torch profiler records these reads as ``aten::_local_scalar_dense`` (what ``aten::item`` and
``aten::is_nonzero`` call, counted once) and ``aten::nonzero``. By design the fixed-point loop
reads one ``nonzero`` per iteration (which samples run on, :meth:`FPIBlock.solve`), so a step
that loops every block costs ``n_blocks * max_iter`` of them, and nothing else may read: the
counts below are the same at N = 8 and N = 64 and at most that bound (plus, on CUDA only, the
two reads ``bincount`` makes of the step's actions, :meth:`DynaLayNet.step`).

Transfers by ``.cpu()`` / ``.tolist()`` (a fixed handful per env step: the rewards, the
observation, the episode infos) are not such events and are not counted here. The tests take
their device from ``DYNALAY_TEST_DEVICE`` (``test_device`` in conftest.py; bench/gpu_check.sh
runs them on CUDA).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits
from torch.profiler import ProfilerActivity, profile

from dynalay_env.vector_env import DynaLayVectorEnv
from main_model.adaptive import AdaptiveClassifier, PolicyNetwork
from main_model.observation import observation_layout

MAX_ITER = 4
#: Never reached: every looped sample runs all MAX_ITER iterations, so a loop's nonzero count
#: is the same in any batch (a converged sample leaves its batch early, and the slowest one
#: sets the count: a larger batch may hold a slower one).
NEVER = 1e-30
MAX_STEPS = 3


def host_syncs(run: Callable[[], object]) -> Counter:
    """The host reads of the device while ``run()`` runs: ``{"read": n, "nonzero": m}``."""
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        run()
    names = Counter(event.name for event in recorded.events())
    return Counter(read=names["aten::_local_scalar_dense"], nonzero=names["aten::nonzero"])


def step_bound(model, device: torch.device) -> int:
    """The most host syncs one decision of a batch may cost, whatever its size."""
    return model.n_blocks * MAX_ITER + (2 if device.type == "cuda" else 0)


def model_on(device: torch.device, tol: float = NEVER):
    return make_model("MNIST", tol=tol, max_iter=MAX_ITER).to(device)


def env_step_syncs(num_envs: int, device: torch.device, tol: float = NEVER) -> list[Counter]:
    """The syncs of 4 steps of a SAME_STEP vector env (the SB3 adapter's mode) in which every
    action is taken somewhere (slot i takes i mod n_actions), after a warm-up step (the first
    use of a loop weight in evaluation mode estimates its norm once)."""
    env = DynaLayVectorEnv(
        num_envs,
        "MNIST",
        model=model_on(device, tol),
        splits=make_splits("MNIST", n_train=48),
        split="holdout",
        device=str(device),
        autoreset_mode="SameStep",
        max_steps=MAX_STEPS,
    )
    env.reset(seed=0)
    actions = np.arange(num_envs) % env.core.n_actions
    env.step(actions)
    return [host_syncs(lambda: env.step(actions)) for _ in range(4)]


@pytest.mark.filterwarnings("ignore:the given main model does not record")
def test_an_env_step_syncs_the_same_at_8_and_64_slots_one_nonzero_per_loop_iteration(
    test_device,
):
    model = model_on(test_device)
    small, large = env_step_syncs(8, test_device), env_step_syncs(64, test_device)
    assert small == large
    for syncs in small:  # every block loops in every step (loop-all is among the actions)
        assert syncs["nonzero"] == model.n_blocks * MAX_ITER, syncs
        assert syncs["read"] + syncs["nonzero"] <= step_bound(model, test_device), syncs


@pytest.mark.filterwarnings("ignore:the given main model does not record")
def test_with_converging_loops_an_env_step_stays_within_the_bound(test_device):
    model = model_on(test_device)
    for num_envs in (8, 64):
        for syncs in env_step_syncs(num_envs, test_device, tol=1e-4):
            assert syncs["read"] + syncs["nonzero"] <= step_bound(model, test_device), syncs


def classifier(device: torch.device, always: int | None) -> AdaptiveClassifier:
    """A classifier whose policy is random (seeded), or always takes action ``always``."""
    model = model_on(device)
    torch.manual_seed(1)
    size = observation_layout(model)["step_index"].stop
    policy = PolicyNetwork([["Linear", size, model.n_actions, True]], "categorical")
    if always is not None:
        with torch.no_grad():
            policy.net[0].weight.zero_()
            policy.net[0].bias.copy_(torch.eye(model.n_actions)[always])
    return AdaptiveClassifier(model, policy, max_steps=MAX_STEPS).to(device)


@pytest.mark.parametrize("always", [None, 3], ids=["random-policy", "always-loop-all"])
def test_a_classifier_forward_syncs_the_same_for_8_and_64_images(test_device, always):
    """64 images are 8 images 8 times: the same decisions, so only the batch size differs."""
    model = classifier(test_device, always)
    images = make_splits("MNIST", n_train=48)["holdout"].normalized(torch.arange(8))
    images = images.to(test_device)
    model(images)  # warm-up: the loop weights' norms
    small = host_syncs(lambda: model(images))
    large = host_syncs(lambda: model(images.repeat(8, 1, 1, 1)))
    assert small == large
    # At most MAX_STEPS decisions, each a step's bound, and one read of "is any image still
    # deciding?" between two decisions.
    bound = MAX_STEPS * step_bound(model.model, test_device) + (MAX_STEPS - 1)
    assert small["read"] + small["nonzero"] <= bound, small
    if always == 3:  # loop-all at every decision: each decision loops every block
        assert small == Counter(read=MAX_STEPS - 1, nonzero=MAX_STEPS * 3 * MAX_ITER)
