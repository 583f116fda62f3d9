"""``make check-results``: regenerate every committed result under ``docs/results/`` from its
recorded command, with nothing retrained, and fail naming each committed file that differs.

    python -m agents.experiments.check_results            # all of them (make check-results)
    python -m agents.experiments.check_results demo text  # some of them
    python -m agents.experiments.check_results --keep     # keep the temporary copy to look at

Every results directory was made by a resumable command (``run_rl.py table``, ``demo``,
``reproduce``, ``eval``). Each check copies the committed directory into a temporary copy of the
repository's layout (the same relative paths, so the command runs exactly as recorded), deletes
the files the command derives from its checkpoints (tables, JSON, plots) and reruns the command
there with one torch thread (as the committed runs had): every checkpoint and
finished run is found, so only evaluation, aggregation and report writing run again. Then every
committed file of the directory (``git ls-files``) is compared with the regenerated one byte for
byte, except where noted below. The saved settings (``table_config.json``,
``reproduce_config.json``) stay: the command's own guard must accept them (it refuses a
directory made with other settings), and they must come out unchanged. A command that would
train anything is a failure: it means a checkpoint is missing.

Where a file cannot be byte-stable its data is compared instead:

- ``docs/results/text/beta0.3/results.json``: the ``ms_per_sample`` of every policy is dropped
  (wall-clock time measured at evaluation) and numbers are compared to 1e-6 relative: the
  perplexities of the loop paths come out up to 2.4e-9 relative apart from the committed ones
  on this machine (accuracies, FLOPs and frequencies are equal).
- ``docs/results/reproduction/fig4.4/results.json``: numbers compared to 1e-6 relative. The
  per-batch float32 test losses come out 1-3 float32 ulps (up to 2.6e-7 relative) apart from the
  committed ones: the machine's, not the code's doing (the code that wrote them, commit bc38f12,
  gives today's numbers here too, with 1 or 2 torch threads alike). ``fig4.4.md`` (3 digits)
  and ``fig4.4.png`` are compared byte for byte.
- ``docs/results/text/beta0.3/results.md``: the last column (``ms / sample``, the same timing)
  is dropped; every other cell is compared exactly.
- The demo (``docs/results/demo``) was made by ``make demo`` in a clean clone at ``/tmp/ci``
  (CI): its ``table_config.json``, ``tradeoff.json`` and ``tradeoff.md`` name the shipped model
  by that clone's absolute path. In the copy, ``table_config.json`` names this checkout's shipped
  model instead (the command's settings guard compares the path, and the model itself by its
  digest, ``dynalay_digest``), and in the regenerated files that path is replaced by the
  recorded one before the byte comparison.

The tables' and the reproduction's wall times (``ms_per_sample``, ``epoch_seconds``) were
measured when their checkpoints were made and are stored in per-seed files the commands reuse,
so those outputs are compared byte for byte, PNG plots included (matplotlib writes no date into
a PNG).

``runs`` (:func:`replay_runs`): every committed run directory's agent is evaluated again on its
main model and test images, as ``run_rl.py eval`` evaluates it, and must give its
``summary.json``'s accuracy, FLOPs and action frequencies (the tables reuse their cached
``policies.json``, so this is what shows that the shared run directories still act as recorded).

Not checked: ``docs/results/tradeoff_200k_seed0_policies.json`` is the evaluation of agents
trained for 200,000 steps whose checkpoints are not committed (``docs/results.md`` says how it
was made): it cannot be regenerated without training them again. ``docs/results/loops/`` holds
what ``bench/loop_search.py`` (a benchmark, not a ``run_rl.py`` command) wrote; its
``report.md`` files regenerate with ``python bench/loop_search.py --report --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The committed text run was evaluated as ``runs/text/<its run directory>`` (docs/text.md).
TEXT_RUN = "runs/text/DynaLay-WikiText2-v0_ppo_s0_20261201-133635"
#: Where CI's clean clone lay when it made the demo (``dynalay_checkpoint`` there).
CI_SHIPPED_MODEL = "/tmp/ci/dynalay_env/shipped/FashionMNIST.pt"
TRAINING = re.compile(
    r"^(table: seed \d+: training|reproduce: training|sweep: training"
    r"|agent_options: seed\d+: training)"
)
EXPERIMENT_FILES = [
    f"{name}/{leaf}"
    for name in ("table4.1", "fig4.1", "fig4.2", "fig4.3", "fig4.4", "sec4.0.5", "introspection")
    for leaf in ("results.json", f"{name}.md", f"{name}.png")
]


@dataclass
class Check:
    """One committed results directory and the command that made it."""

    name: str
    committed: str  # the committed directory, relative to the repository
    command: list[str]  # run_rl.py's arguments, as recorded
    derived: list[str]  # files (relative to ``committed``) the command writes: deleted first
    run_at: str | None = None  # where the command found the directory, if not ``committed``
    needs: list[str] = field(default_factory=list)  # other committed directories it reads
    compare: dict[str, Callable[[bytes, bytes], bool]] = field(default_factory=dict)
    substitute: bool = False  # replace this checkout's shipped-model path by CI's


def _close(old: object, new: object, drop: tuple[str, ...]) -> bool:
    """JSON data equal, floats to 1e-6 relative, keys in ``drop`` left out at every level."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [k for k in old if k not in drop]
        return keys == [k for k in new if k not in drop] and all(
            _close(old[k], new[k], drop) for k in keys
        )
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            _close(a, b, drop) for a, b in zip(old, new, strict=True)
        )
    if isinstance(old, float) and isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-6, abs_tol=1e-12)
    return type(old) is type(new) and old == new


