"""Read deploy/Dockerfile the way the builder does, and .dockerignore the way the build context is cut.

Enough of the Dockerfile grammar for the tests: line continuations, comments, `ARG` defaults used in
`FROM`, stages, `ENV` in both forms, exec-form (JSON) `ENTRYPOINT` / `CMD` / `HEALTHCHECK CMD`, and the
image config the final stage produces (Docker clears an inherited `CMD` when a stage sets `ENTRYPOINT`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str
    """Upper case, e.g. `RUN`."""
    arguments: str
    """Everything after the keyword, continuation lines joined with a space."""
    line: int


@dataclass
class Stage:
    base: str
    """The `FROM` image with build arguments substituted."""
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class ImageConfig:
    """What `docker inspect` would show for the final stage (the parts this Dockerfile sets itself)."""

    env: dict[str, str]
    user: str | None
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    healthcheck_options: dict[str, str]
    exposed_ports: list[str]

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd


def instructions(text: str) -> list[Instruction]:
    found: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by the builder
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        keyword, _, arguments = " ".join(p for p in pending if p).partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    if pending:
        raise ValueError("the Dockerfile ends inside a continued instruction")
    return found


def _substitute(value: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, value)


def stages(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(_substitute(words[0], global_args), name))
        elif not result:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may precede the first FROM")
            key, _, default = instruction.arguments.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            result[-1].instructions.append(instruction)
    return result


def parse_env(arguments: str) -> dict[str, str]:
    words = shlex.split(arguments)
    if words and "=" not in words[0]:
        return {words[0]: arguments.split(None, 1)[1].strip() if len(words) > 1 else ""}
    return dict(word.split("=", 1) for word in words)


def image_config(stage: Stage) -> ImageConfig:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        env.update({k: _substitute(v, env) for k, v in parse_env(instruction.arguments).items()})
    user = stage.last("USER")
    entrypoint = stage.last("ENTRYPOINT")
    cmd = stage.last("CMD")
    healthcheck = stage.last("HEALTHCHECK")
    health_argv: list[str] = []
    health_options: dict[str, str] = {}
    if healthcheck is not None:
        words = healthcheck.arguments
        while words.startswith("--"):
            option, _, words = words.partition(" ")
            key, _, value = option[2:].partition("=")
            health_options[key] = value
            words = words.strip()
        keyword, _, command = words.partition(" ")
        if keyword.upper() != "CMD":
            raise ValueError(f"HEALTHCHECK {keyword}: expected CMD")
        health_argv = _exec_form(command, "HEALTHCHECK CMD")
    ports = [p for i in stage.all("EXPOSE") for p in i.arguments.split()]
    return ImageConfig(
        env=env,
        user=user.arguments if user else None,
        entrypoint=_exec_form(entrypoint.arguments, "ENTRYPOINT") if entrypoint else [],
        # Setting ENTRYPOINT in a stage drops the CMD inherited from the base image.
        cmd=_exec_form(cmd.arguments, "CMD") if cmd else [],
        healthcheck=health_argv,
        healthcheck_options=health_options,
        exposed_ports=ports,
    )


def _exec_form(arguments: str, what: str) -> list[str]:
    try:
        argv = json.loads(arguments)
    except json.JSONDecodeError:
        raise ValueError(f"{what} is not in exec (JSON) form: {arguments}") from None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"{what} must be a JSON list of strings")
    return argv


class DockerIgnore:
    """Docker's .dockerignore rules: `*` and `?` stay within one path segment, `**` spans any number,
    a `!` line re-includes, the last matching line wins, and a pattern matching a directory covers
    everything below it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line[1:].strip() if include else line
            self.rules.append((include, re.compile(_glob_to_regex(pattern.strip("/")))))

    def excluded(self, path: str) -> bool:
        parts = Path(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for include, pattern in self.rules:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                excluded = not include
        return excluded


def _glob_to_regex(pattern: str) -> str:
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        i += 1
    return out


__all__ = ("DockerIgnore", "ImageConfig", "Instruction", "Stage", "image_config", "instructions", "stages")
