"""The exception hierarchy drawn in the exceptions module's docstring is the real one."""

from __future__ import annotations

import re

import llm_gateway
from llm_gateway import _exceptions

TREE_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>[A-Z]\w+)(?: \((?P<also>\w+)\))?")


def drawn_tree() -> dict[str, tuple[str | None, str | None]]:
    """Class name -> (its parent in the drawing, its second base in parentheses)."""
    doc = _exceptions.__doc__ or ""
    block = doc.split("::", 1)[1]
    lines = [line[4:] for line in block.splitlines() if line.strip()]
    parents: list[tuple[int, str]] = []
    tree: dict[str, tuple[str | None, str | None]] = {}
    for line in lines:
        found = TREE_LINE.match(line)
        assert found, line
        depth = len(found["indent"]) // 4
        parents = parents[:depth]
        assert found["name"] not in tree, f"{found['name']} is drawn twice"
        tree[found["name"]] = (parents[-1][1] if parents else None, found["also"])
        parents.append((depth, found["name"]))
    return tree


def test_the_docstring_draws_every_exception_with_its_bases() -> None:
    tree = drawn_tree()
    assert set(tree) == set(_exceptions.__all__)
    for name, (parent, also) in tree.items():
        cls = getattr(_exceptions, name)
        bases = [b.__name__ for b in cls.__bases__]
        assert bases == [parent or "Exception", *([also] if also else [])], name
        assert getattr(llm_gateway, name) is cls  # every class is public