def _same_data(*drop: str) -> Callable[[bytes, bytes], bool]:
    return lambda committed, regenerated: _close(
        json.loads(committed), json.loads(regenerated), drop
    )


def _same_but_last_column(committed: bytes, regenerated: bytes) -> bool:
    """An evaluation's results.md: equal but for its last column (``ms / sample``)."""

    def cells(data: bytes) -> list[str]:
        return [
            line.rsplit("|", 2)[0] if line.startswith("|") else line
            for line in data.decode().splitlines()
        ]

    return cells(committed) == cells(regenerated)


TABLE_FILES = ["tradeoff.json", "tradeoff.md", "tradeoff.png"]
CHECKS = {
    "tradeoff": Check(
        "tradeoff",
        "docs/results/tradeoff",
        # README, docs/results.md; the other flags are the table's defaults
        [
            "table",
            "--env",
            "DynaLay-FashionMNIST-v0",
            "--seeds",
            "0",
            "1",
            "2",
            "--epochs",
            "3",
            "--train-size",
            "30000",
            "--strides",
            "2",
            "2",
            "2",
            "--betas",
            "0.03",
            "0.1",
            "0.3",
            "1",
            "--total-timesteps",
            "50000",
            "--out",
            "docs/results/tradeoff",
        ],
        TABLE_FILES,
    ),  # fmt: skip
    "demo": Check(
        "demo",
        "docs/results/demo",
        ["demo", "--out", "runs/demo"],  # make demo (tradeoff.json: "out": "runs/demo")
        TABLE_FILES,
        run_at="runs/demo",
        substitute=True,
    ),
    "reproduction": Check(
        "reproduction",
        "docs/results/reproduction",
        # README, docs/reproduction.md
        [
            "reproduce",
            "all",
            "--table-dir",
            "docs/results/tradeoff",
            "--out",
            "docs/results/reproduction",
        ],
        ["reproduction.md", *EXPERIMENT_FILES],
        needs=["docs/results/tradeoff"],
        compare={"fig4.4/results.json": _same_data()},
    ),  # fmt: skip
    "text": Check(
        "text",
        "docs/results/text/beta0.3",
        # docs/text.md, command 2
        [
            "eval",
            TEXT_RUN,
            "--eval-size",
            "768",
            "--taus",
            "0.05",
            "0.1",
            "0.15",
            "0.2",
            "0.3",
            "--device",
            "cpu",
        ],
        ["results.json", "results.md"],
        run_at=TEXT_RUN,
        compare={"results.json": _same_data("ms_per_sample"), "results.md": _same_but_last_column},
    ),  # fmt: skip
    "agent_options": Check(
        "agent_options",
        "docs/results/agent_options",
        # docs/results.md, issue 19's study: every agent re-evaluated from its run directory
        [
            "options",
            "--table",
            "docs/results/tradeoff",
            "--betas",
            "0.1",
            "--out",
            "docs/results/agent_options",
            "--device",
            "cpu",
        ],
        ["options.json", "report.md"],
        needs=["docs/results/tradeoff"],
    ),  # fmt: skip
}


