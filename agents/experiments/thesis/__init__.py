"""``run_rl.py reproduce``: the thesis's Chapter 4, one experiment per table or figure, each
with a verdict.

    python run_rl.py reproduce all [--seeds 0 1 2] [--quick] [--out runs/reproduction]
    python run_rl.py reproduce fig4.4 table4.1 --table-dir docs/results/tradeoff

Each claim is one module with its ``run(rep)`` and its ``claims(...)`` (the verdict's parts on
plain numbers); :data:`EXPERIMENTS` names them. Each writes ``out/<name>/`` (``results.json``
with the raw numbers, ``<name>.png``, ``<name>.md`` with the claim, the measurement and a
verdict); ``out/reproduction.md`` gathers the sections.

- ``table4.1`` (:mod:`.table4_1`): accuracy and backward-pass time of DynaLay, the plain CNN
  and the DEQ, from a ``run_rl.py table`` directory (trained first when there is none).
- ``fig4.1`` (:mod:`.fig4_1`): the agent's action frequencies over training.
- ``fig4.2`` (:mod:`.fig4_2`): pre-training on vs off, test curves per supervised epoch.
- ``fig4.3`` (:mod:`.fig4_3`): (a) reward over training; (b) frequencies and accuracy vs beta.
- ``fig4.4`` (:mod:`.fig4_4`): FPI in the first 0..3 blocks, over test batches of 100.
- ``sec4.0.5`` (:mod:`.sec4_0_5`): agent pre-training vs a first supervised phase after an
  untrained agent.
- ``introspection`` (:mod:`.introspection`): ``max_steps`` 1, 2, 3 under both penalties.

The experiments share their trained pieces (:class:`~.pieces.Reproduction`: pre-trained models,
alternating runs, agents on the frozen model), each trained once and resumable. The settings of
a results directory are saved in ``reproduce_config.json``; a rerun with other settings is
refused. A new experiment is one module here and one :data:`EXPERIMENTS` line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agents.cli import add_config_flags, config_from_flags
from agents.config import RunConfigMismatch
from agents.files import RunFileError
from dynalay_env.data import DataNotFoundError, SplitOverlapError
from dynalay_env.registry import ENV_IDS

from ..cli import SettingsMismatch
from ..common import write_text
from . import fig4_1, fig4_2, fig4_3, fig4_4, introspection, sec4_0_5, table4_1
from .config import QUICK, ReproduceConfig, ReproductionError
from .pieces import Reproduction

__all__ = ["EXPERIMENTS", "QUICK", "ReproduceConfig", "Reproduction", "reproduce"]

#: name -> the experiment's ``run(rep)``, in the order of the thesis.
EXPERIMENTS: dict[str, Callable[[Reproduction], dict[str, Any]]] = {
    module.NAME: module.run
    for module in (table4_1, fig4_1, fig4_2, fig4_3, fig4_4, sec4_0_5, introspection)
}


def reproduce(config: ReproduceConfig, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Run the experiments ``names`` (keys of :data:`EXPERIMENTS`); their payloads by name.

    Also writes ``out/reproduction.md``: the sections of every experiment finished so far.
    """
    rep = Reproduction(config)
    results = {name: EXPERIMENTS[name](rep) for name in names}
    sections = [
        (rep.out / name / f"{name}.md").read_text()
        for name in EXPERIMENTS
        if (rep.out / name / f"{name}.md").is_file()
    ]
    write_text(rep.out / "reproduction.md", "\n".join(sections))
    return results


def reproduce_main(argv: list[str]) -> int:
    """``run_rl.py reproduce``: the flags are :class:`ReproduceConfig`'s fields (a flag given
    overrides ``--quick``, which overrides the defaults)."""
    parser = argparse.ArgumentParser(
        prog="run_rl.py reproduce",
        description="Reproduce the thesis's Chapter 4: each experiment writes results.json, a "
        "PNG and a markdown section with the thesis's claim, the measured numbers and a verdict "
        "into OUT/<experiment>/, and OUT/reproduction.md gathers them. Resumable: a rerun with "
        "the same flags skips what finished.",
    )
    add = parser.add_argument
    add("experiments", nargs="+", choices=[*EXPERIMENTS, "all"], help="what to reproduce")
    add("--quick", action="store_true", help=f"reduced budget, minutes on 2 CPU cores: {QUICK}")
    add_config_flags(parser, ReproduceConfig)
    args = parser.parse_args(argv)
    config = config_from_flags(ReproduceConfig, args, **(QUICK if args.quick else {}))
    if config.env not in ENV_IDS.values():
        parser.error(f"unknown --env {config.env!r}; choose one of {sorted(ENV_IDS.values())}")
    if len(config.strides) != len(config.widths):
        parser.error(
            f"--strides {list(config.strides)} needs one entry per width {list(config.widths)}"
        )
    names = (
        list(EXPERIMENTS) if "all" in args.experiments else list(dict.fromkeys(args.experiments))
    )
    try:
        results = reproduce(config, names)
    except (ReproductionError, SettingsMismatch, RunConfigMismatch, SplitOverlapError) as error:
        parser.error(str(error))
    except (DataNotFoundError, RunFileError) as error:
        print(f"run_rl.py: {error}", file=sys.stderr)
        return 2
    for name in results:
        print((Path(config.out) / name / f"{name}.md").read_text())
    print(f"all sections: {Path(config.out) / 'reproduction.md'}")
    return 0
