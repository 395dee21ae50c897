"""Packaging stays consistent: pyproject.toml, environment.yml, constraints.txt, README, Makefile, CI."""

from __future__ import annotations

import os
import re
import shlex

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pyproject_requirements() -> dict[str, Requirement]:
    """All requirements of the package and its extras, by canonical name (must agree across extras)."""
    project = _pyproject()["project"]
    groups = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    out: dict[str, Requirement] = {}
    for group, reqs in groups.items():
        for line in reqs:
            req = Requirement(line)
            name = canonicalize_name(req.name)
            if name == canonicalize_name(project["name"]):
                continue  # self-references such as crispedit-lite[llm]
            if name in out:
                assert out[name].specifier == req.specifier, (
                    f"{req.name} has different specifiers in two groups of pyproject.toml "
                    f"({out[name].specifier} vs {req.specifier}, group {group})"
                )
            out[name] = req
    return out


def _environment() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip dependencies) of environment.yml."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep.get("pip", []))
        else:
            conda.append(str(dep))
    return conda, pip


def _constraints() -> dict[str, Requirement]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req
    return out


def _environment_requirements() -> dict[str, Requirement]:
    _, pip = _environment()
    out = {}
    for line in pip:
        if line.strip().startswith("-"):
            continue  # -e . and pip options
        req = Requirement(line)
        out[canonicalize_name(req.name)] = req
    return out


def test_environment_yml_mirrors_pyproject():
    py = _pyproject_requirements()
    env = _environment_requirements()
    pins = _constraints()
    missing = sorted(set(py) - set(env))
    assert not missing, f"in pyproject.toml but not in environment.yml: {missing}"
    extra = sorted(set(env) - set(py))
    assert not extra, f"in environment.yml but not in pyproject.toml: {extra}"
    for name, req in py.items():
        got = env[name].specifier
        if got == req.specifier:
            continue
        # a package pinned by constraints.txt may carry that pin instead (torch: the tested wheel)
        pin = pins.get(name)
        assert pin is not None and got == pin.specifier, (
            f"{req.name}: environment.yml has '{got}', pyproject.toml has '{req.specifier}'"
            + (f", constraints.txt has '{pin.specifier}'" if pin else "")
        )
        version = next(iter(pin.specifier)).version
        assert req.specifier.contains(version), f"the {req.name} pin {pin} violates pyproject's {req}"


def test_environment_yml_installs_the_package_and_python():
    conda, pip = _environment()
    assert "-e ." in [p.strip() for p in pip], "environment.yml installs the package itself (-e .)"
    requires = _pyproject()["project"]["requires-python"]
    assert f"python{requires}" in [c.replace(" ", "") for c in conda], (
        f"environment.yml's python must match requires-python ({requires})"
    )


def test_constraints_pin_torch_consistently():
    pins = _constraints()
    assert "torch" in pins, "constraints.txt pins torch"
    spec = list(pins["torch"].specifier)
    assert len(spec) == 1 and spec[0].operator == "==", f"torch must be pinned with ==, got {pins['torch']}"
    pinned = f"torch=={spec[0].version}"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^TORCH_SPEC \?= {re.escape(pinned)}\s*$", makefile, re.M), (
        f"the Makefile's TORCH_SPEC must be {pinned}"
    )
    assert _environment_requirements()["torch"].specifier == pins["torch"].specifier


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.S)
    commands = [line.split("#", 1)[0].strip() for b in blocks for line in b.splitlines()]
    assert "make book" in commands, "README.md shows `make book` in a code block"
    assert "make test" in commands, "README.md shows `make test` in a code block"


def test_makefile_targets_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("book", "test", "install"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile target `{target}` missing"


def test_ci_runs_exactly_make_test():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    lines = [ln.strip() for ln in script.read_text(encoding="utf-8").splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    assert commands[-1] == "make test", f".ci/run must end with `make test`, ends with {commands[-1]!r}"
    for ln in commands[:-1]:
        words = shlex.split(ln)
        assert words[0] in ("set", "cd", "export"), f".ci/run does more than `make test`: {ln!r}"
        assert "make" not in words and "pytest" not in " ".join(words), f".ci/run: {ln!r}"


def test_every_public_object_names_the_chapter_or_page_that_derives_it():
    """Every function and class in a module's ``__all__`` says where the book derives it."""
    import importlib
    import inspect
    import pkgutil
    import re

    import crispedit_lite

    missing = []
    for info in pkgutil.walk_packages(crispedit_lite.__path__, "crispedit_lite."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for attr in getattr(mod, "__all__", []):
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != info.name:
                continue
            if not re.search(r"notebook ``\d\d_|book page ``", inspect.getdoc(obj) or ""):
                missing.append(f"{info.name}.{attr}")
    assert not missing, f"public objects that name no chapter or book page: {missing}"
