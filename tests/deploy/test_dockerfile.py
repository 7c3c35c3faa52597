"""What can be checked of the Dockerfile without building it (no Docker engine runs here; the
image is built and run by the kind workflow only): a pinned slim Python base, a numeric non-root
user, the environment a read-only root filesystem needs, the extras pyproject declares, the
``vallum controller`` entrypoint, and a .dockerignore that keeps everything else out."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile line, continuations joined, comments out."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def base_image() -> str:
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1]
            for word, rest in instructions() if word == "ARG" and "=" in rest}
    return args["PYTHON_IMAGE"]


def final_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in stages()[-1]:
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


def test_two_stages_on_the_same_pinned_slim_python_311() -> None:
    image = base_image()
    name, _, tag = image.partition(":")
    assert name in ("python", "docker.io/library/python")  # the official image
    assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag), tag  # a patch release, not "latest"
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for word, rest in stages()[-1] if word == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, users[-1]
    assert not gid or (gid.isdigit() and int(gid) > 0), users[-1]
    # the same UID as the Deployment's runAsUser
    deployment = (ROOT / "manifests" / "deployment.yaml").read_text(encoding="utf-8")
    assert f"runAsUser: {uid}" in deployment


def test_environment_for_a_read_only_root_filesystem() -> None:
    env = final_env()
    assert env.get("PYTHONSAFEPATH") == "1"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME") == env.get("TMPDIR") == "/tmp"  # the emptyDir of the Deployment
    deployment = (ROOT / "manifests" / "deployment.yaml").read_text(encoding="utf-8")
    assert "readOnlyRootFilesystem: true" in deployment
    assert "mountPath: /tmp" in deployment


def test_entrypoint_is_vallum_controller() -> None:
    entry = [rest for word, rest in stages()[-1] if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["vallum", "controller"]


def test_the_extras_installed_are_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = set(project["optional-dependencies"])
    build = " ".join(rest for word, rest in stages()[0] if word == "RUN")
    installed = set(re.findall(r'\.\[([\w,]+)\]', build)[0].split(","))
    assert {"speed", "operator"} <= installed <= declared
    for extra in installed:  # the dependency layer reads the same extras from pyproject
        assert f'"{extra}"' in build


def test_dependencies_get_a_layer_before_the_sources() -> None:
    build = stages()[0]
    copies = [rest.split() for word, rest in build if word == "COPY"]
    first_source = next(i for i, (word, rest) in enumerate(build)
                        if word == "COPY" and rest.split()[0] in ("proxy", "operator"))
    pyproject = next(i for i, (word, rest) in enumerate(build)
                     if word == "COPY" and rest.split()[0] == "pyproject.toml")
    install = next(i for i, (word, rest) in enumerate(build)
                   if word == "RUN" and "requirements.txt" in rest)
    assert pyproject < install < first_source, copies


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    rules = [line.strip() for line in
             (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                keep = negate
        return keep

    copied = [rest.split()[0] for stage in stages() for word, rest in stage
              if word == "COPY" and not rest.startswith("--from")]
    for source in copied:
        assert included(source), f"COPY {source} but .dockerignore leaves it out"
    for left_out in (".venv", "tests", "e2e", "bench", ".git", "docs"):
        assert not included(left_out), f"{left_out} would be sent to the build"
