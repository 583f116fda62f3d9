"""The studies' guard that refuses a results directory made with other settings
(:func:`refuse_other_settings`). Their flags come from their config's fields, as the training
flags do: :mod:`agents.cli`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from main_model.io import write_json_atomic


class SettingsMismatch(ValueError):
    """A results directory holds work made with other settings than the ones asked for."""

    def __init__(self, folder: Path, differences: dict[str, tuple[Any, Any]], message: str):
        self.folder, self.differences = Path(folder), differences
        super().__init__(message)


def plain(values: Any) -> Any:
    """``values`` as JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps(values))


def refuse_other_settings(
    path: Path,
    settings: dict[str, Any],
    what: str,
    advice: str,
    ignore: Sequence[str] = (),
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Save ``settings`` as JSON at ``path``, or, when a file is there, refuse
    (:class:`SettingsMismatch`, naming every difference) unless it holds the same settings.

    ``what``: what the directory holds (``"table"``); ``advice``: what to do instead;
    ``ignore``: keys that may differ (saved, not compared); ``read``: how a saved file's
    settings read today (e.g. a config saved before a field existed, with its legacy value)."""
    path = Path(path)
    current = plain(settings)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(current, path)
        return
    saved = json.loads(path.read_text())
    if read is not None:
        saved = plain(read(saved))
    keys = [k for k in current if k not in ignore]
    keys += sorted(k for k in saved if k not in current and k not in ignore)
    differences = {
        k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)
    }
    if differences:
        listed = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differences.items())
        raise SettingsMismatch(
            path.parent,
            differences,
            f"{path.parent} holds a {what} made with other settings ({listed}); {advice}",
        )
