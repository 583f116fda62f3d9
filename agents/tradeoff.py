"""Moved to :mod:`agents.experiments.tradeoff` and :mod:`agents.experiments.demo`; these names
stay importable from here until ``tests/test_agents.py`` and ``tests/test_shipped_model.py``
import them from there."""

from agents.experiments.demo import demo_config, demo_report
from agents.experiments.tradeoff import validate

__all__ = ["demo_config", "demo_report", "validate"]
