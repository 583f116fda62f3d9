"""Section 4.0.5: the agent learns on the pre-trained model before the first supervised phase
(agent pre-training) vs a first supervised phase that follows an untrained agent."""

from __future__ import annotations

from typing import Any

from .arms import compare_arms
from .pieces import Reproduction, finish

NAME = "sec4.0.5"
ARMS = {"agent pre-trained": "pretrained", "no agent pre-training": "no-agent-pretrain"}
CLAIM = "agent pre-training ends more accurate on most seeds"


def run(rep: Reproduction) -> dict[str, Any]:
    """Section 4.0.5: the agent learns before the first supervised phase, or not."""
    payload, table, fig, _ = compare_arms(rep, "Sec. 4.0.5", ARMS, CLAIM)
    md = [
        "## Section 4.0.5: agent pre-training",
        "",
        "Thesis: the agent is pre-trained too, for as many epochs as the main model, and starting "
        "from those weights gives noticeably better results.",
        "",
        "Measured: both arms start from the same pre-trained main model. With agent pre-training "
        "the agent learns on it for one RL phase before the first supervised phase (the "
        "trainer's default order: rl, supervised per round, then a final rl); without, every "
        "round trains the main model first, so round 1 follows an untrained agent's choices "
        "(`--no-agent-pretrain`). Same number of supervised epochs; the first arm has one RL "
        "phase more, which is the agent's pre-training.",
        "",
        *table,
    ]
    return finish(rep, NAME, payload, md, fig)
