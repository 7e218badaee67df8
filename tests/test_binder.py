"""binder/ pins the environment the tests run on (offline checks; scripts/check_binder.sh runs
repo2docker itself, which needs the network, so pytest never does)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
UPDATE = "update binder/requirements.txt"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    """kvlab's dependencies and its "lab" extra: what the notebooks import and run on."""
    project = pyproject()["project"]
    lab = project["optional-dependencies"]["lab"]
    return [Requirement(r) for r in project["dependencies"] + lab]


def pins() -> dict[str, str]:
    """binder/requirements.txt as {canonical name: pinned version}; fails on anything not ==."""
    found: dict[str, str] = {}
    for n, line in enumerate((BINDER / "requirements.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, (
            f"binder/requirements.txt line {n}: {line!r} is not pinned with a single =="
        )
        assert not req.marker and not req.url, f"line {n}: {line!r}: give a plain name==version"
        name = canonicalize_name(req.name)
        assert name not in found, f"line {n}: {req.name} is pinned twice"
        found[name] = spec[0].version
    return found


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """Every installed distribution ``roots`` need here (markers evaluated), with its version."""
    seen: dict[str, set[str]] = {}
    todo = [(r, {""}) for r in roots]
    while todo:
        req, extras_of_parent = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras_of_parent):
            continue
        name = canonicalize_name(req.name)
        wanted = {""} | set(req.extras)
        if wanted <= seen.get(name, set()):
            continue
        seen.setdefault(name, set()).update(wanted)
        dist = metadata.distribution(name)
        todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return {name: metadata.version(name) for name in seen}


def test_every_line_is_pinned_exactly():
    assert len(pins()) >= len(runtime_requirements())


def test_runtime_is_a_python_the_project_supports_and_the_tests_use():
    text = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(\d+)\.(\d+)", text)
    assert m, f"binder/runtime.txt should read like python-3.11, not {text!r}"
    version = Version(f"{m[1]}.{m[2]}")
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(version), f"pyproject requires-python {requires} excludes {version}"
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert str(version) == here, (
        f"binder/runtime.txt says {version} but the tests run on Python {here}: "
        f"update binder/runtime.txt (and the pins) or run the tests on {version}")


def test_pins_cover_kvlab_and_its_lab_extra_within_pyproject_ranges():
    pinned = pins()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} (pyproject: {req}) is not pinned: {UPDATE}"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"binder pins {req.name}=={pinned[name]}, outside pyproject's {req}: {UPDATE}")


def test_direct_pins_are_the_versions_the_tests_run_on():
    pinned = pins()
    wrong = []
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        try:
            here = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.skip(f"{req.name} is not installed here (install kvlab[lab] to run this)")
        if pinned.get(name) != here:
            wrong.append(f"{req.name}=={here} (pinned: {pinned.get(name)})")
    assert not wrong, f"{UPDATE}: the tests run on {', '.join(wrong)}"


def test_everything_the_notebooks_pull_in_is_pinned():
    try:
        needed = installed_closure(runtime_requirements())
    except metadata.PackageNotFoundError as e:
        pytest.skip(f"{e.name} is not installed here (install kvlab[lab] to run this)")
    pinned = pins()
    missing = sorted(f"{name}=={version}" for name, version in needed.items() if name not in pinned)
    assert not missing, f"{UPDATE}: these dependencies float on Binder: add {missing}"


def test_postbuild_installs_kvlab_itself():
    post = BINDER / "postBuild"
    assert post.stat().st_mode & 0o111, "binder/postBuild must be executable"
    lines = [line.strip() for line in post.read_text().splitlines()]
    assert lines[0].startswith("#!")
    assert "set -euo pipefail" in lines
    assert any(re.fullmatch(r"pip install (--no-cache-dir )?\.", line) for line in lines)
