r"""The book's library reference: every public function and class, by module, from its docstring.

A reader who meets a library call in a chapter can look it up on the book page ``api``: one line per
public object (a name in its module's ``__all__``, defined there), the first line of its docstring, and
the chapters or pages its docstring names (``Derived in notebook ...``, ``Described on the book page
...``). ``python -m crispedit_lite.teaching.api_index`` rewrites ``book/api.md`` from the docstrings;
a test checks that the committed page is current.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ApiEntry", "api_entries", "render_api_page"]

_NOTEBOOK = re.compile(r"``(\d{2}_[a-z0-9_]+)``")
_NOTEBOOK_TAG = re.compile(
    r"(?:Derived|first|Used)[^.]*?\bnotebooks?\s+((?:``\d{2}_[a-z0-9_]+``[\s,]*(?:and\s+)?)+)")
_PAGE_TAG = re.compile(r"book pages?\s+``([a-z0-9_]+)``(?:\s+and\s+``([a-z0-9_]+)``)?")
_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc):`(~?)([^`]+)`")
PAGE = "api"

_HEADER = """# Library reference

Every public function and class of `crispedit_lite`, module by module: the first line of its
docstring and the chapters or pages that derive or use it. In a notebook, `help(name)` shows the whole
docstring, with its equations and citations. This page is written from the docstrings by
`python -m crispedit_lite.teaching.api_index`.
"""


@dataclass(frozen=True)
class ApiEntry:
    """One public object: ``module``, ``name``, ``kind`` (function or class), ``summary`` and its ``links``.

    ``links`` are the notebooks (``"notebooks/NN_name"``) and book pages (``"book/name"``) its docstring
    names, in order. Listed on the book page ``api``.
    """

    module: str
    name: str
    kind: str
    summary: str
    links: tuple[str, ...]


def _myst(text: str) -> str:
    """Sphinx roles and reST literals of a docstring line as MyST Markdown."""
    text = _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)
    text = re.sub(r":math:`([^`]+)`", r"{math}`\1`", text)
    return text.replace("``", "`")


def _links(doc: str) -> tuple[str, ...]:
    flat = " ".join(doc.split())
    found = [f"notebooks/{nb}" for m in _NOTEBOOK_TAG.finditer(flat) for nb in _NOTEBOOK.findall(m.group(1))]
    found += [f"book/{p}" for m in _PAGE_TAG.finditer(flat) for p in m.groups() if p and p != PAGE]
    return tuple(dict.fromkeys(found))


def api_entries(package: str = "crispedit_lite") -> list[ApiEntry]:
    """The public objects of ``package``, sorted by module, in the order of each module's ``__all__``.

    Listed on the book page ``api``.
    """
    root = importlib.import_module(package)
    out = []
    names = sorted(info.name for info in pkgutil.walk_packages(root.__path__, package + ".")
                   if not info.name.endswith("__main__"))
    for name in [package, *names]:
        mod = importlib.import_module(name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != name:
                continue
            doc = inspect.getdoc(obj) or ""
            first = " ".join(doc.split("\n\n", 1)[0].split())
            out.append(ApiEntry(name, attr, "class" if inspect.isclass(obj) else "function", _myst(first),
                                _links(doc)))
    return out


def _title(link: str) -> str:
    if link.startswith("notebooks/"):
        return f"chapter {int(link.split('/')[1][:2])}"
    return link.split("/", 1)[1]


def render_api_page(entries: list[ApiEntry] | None = None) -> str:
    """The Markdown of ``book/api.md``: a section per module, a bullet per public object.

    Listed on the book page ``api``.
    """
    entries = api_entries() if entries is None else entries
    parts = [_HEADER]
    modules = list(dict.fromkeys(e.module for e in entries))
    for module in modules:
        mod = importlib.import_module(module)
        summary = _myst(" ".join((inspect.getdoc(mod) or "").split("\n\n", 1)[0].split()))
        parts.append(f"\n## `{module}`\n\n{summary}\n")
        for e in (e for e in entries if e.module == module):
            where = ", ".join(f"{{doc}}`{_title(link)} </{link}>`" for link in e.links)
            parts.append(f"- `{e.name}` ({e.kind}): {e.summary}" + (f" ({where})" if where else ""))
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write ``book/api.md`` next to the package (a checkout); ``--check``: exit 1 if it is stale."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(__file__).resolve().parents[2] / "book" / f"{PAGE}.md"
    text = render_api_page()
    if args == ["--check"]:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        print(f"{path.name}: {'current' if current == text else 'stale'}")
        return 0 if current == text else 1
    from crispedit_lite.atomic import write_text_atomic

    write_text_atomic(path, text)
    print(f"wrote {path.name}: {text.count(chr(10) + '- `')} objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
