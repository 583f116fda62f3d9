"""Every claim's verdict on hand-made numbers: numbers that give "reproduced", "partly
reproduced" and "not reproduced" (where the claim has parts), each experiment's own
``claims`` function turning them into the verdict its section prints."""

from __future__ import annotations

import numpy as np
import pytest

from agents.experiments.thesis import fig4_1, fig4_3, fig4_4, introspection, table4_1
from agents.experiments.thesis.arms import first_arm_better
from agents.experiments.thesis.pieces import verdict, verdict_of

REPRODUCED, PARTLY, NOT = "reproduced", "partly reproduced", "not reproduced"


def test_verdict_counts_the_parts_that_hold():
    assert [verdict(held, 3) for held in (3, 2, 1, 0)] == [REPRODUCED, PARTLY, PARTLY, NOT]
    assert verdict_of({"a": True, "b": np.bool_(True)}) == REPRODUCED
    assert verdict_of({"a": True, "b": False}) == PARTLY
    assert verdict_of({"a": False}) == NOT


def _column(backward: float, accuracy: float) -> dict:
    return {"backward_seconds_per_epoch": backward, "accuracy": {"mean": accuracy, "std": 0.0}}


@pytest.mark.parametrize(
    ("dynalay", "expected"),
    [
        (_column(3.0, 0.90), REPRODUCED),  # fastest backward pass and most accurate
        (_column(3.0, 0.85), PARTLY),  # fastest, not most accurate
        (_column(30.0, 0.90), PARTLY),  # most accurate, not fastest
        (_column(30.0, 0.85), NOT),
    ],
)
def test_table_4_1(dynalay, expected):
    measured = {"DynaLay": dynalay, "3-layer CNN": _column(4.0, 0.87), "DEQ": _column(70.0, 0.86)}
    assert verdict_of(table4_1.claims(measured)) == expected


def test_table_4_1_ties_in_accuracy_count_as_most_accurate_not_in_backward_time():
    measured = {"DynaLay": _column(4.0, 0.87), "3-layer CNN": _column(4.0, 0.87)}
    assert table4_1.claims(measured) == {
        "DynaLay has the shortest backward pass": False,
        "DynaLay is the most accurate": True,
    }


@pytest.mark.parametrize(
    ("mean", "expected"),
    [
        ([0.40, 0.25, 0.20, 0.15], REPRODUCED),  # the thesis's shares
        ([0.30, 0.25, 0.20, 0.25], PARTLY),  # NOP most, loop-1/2 near; loop-3 not the rarest
        ([0.70, 0.25, 0.04, 0.01], PARTLY),  # NOP most, loop-3 rarest; loop-2 20 points off
        ([0.10, 0.60, 0.05, 0.25], NOT),  # loop-1 most, loop-2 rarest, both far off
    ],
)
def test_fig_4_1(mean, expected):
    assert verdict_of(fig4_1.claims(np.array(mean))) == expected


STEADY = [0.0, 1.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5]  # last quarter steadier than the first
NOISY = list(reversed(STEADY))


@pytest.mark.parametrize(
    ("rewards", "flops", "expected"),
    [
        ([STEADY, STEADY], [4.8, 4.6, 1.7], REPRODUCED),
        ([STEADY, NOISY], [4.8, 4.6, 1.7], PARTLY),  # one seed's reward does not settle
        ([STEADY, STEADY], [4.8, 4.9, 1.7], PARTLY),  # FLOPs rise once as beta grows
        ([NOISY, STEADY], [1.0, 2.0, 3.0], NOT),
        ([STEADY[:3]], [2.0, 1.0], PARTLY),  # a curve of 3 points cannot show it settling
    ],
)
def test_fig_4_3(rewards, flops, expected):
    assert verdict_of(fig4_3.claims(rewards, flops)) == expected


@pytest.mark.parametrize(
    ("accuracy", "loss", "expected"),
    [
        ([0.80, 0.81, 0.82, 0.83], [0.50, 0.45, 0.40, 0.35], REPRODUCED),
        ([0.80, 0.81, 0.82, 0.83], [0.50, 0.45, 0.30, 0.35], PARTLY),  # best loss at 2 blocks
        ([0.80, 0.82, 0.81, 0.83], [0.50, 0.45, 0.40, 0.35], PARTLY),  # dips at 2 blocks
        ([0.83, 0.82, 0.81, 0.80], [0.35, 0.40, 0.45, 0.50], NOT),
    ],
)
def test_fig_4_4(accuracy, loss, expected):
    assert verdict_of(fig4_4.claims(accuracy, loss)) == expected


@pytest.mark.parametrize(
    ("first", "other", "expected"),
    [
        ([0.85, 0.86, 0.84], [0.74, 0.75, 0.73], REPRODUCED),  # better on every seed
        ([0.85, 0.86, 0.70], [0.84, 0.85, 0.86], NOT),  # wins 2 of 3 but worse on average
        ([0.99, 0.80, 0.80], [0.85, 0.81, 0.81], NOT),  # better on average, wins 1 of 3
        ([0.85, 0.85, 0.85], [0.85, 0.85, 0.85], NOT),  # a tie is not better
    ],
)
def test_fig_4_2_and_sec_4_0_5_compare_the_first_arm_with_the_second(first, other, expected):
    better, wins = first_arm_better(first, other)
    assert wins == sum(a > b for a, b in zip(first, other, strict=True))
    # A single claim: never "partly".
    assert verdict_of({"the first arm ends more accurate": better}) == expected


def _setting(penalty: str, max_steps: int, accuracy: float) -> tuple[str, dict]:
    row = {"penalty": penalty, "max_steps": max_steps, "accuracy": {"mean": accuracy}}
    return f"{penalty}, max_steps={max_steps}", row


@pytest.mark.parametrize(
    ("layer_two_steps", "expected"),
    [(0.8525, REPRODUCED), (0.8520, NOT), (0.8510, NOT)],  # one-shot "layer" is 0.8520
)
def test_introspection(layer_two_steps, expected):
    results = dict(
        [
            _setting("consecutive", 1, 0.8530),
            _setting("consecutive", 2, 0.8519),  # below its own one-shot
            _setting("layer", 1, 0.8520),
            _setting("layer", 2, layer_two_steps),
        ]
    )
    assert verdict_of(introspection.claims(results)) == expected


def test_introspection_compares_each_setting_with_one_shot_under_its_own_penalty():
    # 2 steps of "layer" beat one-shot "layer" but not one-shot "consecutive": it counts.
    results = dict(
        [_setting("consecutive", 1, 0.86), _setting("layer", 1, 0.84), _setting("layer", 2, 0.85)]
    )
    assert verdict_of(introspection.claims(results)) == REPRODUCED
