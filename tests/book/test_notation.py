"""The book speaks one notation: that of ``book/notation.md``.

Scanned: every chapter's markdown cells, the LaTeX inside its code cells (figure labels, printed
formulas), the prose pages ``book/*.md``, and (for the Kronecker order only) the package's
docstrings, which ``help()`` shows. Each rule below is one sentence of the notation page; each is
tested on a text that breaks it and on one that keeps it, and the book must keep all of them.

* **A ⊗ S, never S ⊗ A.** The book's ``vec`` is column-major, so K-FAC is
  :math:`\\mathbf A\\otimes\\mathbf S`; PyTorch's row-major form is written ``torch.kron(S, A)``.
* **M is only the mask.** A curvature is :math:`\\boldsymbol\\Omega` (or its own name); ``\\mathbf M``
  in an eigendecomposition, a quadratic form or next to a curvature word is flagged.
* **C is only MEMIT's covariance**, never a Kronecker curvature or a count of classes.
* **T is the number of edits**, never a count of examples or tokens (that is N).
* **No off-page names**: the eigenvectors of A are ``u^in_j`` (not ``v_j``), the gradient is
  ``G`` (the paper's ``Q``).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_S = r"(?:\\mathbf\s*\{?S\}?|\\bar\{\\mathbf\s*S\}|\\bar\{\\mathbf\s*\{S\}\})"
_A = r"(?:\\mathbf\s*\{?A\}?|\\bar\{\\mathbf\s*A\}|\\bar\{\\mathbf\s*\{A\}\})"
_SUB = r"(?:_\{[^{}]*\}|_\w)?"
_CURVATURE_WORDS = r"Hessian|curvature matrix|Gauss[–-]Newton matrix|\\succeq"

RULES: dict[str, re.Pattern[str]] = {
    # S (any subscript or bar) Kronecker A: LaTeX, unicode and plain-letter forms
    "S⊗A (the book writes A⊗S)": re.compile(
        rf"{_S}{_SUB}\s*\\otimes\s*{_A}|\bS\s*(?:⊗|\\otimes)\s*A\b"),
    # M as a matrix that is eigendecomposed, a quadratic form's matrix, or named with a curvature word
    "M as a curvature (M is only the mask)": re.compile(
        r"\\mathbf\s*\{?M\}?\s*=\s*\\mathbf\s*\{?U\}?\s*\\?(?:boldsymbol)?\\?Sigma"
        r"|\^\\top\s*\\mathbf\s*\{?M\}?\s*(?:\\Delta|\\mathbf\s*\{?[vxdX]\}?)"
        rf"|\\mathbf\s*\{{?M\}}?\s*\\succeq|\\mathbf\s*\{{?M\}}?[^.]{{0,60}}(?:{_CURVATURE_WORDS})"
        rf"|(?:{_CURVATURE_WORDS})[^.]{{0,60}}\$\\mathbf\s*\{{?M\}}?\$"),
    # C in a Kronecker product or as the count of classes
    "C as a Kronecker curvature or a count (C is MEMIT's covariance)": re.compile(
        r"\$[^$]*\\mathbf\s*\{?C\}?(?![_\w])[^$]*\\otimes[^$]*\$"
        r"|\$[^$]*\\otimes[^$]*\\mathbf\s*\{?C\}?(?![_\w])[^$]*\$|\$C\$"),
    # T as a count of examples or tokens
    "T as examples or tokens (T is the number of edits; tokens are N)": re.compile(
        r"\\frac\{?\d\}?\{?T\}?\s*\\sum_\{?(?:t|n,r)\b|\$T\$ (?:examples|tokens|valid|positions)"
        r"|\$1/T\$"),
    "off-page names (v_j for the eigenvectors of A, Q for the gradient)": re.compile(
        r"\\mathbf\s*\{?v\}?_\{?j\b|(?<!paper writes \$)\\mathbf\s*\{?Q\}?(?![\w}])"),
}


def violations(text: str, rules: dict[str, re.Pattern[str]] = RULES) -> list[str]:
    """``'rule: ...context...'`` for every match of a rule in ``text``."""
    found = []
    for name, rule in rules.items():
        for m in rule.finditer(text):
            found.append(f"{name}: ...{text[max(0, m.start() - 50):m.end() + 30]}...".replace("\n", " "))
    return found


def notebook_texts(path: Path):
    """(cell index, text) for each markdown cell and for each code cell that holds LaTeX."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" or "\\" in source:
            yield i, source


def page_text(path: Path) -> str:
    """A book page; on the notation page, without the lines that state a rule or the paper's symbols."""
    text = path.read_text(encoding="utf-8")
    if path.name != "notation.md":
        return text
    kept, in_renames = [], False
    for line in text.splitlines():
        if line.startswith("## "):
            in_renames = "renames" in line  # the table of the paper's own symbols
        if not in_renames and "never" not in line:  # "A (x) S, never S (x) A" states the rule
            kept.append(line)
    return "\n".join(kept)


