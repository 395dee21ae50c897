"""The library reference page (``book/api.md``) is current and lists every public object."""

from __future__ import annotations

import re

from crispedit_lite.teaching import api_index
from tests.helpers import ROOT


def test_the_committed_page_is_current():
    committed = (ROOT / "book" / "api.md").read_text(encoding="utf-8")
    assert committed == api_index.render_api_page(), (
        "book/api.md is stale: run python -m crispedit_lite.teaching.api_index")


def test_every_public_object_is_listed_once_under_its_module():
    entries = api_index.api_entries()
    assert len(entries) > 400
    text = api_index.render_api_page(entries)
    sections = dict(re.findall(r"^## `([a-z_.]+)`\n\n.*?\n\n((?:- .*\n?)+)", text, re.M))
    for e in entries:
        assert f"- `{e.name}` ({e.kind}): " in sections[e.module], f"{e.module}.{e.name}"
    listed = sum(len(block.strip().splitlines()) for block in sections.values())
    assert listed == len(entries)


def test_links_follow_the_docstring_tags_and_roles_become_myst():
    entries = {(e.module, e.name): e for e in api_index.api_entries()}
    fit = entries[("crispedit_lite.teaching.api_index", "render_api_page")]
    assert fit.links == ()  # its own page is not linked to itself
    tagged = [e for e in entries.values() if e.links]
    assert tagged and all(link.split("/")[0] in ("notebooks", "book") for e in tagged for link in e.links)
    assert api_index._myst(":class:`~a.b.C` and :func:`x.y` and ``z`` and :math:`\\gamma`") == (
        "`C` and `x.y` and `z` and {math}`\\gamma`")
