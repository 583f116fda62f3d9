"""A study's command line from its config dataclass, and the one guard that refuses a results
directory made with other settings.

Each field of a study's config becomes one flag (``--train-size`` for ``train_size``), its
type, ``nargs`` and default read from the field, its help from ``field(metadata=...)``:

    epochs: int = arg(3, "training epochs of every model", type=positive_int)
    taus: tuple[float, ...] = arg(DEFAULT_TAUS, cli=False)   # no flag

:func:`add_config_flags` adds them; :func:`config_from_flags` builds the config from the flags
given (a flag left out keeps the field's default, or a preset's: ``--quick``). Nothing lists a
field twice. A ~100-line generator over :func:`dataclasses.fields` rather than ``tyro`` (what
CleanRL uses): the flags must stay exactly as the README writes them (``--lr`` for
``learning_rate``, some fields without a flag, ``type=`` checks such as ``positive_int``),
which plain argparse metadata gives directly, and it adds no dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from main_model.io import write_json_atomic


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def arg(
    default: Any,
    help: str = "",
    *,
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,
    choices: Callable[[], Sequence[Any]] | Sequence[Any] | None = None,
    sort: bool = False,
    cli: bool = True,
) -> Any:
    """A config field with its flag's settings: ``help``; ``flag`` (default ``--field-name``);
    ``type`` (default: the field's element type); ``choices`` (or a function giving them, read
    when the parser is built); ``sort``: a tuple flag's values sorted; ``cli=False``: no flag."""
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices}
    metadata.update(sort=sort, cli=cli)
    return dataclasses.field(default=default, metadata=metadata)


def _element(annotation: Any) -> tuple[Any, bool]:
    """(element type, whether the field is a tuple) of ``int``, ``int | None``,
    ``tuple[int, ...]``, ``tuple[int, ...] | None`` and alike."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def config_fields(cls: type) -> list[tuple[dataclasses.Field, Any, bool]]:
    """(field, element type, is a tuple) of every field of ``cls`` that has a flag."""
    hints = typing.get_type_hints(cls)
    return [
        (f, *_element(hints[f.name]))
        for f in dataclasses.fields(cls)
        if f.metadata.get("cli", True)
    ]


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """One flag per field of ``cls`` (see the module docstring). A flag left out does not
    appear in the parsed namespace; the help names the default (of ``defaults``, when given)."""
    defaults = cls() if defaults is None else defaults
    for f, element, is_tuple in config_fields(cls):
        meta = f.metadata
        default = getattr(defaults, f.name)
        shown = list(default) if isinstance(default, tuple) else default
        help_text = f"{meta.get('help', '')} (default: {shown})".strip()
        options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if element is bool:
            options["action"] = "store_false" if default else "store_true"
        else:
            options["type"] = meta.get("type") or element
            if is_tuple:
                options["nargs"] = "+"
            choices = meta.get("choices")
            if choices is not None:
                options["choices"] = list(choices() if callable(choices) else choices)
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        if meta.get("flag") and element is not bool:  # --lr LR, not --lr LEARNING_RATE
            options["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, help=help_text.replace("%", "%%"), **options)


def config_from_flags(cls: type, args: argparse.Namespace, base: Any = None, **preset: Any) -> Any:
    """``base`` (default: ``cls()``) with ``preset``, then every flag given, applied."""
    values = dict(preset)
    for f, _, is_tuple in config_fields(cls):
        if f.name not in vars(args):
            continue
        value = getattr(args, f.name)
        if is_tuple:
            value = tuple(sorted(value) if f.metadata.get("sort") else value)
        values[f.name] = value
    return dataclasses.replace(cls() if base is None else base, **values)


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