def docstrings() -> list[tuple[str, str]]:
    """(module, docstring) for every module, class and function docstring of the package."""
    out = []
    for path in sorted((ROOT / "crispedit_lite").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    out.append((str(path.relative_to(ROOT)), doc))
    return out


# --- each rule on a text that breaks it and a text that keeps it ----------------------------------

BREAKS = {
    "S⊗A (the book writes A⊗S)": [r"$\mathbf G_{\mathbf W}\approx\mathbf S\otimes\mathbf A$",
                                  r"$\bar{\mathbf S}\otimes\bar{\mathbf A}$", "the matrix S ⊗ A",
                                  r"$\mathbf S_c\otimes\mathbf A_c$"],
    "M as a curvature (M is only the mask)": [
        r"Let $\mathbf M=\mathbf U\Sigma\mathbf U^\top$ be the curvature",
        r"$\Delta^\top\mathbf M\Delta\le\sigma_{k+1}$", r"$\mathbf M\succeq 0$",
        r"the Hessian $\mathbf M$ of the loss"],
    "C as a Kronecker curvature or a count (C is MEMIT's covariance)": [
        r"$\mathbf C=\mathbf S\otimes\mathbf A$",
        r"$\mathbf C=(\mathbf U_{\rm out}\otimes\mathbf U_{\rm in})\boldsymbol\Lambda(\cdot)^\top$",
        r"| type-2 | exact | $C$ |"],
    "T as examples or tokens (T is the number of edits; tokens are N)": [
        r"$\mathcal L=\frac1T\sum_{t=1}^T\ell_t$", r"over the $T$ valid (unmasked) tokens",
        r"scale every row by $1/T$", r"$\frac1T\sum_{n,r}\ell_{n,r}$"],
    "off-page names (v_j for the eigenvectors of A, Q for the gradient)": [
        r"$\mathbf A\mathbf v_j=\lambda^{\rm in}_j\mathbf v_j$", r"the eigenbasis $\mathbf Q$"],
}
KEEPS = [
    r"$\mathbf G_{\mathbf W}\approx\mathbf A\otimes\mathbf S$, in code `torch.kron(S, A)`",
    r"$\bar{\mathbf A}\otimes\bar{\mathbf S}$ and $\mathbf A\otimes\mathbf I$",
    r"$\mathbf U_{\rm out}((\mathbf U_{\rm out}^\top\mathbf G\mathbf U_{\rm in})\odot\mathbf M)"
    r"\mathbf U_{\rm in}^\top$",
    r"$M_{ij}=\mathbb 1[\lambda^{\rm out}_i\lambda^{\rm in}_j<\lambda_\gamma]$, the mask $\mathbf M$",
    r"Let $\boldsymbol\Omega=\mathbf U\boldsymbol\Sigma\mathbf U^\top$ be the curvature",
    r"$\mathbf C=\mathbb E[\mathbf k\mathbf k^\top]=\mathbf K_0\mathbf K_0^\top/N_0$, MEMIT's covariance",
    r"the eigenvectors of $\mathbf C$ (or $\mathbf A$); "
    r"the penalty $(\mathbf K_0\mathbf K_0^\top\otimes\mathbf I)$",
    r"$\mathcal L_{\rm edit}=\frac1T\sum_{i=1}^T\ell_i$ over the $T$ edits",
    r"$\mathcal L=\frac1N\sum_{t=1}^N\ell_t$ over $N$ tokens",
    r"$\mathbf u^{\rm in}_j\otimes\mathbf u^{\rm out}_i$, the gradient $\mathbf G$, "
    r"pseudo-values $\mathbf v_t$",
    r"a weight gradient $\mathbf G$ (the paper writes $\mathbf Q$)",
]


@pytest.mark.parametrize("rule,text", [(r, t) for r, texts in BREAKS.items() for t in texts])
def test_each_rule_flags_what_breaks_it(rule, text):
    assert violations(text, {rule: RULES[rule]}), f"{rule} missed {text!r}"


@pytest.mark.parametrize("text", KEEPS)
def test_the_notation_pages_forms_pass(text):
    assert not violations(text), violations(text)


# --- the book -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_chapters_use_the_notation_page(path):
    found = [f"cell {i}: {v}" for i, text in notebook_texts(path) for v in violations(text)]
    assert not found, f"{path.name} (see book/notation.md):\n" + "\n".join(found)


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_pages_use_the_notation_page(path):
    found = violations(page_text(path))
    assert not found, f"{path.name} (see book/notation.md):\n" + "\n".join(found)


def test_docstrings_write_a_kron_s():
    rule = {k: v for k, v in RULES.items() if k.startswith("S⊗A")}
    found = [f"{where}: {v}" for where, doc in docstrings() for v in violations(doc, rule)]
    assert not found, "\n".join(found)
