"""The full-information router (agents.router): its choices are the argmax of its stated
scores, its holdout numbers are cross-fitted and deterministic, and the classifier it exports
loads (weights only) and acts like the router in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, make_splits

from agents.evaluate import run_policy
from agents.router import (
    path_costs,
    path_outcomes,
    router_classifier,
    router_network,
    router_policy,
    router_results,
    router_scores,
)
from dynalay_env.build import sequential_core
from main_model.adaptive import AdaptiveClassifier


@pytest.fixture(scope="module")
def fitted():
    model, splits = make_model("MNIST"), make_splits("MNIST", 48, 24)
    core, episodes = sequential_core(model, splits["test"])
    results, holdout, fit = router_results(
        model, splits["holdout"], core, episodes, alpha=0.5, betas=(0.0, 0.05), seed=0
    )
    return model, splits, core, episodes, results, holdout, fit


def test_the_router_chooses_the_argmax_of_its_stated_scores(fitted):
    model, splits, _, _, _, _, fit = fitted
    outcomes = path_outcomes(model, splits["test"])
    cost = path_costs(path_outcomes(model, splits["holdout"]), model.max_step_flops())
    assert cost[0] == 0 and (cost[1:] > 0).all()
    for beta in (0.0, 0.01, 0.05, 1.0):
        network = router_network(fit, 0.5, beta, cost)
        # The stated scores, by hand: alpha * p(a) - beta * cost(a).
        stated = 0.5 * fit.probabilities(outcomes.observations) - beta * cost.float()
        scores = router_scores(network, fit.normalizer, outcomes.observations.numpy())
        torch.testing.assert_close(scores, stated, rtol=1e-5, atol=1e-6)
        chosen = router_policy(network, fit.normalizer, model)(outcomes.observations.numpy())
        np.testing.assert_array_equal(chosen, stated.argmax(dim=1).numpy())
    # A large enough cost weight leaves NOP only.
    huge = router_policy(router_network(fit, 0.5, 100.0, cost), fit.normalizer, model)
    assert (huge(outcomes.observations.numpy()) == 0).all()


def test_router_rows_are_named_per_beta_and_cross_fitted_deterministically(fitted):
    model, splits, core, episodes, results, holdout, _ = fitted
    assert [r.name for r in results] == ["router beta=0", "router beta=0.05"]
    assert [r.parameter for r in results] == [0.0, 0.05]
    assert all(r.episodes == episodes and len(r.records["correct"]) == episodes for r in results)
    assert holdout["folds"] == 5 and set(holdout["rows"]) == {"router beta=0", "router beta=0.05"}
    again = router_results(model, splits["holdout"], core, episodes, 0.5, (0.0, 0.05), seed=0)
    assert again[1] == holdout
    assert [r.accuracy for r in again[0]] == [r.accuracy for r in results]


def test_the_exported_router_loads_weights_only_and_acts_like_the_one_in_memory(fitted, tmp_path):
    model, splits, core, episodes, _, holdout, fit = fitted
    cost = torch.as_tensor(holdout["cost"], dtype=torch.float64)
    beta = 0.0
    network = router_network(fit, 0.5, beta, cost)
    exported = router_classifier(model, fit, 0.5, beta, cost, metadata={"seed": 0})
    path = exported.save(tmp_path / "router.pt")
    loaded = AdaptiveClassifier.load(path)
    assert loaded.metadata["algo"] == "router" and loaded.max_steps == 1
    images = splits["test"].normalized(slice(None))
    with torch.no_grad():
        answer = loaded(images)
    observations = path_outcomes(model, splits["test"]).observations.numpy()
    in_memory = router_policy(network, fit.normalizer, model)(observations)
    np.testing.assert_array_equal(answer.actions[:, 0].numpy(), in_memory)
    # And its answers are the env's evaluation of the same policy.
    result = run_policy(core, router_policy(network, fit.normalizer, model), episodes)
    order = np.argsort(result.records["dataset_index"])
    labels = splits["test"].labels.numpy()
    right = (answer.logits.argmax(1).numpy() == labels).astype(float)
    np.testing.assert_array_equal(right, result.records["correct"][order].astype(float))


def test_run_rl_export_writes_a_table_seed_dirs_router_that_acts_as_saved(fitted, tmp_path, capsys):
    """``run_rl.py export SEED_DIR --router-beta B``: the file loads weights-only, its choices
    equal the saved router's argmax at that beta, and a seed directory without router.pt is
    refused with the project's message (exit 2)."""
    import json

    from agents.deploy import export_main
    from agents.router import SavedRouter
    from main_model.checkpoint import save_main_model

    model, splits, _, _, _, holdout, fit = fitted
    seed_dir = tmp_path / "table" / "seed0"
    seed_dir.mkdir(parents=True)
    save_main_model(model, seed_dir / "dynalay.pt")
    cost = torch.as_tensor(holdout["cost"], dtype=torch.float64)
    SavedRouter(fit, cost, 0.5).save(seed_dir / "router.pt")
    (seed_dir.parent / "table_config.json").write_text(json.dumps({"env": "DynaLay-MNIST-v0"}))
    beta = 0.05
    assert export_main([str(seed_dir), "--router-beta", str(beta), "--output",
                        str(tmp_path / "r.pt")]) == 0  # fmt: skip
    loaded = AdaptiveClassifier.load(tmp_path / "r.pt")
    assert loaded.metadata["algo"] == "router" and loaded.metadata["beta"] == beta
    assert loaded.metadata["dataset"] == "MNIST"
    saved = SavedRouter.load(seed_dir / "router.pt")
    observations = path_outcomes(model, splits["test"]).observations
    stated = saved.alpha * saved.fit.probabilities(observations) - beta * cost.float()
    with torch.no_grad():
        answer = loaded(splits["test"].normalized(slice(None)))
    np.testing.assert_array_equal(answer.actions[:, 0].numpy(), stated.argmax(1).numpy())

    (seed_dir / "router.pt").unlink()
    code = export_main([str(seed_dir), "--router-beta", "0.01", "--output",
                        str(tmp_path / "x.pt")])  # fmt: skip
    assert code == 2 and not (tmp_path / "x.pt").exists()
    assert "router.pt is missing" in capsys.readouterr().err
    (seed_dir / "router.pt").write_bytes(b"not a torch file")
    assert export_main([str(seed_dir), "--router-beta", "0.01"]) == 2
    assert "is not a saved DynaLay router" in capsys.readouterr().err
