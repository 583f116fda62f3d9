"""The house rules of the imports: layers only point down, and no module imports itself back.

Layers: ``main_model`` <- ``dynalay_env`` <- ``agents`` <- ``run_rl.py``. Every ``import`` in
every module counts, also those inside functions (lazy imports) and under ``TYPE_CHECKING``:
a cycle hidden that way is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"main_model": 0, "dynalay_env": 1, "agents": 2, "run_rl": 3}


def module_files() -> dict[str, Path]:
    """Our module names -> their files (a package's name -> its ``__init__.py``)."""
    modules = {"run_rl": ROOT / "run_rl.py"}
    for package in ("main_model", "dynalay_env", "agents"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def imports_of(name: str, path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import statement of ours in the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package upwards
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from P import m`: P itself (its __init__ runs and is read), and P.m when m is a
            # module of its own.
            targets = [base] + [
                f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c`: the deepest of ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer(name: str) -> int:
    return LAYERS[name.split(".")[0]]


def test_every_import_points_down_the_layers():
    upward = [
        f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
        for name, targets in GRAPH.items()
        for target, line in targets
        if layer(target) > layer(name)
    ]
    assert not upward, (
        "imports up the layers (main_model <- dynalay_env <- agents <- run_rl):\n"
        + ("\n".join(upward))
    )


def test_no_import_cycle():
    state: dict[str, str] = {}  # "open" while on the path being explored, "done" after
    path: list[tuple[str, int]] = []  # (module, line of its import of the next module)
    cycles: list[str] = []

    def where(name: str, line: int) -> str:
        return f"{name} ({MODULES[name].relative_to(ROOT)}:{line})"

    def visit(name: str) -> None:
        state[name] = "open"
        for target, line in GRAPH[name]:
            if state.get(target) == "open":
                start = next(i for i, (n, _) in enumerate(path) if n == target)
                loop = [*path[start:], (name, line)]
                cycles.append(" -> ".join(where(n, ln) for n, ln in loop) + f" -> {target}")
            elif target not in state:
                path.append((name, line))
                visit(target)
                path.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles (each module with its line importing the next):\n" + (
        "\n".join(cycles)
    )


def test_the_rules_see_lazy_imports_and_package_round_trips(tmp_path):
    """The checker itself: an import inside a function and a `from package import module`
    inside that package are both seen."""
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from agents.trainer import AlternatingTrainer\n")
    assert ("agents.trainer", 2) in imports_of("main_model.lazy", lazy)
    round_trip = tmp_path / "fpi.py"
    round_trip.write_text("from main_model import distributed\n")
    targets = {target for target, _ in imports_of("main_model.fpi", round_trip)}
    assert targets == {"main_model", "main_model.distributed"}