def committed_files(folder: str) -> list[str]:
    """The files of ``folder`` in git's index, relative to it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", folder], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    return sorted(str(Path(p).relative_to(folder)) for p in listed.split("\0") if p)


def _shipped_model() -> str:
    """This checkout's shipped Fashion-MNIST model, as ``run_rl.py demo`` names it."""
    code = "import dynalay_env, pathlib; print(pathlib.Path(dynalay_env.__file__).parent)"
    folder = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    return str(Path(folder) / "shipped" / "FashionMNIST.pt")


def _link_shared_data(root: Path) -> None:
    """``../shared/data`` as the repository sees it (the text run's recorded ``data_dir``)."""
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (root.parent / "shared").symlink_to(shared, target_is_directory=True)


def run_check(check: Check, root: Path, timeout: float) -> list[str]:
    """Regenerate one directory under ``root`` (a copy of the repository's layout); returns the
    committed files that differ, each with the reason."""
    target = root / (check.run_at or check.committed)
    for needed in check.needs:  # regenerated earlier in this run, or copied as committed
        if not (root / needed).exists():
            shutil.copytree(REPO / needed, root / needed, symlinks=True)
    files = committed_files(check.committed)
    for relative in files:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / check.committed / relative, target / relative)
    for relative in check.derived:
        (target / relative).unlink()
    local = _shipped_model() if check.substitute else None
    if local is not None:  # the saved settings name CI's clone: name this checkout's instead
        for relative in sorted(set(files) - set(check.derived)):
            copied = (target / relative).read_bytes()
            if CI_SHIPPED_MODEL.encode() in copied:
                (target / relative).write_bytes(
                    copied.replace(CI_SHIPPED_MODEL.encode(), local.encode())
                )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, str(REPO / "run_rl.py"), *check.command]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return [f"{check.committed}: `{' '.join(check.command)}` ran over {timeout:.0f} s"]
    seconds = time.perf_counter() - started
    log = done.stdout + done.stderr
    if done.returncode != 0:
        return [f"{check.committed}: `{' '.join(check.command)}` exited {done.returncode}:\n{log}"]
    # what the table (``table: seed s: training ...``) and the reproduction print before training
    trained = [line for line in log.splitlines() if TRAINING.match(line)]
    problems = [f"{check.committed}: the command trained something: {line}" for line in trained]
    for relative in files:
        committed = (REPO / check.committed / relative).read_bytes()
        regenerated_file = target / relative
        if not regenerated_file.is_file():
            problems.append(f"{check.committed}/{relative}: not written again")
            continue
        regenerated = regenerated_file.read_bytes()
        if local is not None:
            regenerated = regenerated.replace(local.encode(), CI_SHIPPED_MODEL.encode())
        compare = check.compare.get(relative)
        same = regenerated == committed if compare is None else compare(committed, regenerated)
        if not same:
            how = "its data differs" if compare else "differs byte for byte"
            problems.append(f"{check.committed}/{relative}: {how}")
    rewritten = len(check.derived)
    print(
        f"check-results: {check.name}: {len(files)} committed files, {rewritten} regenerated by "
        f"`run_rl.py {' '.join(check.command)}` in {seconds:.0f} s: "
        + ("identical" if not problems else f"{len(problems)} differ"),
        flush=True,
    )
    return problems


