"""Differences that mean something: the paired bootstrap against hand-computed cases, the
threshold curve read as a per-image mixture, the verdicts, and the router rows and intervals
of a tiny `run_rl.py table`, kept when its per-seed extras are deleted and remade."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_mnist_files

import run_rl
from agents.experiments.common import paired_interval
from agents.experiments.demo import demo_report
from agents.experiments.significance import (
    PER_IMAGE_FILE,
    ROUTER_FILE,
    curve_mixture,
    paired_comparisons,
)


def test_constant_differences_give_a_zero_width_interval_at_that_value():
    assert paired_interval(np.full(50, 0.25)) == (0.25, 0.25, 0.25)
    assert paired_interval(np.zeros(7), seed=3) == (0.0, 0.0, 0.0)


def test_the_interval_of_a_known_small_case():
    # Two images, differences 0 and 1: a resample's mean is 0, 0.5 or 1 (1/4, 1/2, 1/4), so
    # the 2.5 and 97.5 percentiles of 2000 draws are 0 and 1.
    assert paired_interval(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)
    # 400 differences of +-1 half and half: mean 0, standard error 1/20, so about +-0.098.
    mean, low, high = paired_interval(np.repeat([1.0, -1.0], 200), draws=4000)
    assert mean == 0.0 and low == pytest.approx(-0.098, abs=0.012)
    assert high == pytest.approx(0.098, abs=0.012)
    # Seeded: the same draws twice.
    values = np.random.default_rng(1).normal(size=30)
    assert paired_interval(values, seed=5) == paired_interval(values, seed=5)
    with pytest.raises(ValueError, match="non-empty"):
        paired_interval(np.array([]))


def _policy(name, flops):
    return {"name": name, "relative_flops": flops, "accuracy": 0.0}


def test_the_threshold_curve_at_a_policys_flops_is_the_per_image_mixture():
    columns = {
        "threshold tau=0.5": np.array([1.0, 0.0, 1.0, 0.0]),
        "threshold tau=0.9": np.array([1.0, 1.0, 1.0, 1.0]),
    }
    policies = [
        _policy("threshold tau=0.5 (loop-3)", 1.0),
        _policy("threshold tau=0.9 (loop-2)", 2.0),
    ]
    mixed, how = curve_mixture(columns, policies, 1.25)
    np.testing.assert_allclose(mixed, [1.0, 0.25, 1.0, 0.25])  # 0.75 of tau=0.5, 0.25 of 0.9
    assert how == "threshold tau=0.5 / threshold tau=0.9 mixture"
    left, how = curve_mixture(columns, policies, 0.5)
    assert how.startswith("left of the curve") and left is columns["threshold tau=0.5"]
    right, how = curve_mixture(columns, policies, 3.0)
    assert how.startswith("right of the curve") and right is columns["threshold tau=0.9"]


def test_a_difference_is_significant_only_when_every_seed_says_so():
    n = 200
    per_seed = {}
    for seed, agent_right in ((0, 0.9), (1, 0.6)):
        agent = (np.arange(n) < agent_right * n).astype(float)
        columns = {
            "agent beta=0.1": agent,
            "threshold tau=0.5": (np.arange(n) < 0.5 * n).astype(float),
            "threshold tau=0.9": (np.arange(n) < 0.5 * n).astype(float),
            "plain-2x": agent.copy(),
        }
        per_seed[seed] = {
            "per_image": columns,
            "policies": [
                _policy("threshold tau=0.5 (loop-1)", 1.0),
                _policy("threshold tau=0.9 (loop-1)", 2.0),
                _policy("agent beta=0.1", 1.5),
            ],
        }
    threshold, wider = paired_comparisons(per_seed)
    assert threshold["policy"] == "DynaLay agent beta=0.1"
    assert threshold["rival"] == "threshold at its FLOPs" and threshold["verdict"] == "better"
    assert [c["mean"] for c in threshold["per_seed"]] == pytest.approx([0.4, 0.1])
    assert threshold["over_seeds"]["mean"] == pytest.approx(0.25)
    assert threshold["over_seeds"]["std"] == pytest.approx(np.std([0.4, 0.1], ddof=1))
    assert wider["rival"] == "plain-2x" and wider["verdict"] == "not significant"
    assert all(c["low"] == c["high"] == 0.0 for c in wider["per_seed"])


TINY = [
    "table", "--env", "DynaLay-MNIST-v0", "--device", "cpu", "--widths", "2", "2", "2",
    "--epochs", "1", "--train-size", "16", "--batch-size", "8", "--holdout-size", "10",
    "--eval-size", "8", "--total-timesteps", "32", "--num-envs", "4", "--betas", "0.3",
    "--seeds", "0", "--models", "plain", "plain-2x",
]  # fmt: skip


def test_the_table_has_router_rows_and_paired_intervals_remade_when_missing(tmp_path):
    write_mnist_files(tmp_path / "data", n_train=30, n_test=10)
    out = tmp_path / "table"
    flags = [*TINY, "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    assert run_rl.main(flags) == 0
    summary = json.loads((out / "tradeoff.json").read_text())
    rows = summary["rows"]
    routers = [n for n, r in rows.items() if r["kind"] == "router"]
    assert routers[0] == "DynaLay router beta=0" and len(routers) == 5
    compared = {(c["policy"], c["rival"]) for c in summary["significance"]}
    assert ("DynaLay agent beta=0.3", "threshold at its FLOPs") in compared
    assert ("DynaLay agent beta=0.3", "plain-2x") in compared
    assert ("DynaLay router beta=0", "plain-2x") in compared
    markdown = (out / "tradeoff.md").read_text()
    assert "| DynaLay router beta=0.01 |" in markdown and "Paired differences" in markdown
    seed_dir = out / "seed0"
    router = json.loads((seed_dir / ROUTER_FILE).read_text())
    assert router["holdout_cross_fit"]["folds"] == 5
    assert "minus plain-2x" in demo_report(summary)
    # A seed that finished before these files existed gets them on a rerun, same numbers.
    columns = dict(np.load(seed_dir / PER_IMAGE_FILE))
    (seed_dir / PER_IMAGE_FILE).unlink()
    assert run_rl.main(flags) == 0
    again = dict(np.load(seed_dir / PER_IMAGE_FILE))
    assert sorted(again) == sorted(columns)
    for key, values in columns.items():
        np.testing.assert_array_equal(again[key], values, err_msg=key)
    assert json.loads((out / "tradeoff.json").read_text()) == summary
