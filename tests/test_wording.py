"""Everything a reader sees speaks to the reader: no project-process words, no machine paths.

Scanned: the book's prose pages (``book/*.md``, with the tables they include from
``book/_generated``), ``README.md``, the package data under ``crispedit_lite/resources``, every
notebook's markdown cells, code cells and stored outputs (stdout, stderr and rich text outputs are all
stored in the ``.ipynb`` a reader opens on GitHub or Colab), and every docstring of the package (module,
class and function, read with ``ast``: what ``help()`` shows).

Flagged (case-insensitive, whole words):

* process words: ``issue(s)`` in the sense of a work ticket, ``session(s)``, ``ticket(s)``,
  ``helper(s)``, ``dossier``, "the lead" / "the project lead";
* development history told to the reader: "an earlier version of", "borrowed" (a machine or its
  time), "our target", "stopped by hand", "renamed from";
* machine paths: ``shared/reference``, ``.devcarry``, ``/work/``, ``/tmp/``, ``/root/``.

The allow-list is one rule: **"issue" may be used to cite a numbered entry of another project's
public tracker**, i.e. when the same phrase carries the number, as in "EasyEdit issue #637" or
"GitHub issues #465 and #627". Whole-word matching already leaves file names alone
(``benchmarks/h200_session.sh`` is not the word "session"). Anything else is reworded for the reader.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

FLAGGED = re.compile(
    r"\bissues?\b|\bsessions?\b|\btickets?\b|\bhelpers?\b|\bdossier\b|\bthe (?:project )?lead\b"
    r"|\ban\s+earlier\s+version\s+of\b|\bborrowed\b|\bour\s+targets?\b|\bstopped\s+by\s+hand\b"
    r"|\brenamed\s+from\b"
    r"|shared/reference|\.devcarry|/work/|/tmp/|/root/",
    re.IGNORECASE,
)
#: "issue" followed, within the same phrase, by a tracker number: "EasyEdit issue #637", "issues #3, #12".
TRACKER_CITATION = re.compile(r"\bissues?\s+#\d+", re.IGNORECASE)


def violations(text: str) -> list[str]:
    """The flagged words of ``text`` that the allow-list does not excuse, with some context."""
    allowed = [m.span() for m in TRACKER_CITATION.finditer(text)]
    found = []
    for m in FLAGGED.finditer(text):
        if any(a <= m.start() < b for a, b in allowed):
            continue
        found.append(text[max(0, m.start() - 40) : m.end() + 40].replace("\n", " "))
    return found


def _prose_files() -> list[Path]:
    files = sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "book" / "_generated").glob("*.md"))
    files += [ROOT / "README.md"]
    for folder in ("resources",):
        files += sorted(p for p in (ROOT / "crispedit_lite" / folder).iterdir()
                        if p.is_file() and p.suffix != ".safetensors")  # binary tensors: not prose
    return files


def _notebook_texts(path: Path):
    """(cell index, kind, text) for each cell source and each stored output of a notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        yield i, cell["cell_type"], "".join(cell["source"])
        for out in cell.get("outputs", []):
            if "text" in out:
                yield i, "output", "".join(out["text"])
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/"):
                    yield i, "output", "".join(data) if isinstance(data, list) else str(data)


def notebook_violations() -> list[str]:
    """``'NN_name.ipynb cell i (markdown|code|output): ...context...'`` for every flagged word."""
    found = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, kind, text in _notebook_texts(path):
            found += [f"{path.name} cell {i} ({kind}): ...{v}..." for v in violations(text)]
    return found


def docstrings() -> list[tuple[str, str]]:
    """``(where, docstring)`` for every module, class and function docstring of the package."""
    found = []
    for path in sorted((ROOT / "crispedit_lite").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    name = getattr(node, "name", "<module>")
                    found.append((f"{path.relative_to(ROOT)}:{name}", doc))
    return found


# --- the rule itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The target of the issue is 1.15x.",
        "that session's device time",
        "measured by the project lead",
        "see shared/reference/anchors.md",
        "--tokenizer .devcarry/tokenizer",
        "--results-dir /tmp/dryrun",
        "the Issues tab",
        "a helper wrote it",
        "believed wrong (dossier)",
        "open a ticket",
        "An earlier version of this chapter stopped every editor after 30 steps",
        "the GPU machine we borrowed",
        "Our target, a step within 1.15x of FT",
        "note: stopped by hand after its first method",
        "the file was renamed from the --out path",
        "an earlier\n  version of this library did so",
    ],
)
def test_process_words_and_machine_paths_are_flagged(text):
    assert violations(text), text


@pytest.mark.parametrize(
    "text",
    [
        "EasyEdit issue #637 broke on it",
        "GitHub issues #465 and #627",
        "run `bash benchmarks/h200_session.sh`",
        "This leads to a smaller editable subspace.",
        "git clone https://github.com/zarifikram/CrispEdit ../CrispEdit-official",
    ],
)
def test_legitimate_uses_pass(text):
    assert not violations(text), violations(text)


# --- the sources ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _prose_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pages_readme_and_package_data_speak_to_the_reader(path):
    found = violations(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)}: reword for the reader: {found}"


def test_notebooks_speak_to_the_reader():
    found = notebook_violations()
    assert not found, "reword for the reader:\n" + "\n".join(found)


def test_docstrings_speak_to_the_reader():
    found = [f"{where}: ...{v}..." for where, doc in docstrings() for v in violations(doc)]
    assert not found, "reword for the reader (help() shows docstrings):\n" + "\n".join(found)
