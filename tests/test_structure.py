"""The package's shape, read from its source with `ast`: no import cycles, no two-way dependency
between sub-packages, and terminal printing and argument parsing only in the command layer."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gptperf"

# Small shared vocabulary every layer may import; it imports only itself.
LEAVES = ("gptperf.names", "gptperf.errors", "gptperf.dtypes", "gptperf.atomic")
# The command layer: the only code that parses arguments and prints to the terminal.
COMMAND_LAYER = ("gptperf.commands", "gptperf.output", "gptperf.cli", "gptperf.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_modules()[module].read_text(encoding="utf-8"), filename=str(_modules()[module]))


def _owner(name: str) -> str:
    """The gptperf module that defines `name` (a module, or a name inside one)."""
    modules = _modules()
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    """The gptperf modules `module` imports anywhere: at the top, inside functions, under
    TYPE_CHECKING. `from pkg import sub` counts as importing the module pkg.sub when it is one."""
    modules = _modules()
    is_package = _modules()[module].name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            out.update(_owner(a.name) for a in node.names if a.name.split(".")[0] == "gptperf")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "gptperf":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                out.add(full if full in modules else _owner(source))
    out.discard(module)
    return out


def _graph() -> dict[str, set[str]]:
    return {m: _imports(m) for m in _modules()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _unit(module: str) -> str:
    """A sub-package (gptperf.measure) or a top-level module (gptperf.train) as a whole."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _unit_edges() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(unit, unit) -> the module imports behind that dependency."""
    edges: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for a, targets in _graph().items():
        for b in targets:
            if b == "gptperf":  # the package's own __init__: only __version__
                continue
            ua, ub = _unit(a), _unit(b)
            if ua != ub:
                edges.setdefault((ua, ub), []).append((a, b))
    return edges


def _unit_cycles() -> list[tuple[list[str], list[tuple[str, str]]]]:
    """Cycles between sub-packages, each with the module imports that close it."""
    edges = _unit_edges()
    graph: dict[str, set[str]] = {}
    for ua, ub in edges:
        graph.setdefault(ua, set()).add(ub)
    out = []
    for component in _cycles(graph):
        inside = set(component)
        why = sorted(pair for (ua, ub), pairs in edges.items()
                     if ua in inside and ub in inside for pair in pairs)
        out.append((component, why))
    return out


def test_the_graph_sees_imports_inside_functions() -> None:
    """Guards the walker itself: a lazy import is still a dependency."""
    assert "gptperf.model.config" in _imports("gptperf.commands.common")  # imported in a function
    assert "gptperf.errors" in _imports("gptperf.cli")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], f"modules importing each other (directly or round a loop): {cycles}"


def test_no_two_way_dependency_between_subpackages() -> None:
    cycles = _unit_cycles()
    assert cycles == [], f"sub-packages depending on each other: {cycles}"


def test_vocabulary_modules_are_leaves() -> None:
    for leaf in LEAVES:
        assert _imports(leaf) <= set(LEAVES), (leaf, _imports(leaf) - set(LEAVES))


# --- printing and argument parsing live in the command layer ------------------------------------


def _library_modules() -> list[str]:
    return [m for m in _modules()
            if not any(m == c or m.startswith(c + ".") for c in COMMAND_LAYER)]


def _terminal_uses(module: str) -> list[str]:
    """Each place `module` prints, imports rich or argparse, or takes the command layer's consoles."""
    found = []
    output_aliases = set()
    for node in ast.walk(_tree(module)):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("rich", "argparse"):
                    found.append(f"{where} imports {a.name}")
                if a.name == "gptperf.output":
                    output_aliases.add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if source.split(".")[0] in ("rich", "argparse"):
                found.append(f"{where} imports {source}")
            for a in node.names:
                if source == "gptperf.output" and a.name in ("console", "err_console"):
                    found.append(f"{where} imports gptperf.output.{a.name}")
                if source == "gptperf" and a.name == "output":
                    output_aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"{where} calls print()")
        elif isinstance(node, ast.Attribute) and node.attr in ("Namespace", "parse_args"):
            found.append(f"{where} uses {node.attr}")
    for node in ast.walk(_tree(module)):
        if (isinstance(node, ast.Attribute) and node.attr in ("console", "err_console")
                and isinstance(node.value, ast.Name) and node.value.id in output_aliases):
            found.append(f"{module}:{node.lineno} uses gptperf.output.{node.attr}")
    return found


def test_the_checker_finds_terminal_use() -> None:
    """Guards the checker: it finds each kind of use in the command layer, where it is allowed."""
    uses = " ".join(_terminal_uses("gptperf.cli") + _terminal_uses("gptperf.commands.report"))
    assert "imports argparse" in uses and "calls print()" in uses


def test_printing_and_argument_parsing_only_in_the_command_layer() -> None:
    found = [use for m in _library_modules() for use in _terminal_uses(m)]
    assert found == [], ("library code prints, imports rich/argparse or the consoles "
                         f"(move it to gptperf/commands/ or gptperf/output.py): {found}")
