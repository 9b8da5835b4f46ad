"""The architecture as a test: the import graph of ``harness`` and ``implementations``, read from
the source (no module is imported), holds the layering of docs/DESIGN.md.

* ``harness.records`` (the run-folder format) is the bottom layer: it reaches no other tbench
  package and no torch. ``harness.analyse`` sits on it and on nothing else of tbench: report,
  compare and export run on a machine without torch. ``harness.measure`` (the child worker)
  and ``harness.suite`` never reach the run stage, the analysis or the CLI; nothing but the
  CLI reaches the CLI. Through any import, at module level or inside a function.
* No import cycle among module-level imports (a cycle broken by a lazy import is one too: the
  walk below also counts imports inside functions).
* No parameter travels through thread or module state in the run stage: no module-level
  ``threading.local``.
* Behaviour belongs to the strategy: the harness never compares a strategy's name or kernel to
  a string (``.name ==``, ``.kernel ==``); only ``implementations/registry.py`` and the suite
  loader turn names into objects.
* Sizes a reader can hold: no harness module over 350 lines, no function over 60.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "implementations")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (at any depth in its code), resolved to the most specific
    known module, or the top-level name of a third-party one; TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known and target.split(".")[0] in PACKAGES:
                target = target.rpartition(".")[0]
            found.add(target if target in known else target.split(".")[0])
    found.discard(name)
    return {m for m in found if m}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def with_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first."""
    out = {}
    for name, edges in graph.items():
        parts = name.split(".")
        out[name] = edges | ({".".join(parts[:i]) for i in range(1, len(parts))} - {name})
    return out


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start`` -> the module that imports it (for the message)."""
    seen, todo = {start: ""}, [start]
    while todo:
        here = todo.pop()
        for nxt in graph.get(here, ()):
            if nxt not in seen:
                seen[nxt] = here
                todo.append(nxt)
    return seen


def chain(seen: dict[str, str], end: str) -> str:
    path = [end]
    while seen[path[-1]]:
        path.append(seen[path[-1]])
    return " -> ".join(reversed(path))


STAGES = ("harness.records", "harness.analyse", "harness.suite", "harness.measure", "harness.run",
          "harness.cli")
FORBIDDEN = {  # what each layer must not reach, through any import
    "harness.records": ("torch", "deepspeed", "pandas", "implementations", "harness.analyse",
                        "harness.suite", "harness.measure", "harness.run", "harness.cli"),
    "harness.analyse": ("torch", "deepspeed", "implementations", "harness.measure", "harness.run",
                        "harness.suite", "harness.cli"),
    "harness.suite": ("harness.measure", "harness.run", "harness.analyse", "harness.cli"),
    "harness.measure": ("harness.run", "harness.analyse", "harness.cli"),
    "harness.run": ("harness.cli",),
}


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_each_layer_reaches_only_what_is_below_it(graph, layer):
    modules = [m for m in graph if m == layer or m.startswith(layer + ".")]
    assert modules, layer
    full = with_parents(graph)
    for start in modules:
        seen = reachable(full, start)
        bad = [m for m in seen if any(m == f or m.startswith(f + ".") for f in FORBIDDEN[layer])]
        assert not bad, f"{start} reaches {bad[0]}: {chain(seen, bad[0])}"


def harness_sources() -> list[Path]:
    return sorted((ROOT / "harness").rglob("*.py"))


def test_no_thread_local_carries_run_parameters():
    for path in harness_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:  # module level
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
            for call in calls:
                name = ast.unparse(call.func)
                assert name not in ("threading.local", "local"), f"{path}: {name}() at module level"


STRATEGY_NAME = re.compile(r"(strategies\.\w+|attention|parallel|precision|ops|memory|padding|"
                           r"compression|strategy)\.(name|kernel)\s*(==|!=|in\b|not in\b)")


def test_no_strategy_name_is_compared_outside_the_registry_and_the_loader():
    allowed = {ROOT / "harness" / "suite" / "loader.py", ROOT / "harness" / "suite" / "strategies.py"}
    for path in harness_sources():
        if path in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            assert not STRATEGY_NAME.search(line), f"{path}:{n}: {line.strip()}"


def test_the_check_sees_a_name_comparison():
    assert STRATEGY_NAME.search('if s.parallel.name == "fsdp":')
    assert STRATEGY_NAME.search('flex = point.strategies.attention.kernel == "flex"')
    assert not STRATEGY_NAME.search('if spec.name == "slurm":')  # a launcher, no strategy


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 350, 60


def test_modules_and_functions_stay_readable():
    for path in harness_sources():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                assert size <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {size} lines"


def test_no_import_cycle(graph):
    # a package's __init__ importing its own modules (to register or re-export them) is no cycle
    ours = {m: {n for n in e if n in graph and not n.startswith(m + ".")} for m, e in graph.items()}
    for start in ours:
        seen = reachable(ours, start)
        back = [m for m in seen if start in ours[m] and m != start]
        assert not back, f"import cycle: {chain(seen, back[0])} -> {start}"


def test_the_walk_sees_lazy_imports(tmp_path):
    """The checker itself: an import inside a function counts, a TYPE_CHECKING one does not."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n"
                   "def f():\n    import torch\n    from harness.records import stats\n")
    found = imports_of("harness.x.m", src, {"harness.records.stats", "harness.records"})
    assert found == {"typing", "torch", "harness.records.stats", "harness.records"}
