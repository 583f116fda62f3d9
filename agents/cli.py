"""A command line from a config dataclass: each field is one flag, declared once, on the field.

Each field of a config (:class:`~agents.config.TrainConfig` for ``run_rl.py``'s training
flags, a study's config in :mod:`agents.experiments`) becomes one flag (``--train-size`` for
``train_size``), its type, ``nargs`` and default read from the field, its help from the
field's ``metadata``, which :func:`arg` writes:

    epochs: int = arg(3, "training epochs of every model", type=positive_int)
    learning_rate: float = arg(1e-2, "Adam learning rate", flag="--lr", type=float)
    taus: tuple[float, ...] = arg(DEFAULT_TAUS, cli=False)   # no flag

:func:`add_config_flags` adds them; :func:`config_from_flags` builds the config from the flags
given (a flag left out keeps the field's default, or a preset's: ``--quick``);
:func:`given_flags` names the flags given, as the command line wrote them (what a resumed
run's check reports). Nothing lists a field twice. A ~100-line generator over
:func:`dataclasses.fields` rather than ``tyro`` (what CleanRL uses): the flags must stay
exactly as the README writes them (``--lr`` for ``learning_rate``, ``--no-agent-pretrain``
for ``agent_pretrain``, some fields without a flag, ``type=`` checks such as
``positive_int``), which plain argparse metadata gives directly, and it adds no dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


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
    default: Any = dataclasses.MISSING,
    help: Callable[[], str] | str = "",
    *,
    factory: Any = dataclasses.MISSING,
    flag: str | None = None,
    type: Callable[[str], Any] | None = None,
    choices: Callable[[], Sequence[Any]] | Sequence[Any] | None = None,
    sort: bool = False,
    cli: bool = True,
) -> Any:
    """A config field with its flag's settings: ``help`` (or a function giving it, read when
    the parser is built); ``factory``: instead of ``default``, a function making it (a dict);
    ``flag`` (default ``--field-name``); ``type`` (default: the field's element type);
    ``choices`` (or a function giving them, read when the parser is built); ``sort``: a tuple
    flag's values sorted; ``cli=False``: no flag."""
    metadata = {"help": help, "flag": flag, "type": type, "choices": choices}
    metadata.update(sort=sort, cli=cli)
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


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


def flag_of(f: dataclasses.Field) -> str:
    """The flag of field ``f``: its ``flag=``, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """One flag per field of ``cls`` (see the module docstring). A flag left out does not
    appear in the parsed namespace; the help names the default (of ``defaults``, when given)."""
    defaults = cls() if defaults is None else defaults
    for f, element, is_tuple in config_fields(cls):
        meta = f.metadata
        default = getattr(defaults, f.name)
        shown = list(default) if isinstance(default, tuple) else default
        described = meta.get("help", "")
        described = described() if callable(described) else described
        help_text = f"{described} (default: {shown})".strip()
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
        flag = flag_of(f)
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


def given_flags(cls: type, args: argparse.Namespace) -> dict[str, str]:
    """``{field: flag}`` for every flag of ``cls`` given on the command line ``args`` parsed."""
    return {f.name: flag_of(f) for f, _, _ in config_fields(cls) if f.name in vars(args)}