#: The check that replays every committed run directory's agent (:func:`replay_runs`).
RUNS = "runs"


def replay_runs(folder: str | Path = "docs/results") -> list[str]:
    """Every committed run directory under ``folder`` (a ``config.yaml`` and a
    ``summary.json``): its agent evaluated again greedily on its final main model and test
    images, as ``run_rl.py eval`` evaluates it (:func:`~agents.experiments.evaluation.
    evaluation_core`), must give its summary's accuracy, FLOPs and action frequencies (floats
    to 1e-6 relative). A run committed without a complete final phase (the reproduction's
    frozen agents keep their summaries only, the text runs their agents without the main model,
    which is evaluated where the "text" check runs it) is counted and skipped. Returns one problem line per run
    that does not reproduce; nothing is written."""
    from agents.algorithms import load_agent_policy
    from agents.config import load_run_config
    from agents.evaluate import run_policy
    from agents.experiments.evaluation import evaluation_core
    from agents.files import final_checkpoints

    problems, skipped, started = [], 0, time.perf_counter()
    summaries = sorted(
        p for p in (REPO / folder).rglob("summary.json") if (p.parent / "config.yaml").is_file()
    )
    previous = Path.cwd()
    os.chdir(REPO)  # run directories record their paths relative to the repository
    try:
        for summary_file in summaries:
            run_dir = summary_file.parent
            if run_dir.is_relative_to(REPO):
                run_dir = run_dir.relative_to(REPO)
            try:
                final_checkpoints(run_dir)
            except FileNotFoundError:  # committed without its main model: summary (and agent)
                skipped += 1
                continue
            config = load_run_config(run_dir)
            core, episodes, _ = evaluation_core(config, run_dir, "cpu", config.eval_size)
            policy = load_agent_policy(run_dir, config.algo, "cpu")
            result = run_policy(core, policy, episodes, "agent").to_json()
            saved = json.loads(summary_file.read_text())
            differing = [
                key
                for key in ("episodes", "accuracy", "relative_flops", "action_frequencies")
                if not _close(json.loads(json.dumps(result[key])), saved[key], ())
            ]
            if differing:
                problems.append(f"{run_dir}: its agent now gives another {', '.join(differing)}")
    finally:
        os.chdir(previous)
    seconds = time.perf_counter() - started
    verdict = "all reproduce their summary" if not problems else f"{len(problems)} differ"
    print(f"check-results: {RUNS}: {len(summaries) - skipped} run directories replayed in "
          f"{seconds:.0f} s: {verdict} ({skipped} committed without checkpoints: their summaries "
          "(and agents) only)", flush=True)  # fmt: skip
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check_results",
        description="Regenerate every committed results directory from its recorded command "
        "(nothing retrained) and compare it with the committed files.",
    )
    parser.add_argument("checks", nargs="*", help=f"some of {[*CHECKS, RUNS]} (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds per command before it counts failed"
    )
    args = parser.parse_args(argv)
    names = args.checks or [*CHECKS, RUNS]
    unknown = sorted(set(names) - {*CHECKS, RUNS})
    if unknown:
        parser.error(f"unknown checks {unknown}; choose among {[*CHECKS, RUNS]}")
    scratch = Path(tempfile.mkdtemp(prefix="check-results-"))
    root = scratch / "repo"
    root.mkdir()
    _link_shared_data(root)
    started = time.perf_counter()
    problems: list[str] = []
    try:
        for name in names:
            problems += (
                replay_runs() if name == RUNS else run_check(CHECKS[name], root, args.timeout)
            )
    finally:
        if args.keep:
            print(f"check-results: the regenerated files are in {root}")
        else:
            shutil.rmtree(scratch)
    elapsed = time.perf_counter() - started
    if problems:
        print("check-results: FAILED, these committed files differ:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"check-results: every checked results directory is identical ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
