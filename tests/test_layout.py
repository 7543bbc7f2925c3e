"""The package's layout: the core never imports the testing toolkit, and imports have no cycles.

Read from the source with ``ast``, not by importing, so a lazy import inside a function counts
too (for the testing rule) and a cycle is found even if import order happens to hide it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import llm_gateway

ROOT = Path(llm_gateway.__file__).parent
PACKAGE = "llm_gateway"


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: not in functions or ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from module_level_imports(node.body)
            yield from module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from module_level_imports(block)
            for handler in node.handlers:
                yield from module_level_imports(handler.body)
        elif isinstance(node, ast.With):
            yield from module_level_imports(node.body)


def all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def imported_modules(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The modules of this package that ``node`` in ``module`` imports (named explicitly)."""
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    else:
        if node.level:
            base = module if is_package(module) else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        # `from package import name`: `name` may be a submodule.
        names = {source} | {f"{source}.{alias.name}" for alias in node.names}
    return {name for name in names if name in MODULES}


def parents(module: str, *, root: bool = False) -> Iterator[str]:
    """The packages importing ``module`` runs first (the root too if ``root``: it is always
    imported before any of its modules, so it is left out of the implicit edges)."""
    parts = module.split(".")
    for end in range(1 if root else 2, len(parts)):
        yield ".".join(parts[:end])


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in module_level_imports(tree.body):
            for target in imported_modules(module, node):
                edges.add(target)
                edges.update(parents(target))
        edges.discard(module)
        # A module's own packages are being imported already: importing them adds nothing.
        edges -= set(parents(module, root=True))
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_outside_testing_imports_the_testing_toolkit() -> None:
    offenders = []
    for module, path in MODULES.items():
        if module == f"{PACKAGE}.testing" or module.startswith(f"{PACKAGE}.testing."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in all_imports(tree):
            if any(
                t == f"{PACKAGE}.testing" or t.startswith(f"{PACKAGE}.testing.")
                for t in imported_modules(module, node)
            ):
                offenders.append(f"{module}:{node.lineno}")
    assert offenders == [], f"the core imports llm_gateway.testing at {offenders}"


def test_the_private_modules_import_each_other_without_cycles() -> None:
    assert cycles(import_graph()) == []


# -- the checks themselves catch what they are for ------------------------------------------


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_cycles_finds_every_cycle(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_imports_are_resolved_relative_lazy_and_type_checking_aware() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ._models import LLMRequest\n"
        "from .providers import _mock\n"
        "import llm_gateway._tokens\n"
        "if TYPE_CHECKING:\n"
        "    from ._config import ModelConfig\n"
        "def later():\n"
        "    from .testing import MockLLMGateway\n"
    )
    tree = ast.parse(source)
    module = f"{PACKAGE}._gateway"
    at_import = set().union(*(imported_modules(module, n) for n in module_level_imports(tree.body)))
    assert at_import == {
        f"{PACKAGE}._models",
        f"{PACKAGE}.providers",
        f"{PACKAGE}.providers._mock",
        f"{PACKAGE}._tokens",
    }
    anywhere = set().union(*(imported_modules(module, n) for n in all_imports(tree)))
    assert {f"{PACKAGE}._config", f"{PACKAGE}.testing"} <= anywhere
