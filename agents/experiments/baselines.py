"""The separately trained models of the table, as one registry.

A trained baseline is a training recipe (``main_model.recipes``), a width factor (conv FLOPs
grow with its square), the path the table evaluates it on and the solver that path runs with.
A new one is one :data:`TRAINED_MODELS` entry; the table trains, times and reports it by that
entry alone (``run_rl.py table --models NAME``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainedModel:
    """A model the table trains per seed, with the same images, epochs and schedule as the rest.

    Attributes:
        name: its row in the table and its files (``seed<s>/<name>.pt``, ``.json``).
        recipe: its main-model training recipe (``main_model.recipes.RECIPES``).
        width_factor: its widths are the table's times this (rounded, at least 1).
        evaluated: the path its row reports: ``"straight"`` (NOP), ``"looped"`` (every block
            looped, loop-n) or ``"every path"`` (DynaLay's own: every static path and the agents).
        solver: the fixed-point solver of its loops (``"fpi"``, or TorchDEQ's ``"anderson"``).
    """

    name: str
    recipe: str
    width_factor: float = 1.0
    evaluated: str = "straight"
    solver: str = "fpi"

    def widths(self, widths: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(max(1, round(w * self.width_factor)) for w in widths)

    def paths(self, n_blocks: int) -> list[int]:
        """The paths whose test statistics its record keeps."""
        return {"straight": [0], "looped": [n_blocks], "every path": list(range(n_blocks + 1))}[
            self.evaluated
        ]

    @property
    def baseline(self) -> bool:
        """Whether it is a baseline (a row of its own, timed on its path), not DynaLay."""
        return self.evaluated != "every path"


TRAINED_MODELS: dict[str, TrainedModel] = {
    model.name: model
    for model in (
        TrainedModel("plain", "plain"),  # the thesis's "3-layer CNN": the straight path only
        TrainedModel("plain-2x", "plain", math.sqrt(2.0)),  # about 2x the plain CNN's FLOPs
        TrainedModel("plain-4x", "plain", 2.0),  # about 4x
        TrainedModel("deq", "deq", evaluated="looped", solver="anderson"),  # DEQ with solvers
        TrainedModel("dynalay", "dynalay", evaluated="every path"),
    )
}
#: The separately trained baselines (every table has ``dynalay`` too).
BASELINES = tuple(name for name, model in TRAINED_MODELS.items() if model.baseline)
