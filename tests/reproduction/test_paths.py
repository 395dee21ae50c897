"""crispedit_lite.reproduction.paths: the repository root and paths relative to it."""

from __future__ import annotations

from crispedit_lite.reproduction import paths
from tests.helpers import ROOT


def test_paths_resolve_against_the_repository_root(tmp_path):
    assert paths.repo_root(ROOT / "notebooks") == ROOT
    assert paths.resolve_path("results/a", ROOT) == ROOT / "results" / "a"
    assert paths.resolve_path(tmp_path / "x") == tmp_path / "x"
    assert paths.repo_root(tmp_path) is None
