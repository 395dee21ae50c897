"""Chapter tags tell the truth: a docstring that sends a reader to a notebook or a book page is right.

A public object's docstring may say "Derived in notebook ``NN_name``" (or "notebooks ``A``, ``B``") and
"Described on the book page ``name``". Each named notebook's code or prose must mention the object
by name (a module tag: the module's name, or an import from it), and each named page must mention it
too. A tag that sends a reader to the wrong chapter is worse than none.
"""

from __future__ import annotations

import ast
import json
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crispedit_lite"
NOTEBOOK_TAG = re.compile(
    r"(?:Derived|first|Used)[^.]*?\bnotebooks?\s+((?:``\d{2}_[a-z0-9_]+``[\s,]*(?:and\s+)?)+)")
PAGE_TAG = re.compile(r"book page\s+``([a-z0-9_]+)``")
NAME = re.compile(r"``(\d{2}_[a-z0-9_]+)``")


@lru_cache(maxsize=None)
def notebook_text(stem: str) -> str:
    """Every code and markdown source of ``notebooks/<stem>.ipynb`` (empty if there is none)."""
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    if not path.exists():
        return ""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                     for c in nb["cells"])


@lru_cache(maxsize=None)
def page_text(name: str) -> str:
    """The text of ``book/<name>.md`` (empty if there is none)."""
    path = ROOT / "book" / f"{name}.md"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def tags() -> list[tuple[str, str, str, str]]:
    """``(module, object, kind, target)`` for every chapter tag in the package's docstrings.

    ``object`` is ``""`` for the module's own docstring; ``kind`` is ``notebook`` or ``page``.
    """
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        items = [("", ast.get_docstring(tree) or "")]
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                items.append((node.name, ast.get_docstring(node) or ""))
        for obj, doc in items:
            flat = " ".join(doc.split())
            for m in NOTEBOOK_TAG.finditer(flat):
                out += [(module, obj, "notebook", nb) for nb in NAME.findall(m.group(1))]
            out += [(module, obj, "page", p) for p in PAGE_TAG.findall(flat)]
    return out


def mentions(text: str, module: str, obj: str) -> bool:
    """Whether ``text`` names ``obj`` (a word) or, for a module tag, the module or an import from it."""
    if obj:
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(obj)}(?![A-Za-z0-9_])", text) is not None
    last = module.rsplit(".", 1)[-1]
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(last)}(?![A-Za-z0-9_])", text) is not None


def false_tags() -> list[str]:
    """Every tag whose notebook or page does not mention its object."""
    bad = []
    for module, obj, kind, target in tags():
        text = notebook_text(target) if kind == "notebook" else page_text(target)
        if not text:
            bad.append(f"{module}.{obj or '<module>'}: {kind} {target} does not exist")
        elif not mentions(text, module, obj):
            bad.append(f"{module}.{obj or '<module>'}: {kind} {target} never mentions it")
    return bad


def test_every_chapter_tag_names_a_chapter_that_mentions_the_object():
    bad = false_tags()
    assert not bad, f"{len(bad)} false chapter tags:\n" + "\n".join(bad)


def test_no_docstring_repeats_a_tag():
    seen: dict[tuple[str, str, str, str], int] = {}
    for t in tags():
        seen[t] = seen.get(t, 0) + 1
    assert [t for t, n in seen.items() if n > 1] == []


@pytest.mark.parametrize("text, obj, expected", [
    ("x = collect_kfac(model)", "collect_kfac", True),
    ("x = collect_kfac_fast(model)", "collect_kfac", False),
    ("nothing here", "merge_kfac", False),
])
def test_mentions_matches_whole_names_only(text, obj, expected):
    assert mentions(text, "crispedit_lite.kfac", obj) is expected
