"""The package's imports point only down its three layers (contracts, engines, workflows), form
no cycle, and sit at the top of each module (a function-local import hides a cycle; only the
CLI imports lazily, so `languini --help` stays fast). Read from the source with ast, so a
module that is never imported by the tests is checked too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "languini"

CONTRACTS = {"errors", "io", "interrupts", "packaged", "device", "distributed", "config", "family", "compute",
             "mix", "run", "data"}
ENGINES = {"step", "throughput", "plan", "trainer", "evaluate"}
WORKFLOWS = {"compare", "selection", "leaderboard", "scaling", "plots", "eval_tasks", "lm_eval_adapter", "site",
             "verify", "cli"}
LAYERS = {**{m: 0 for m in CONTRACTS}, **{m: 1 for m in ENGINES}, **{m: 2 for m in WORKFLOWS}}
LAYER_NAMES = ("contracts", "engines", "workflows")
LAZY_ALLOWED = {"languini.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    assert "languini.cli" in found, f"no package found at {PACKAGE}"
    return found


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(languini module, line, at module level) for every import in `path`; `from x import y`
    counts as importing x.y where that is a module. Imports under `if TYPE_CHECKING:` are left out."""
    tree = ast.parse(path.read_text(), str(path))
    top = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        top.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not _in_function(stmt, n))
    typing_only = {id(n) for stmt in tree.body if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test)
                   for n in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, path.name == "__init__.py")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in top) for t in targets if t == "languini" or t.startswith("languini.")]
    return found


def _in_function(stmt: ast.AST, target: ast.AST) -> bool:
    for node in ast.walk(stmt):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and any(
                n is target for n in ast.walk(node)):
            return True
    return False


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int, bool]]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in modules() if m != "languini" and layer(m) is None)
    assert not unplaced, f"modules outside the three layers (add them to this test's tables): {unplaced}"


def test_imports_point_down(graph):
    upward = [f"{m}:{line} imports {t} ({LAYER_NAMES[layer(t)]} above {LAYER_NAMES[layer(m)]})"
              for m, edges in graph.items() for t, line, _ in edges
              if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_function_local_imports(graph):
    lazy = sorted({f"{m}:{line} imports {t} inside a function" for m, edges in graph.items() if m not in LAZY_ALLOWED
                   for t, line, top in edges if not top})
    assert not lazy, "\n".join(lazy)


def test_no_import_cycle(graph):
    edges = {m: {t for t, _, _ in e if t in graph and t != m} for m, e in graph.items()}
    cycle = _find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle through the graph's edges, by depth-first search, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walk_sees_a_planted_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a cycle and an upward edge planted in a graph are found."""
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    src = tmp_path / "m.py"
    src.write_text("import languini.cli\n\ndef f():\n    from languini import trainer\n")
    edges = imported("languini.compute", src, {"languini.cli", "languini.trainer"})
    assert ("languini.cli", 1, True) in edges and ("languini.trainer", 4, False) in edges
    assert layer("languini.cli") > layer("languini.compute")
