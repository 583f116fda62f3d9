"""Atomic file writes for the agents' run directories: the main model's one writer, re-exported."""

from main_model.checkpoint import atomic_write, write_json_atomic

__all__ = ["atomic_write", "write_json_atomic"]
