"""The studies, apart from the library: what DynaLay is measured with, each a command of
``run_rl.py``.

- :mod:`.evaluation`: ``eval``, a finished run's agent against every baseline;
- :mod:`.sweep`: ``sweep``, one agent per beta on one model;
- :mod:`.baselines`: the separately trained models (one registry: recipe, width, path, solver);
- :mod:`.tradeoff`: ``table``, DynaLay against them over seeds;
- :mod:`.demo`: ``demo`` (``make demo``), the table on the shipped model;
- :mod:`.thesis`: ``reproduce``, the thesis's Chapter 4, one module per claim;
- :mod:`.check_results`: ``make check-results``, every committed result regenerated;
- :mod:`.common` and :mod:`.cli`: splits, mean ± std, progress lines; the guard against a
  directory made with other settings (each study's flags come from its config's fields:
  :mod:`agents.cli`).
"""

from agents.experiments.evaluation import DEFAULT_TAUS, TEXT_TAUS, default_taus

__all__ = ["DEFAULT_TAUS", "TEXT_TAUS", "default_taus"]
