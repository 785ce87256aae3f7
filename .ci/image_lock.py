"""`make image-lock`: deploy/requirements.hashes.txt, the container image's hash-pinned dependencies.

The image installs with `pip install --require-hashes`, so every package it needs must be listed with
the sha256 of each file pip may pick. This resolves the runtime dependencies of pyproject.toml (no
extras) at the versions requirements.lock pins, then downloads, for each, the wheel pip would choose
on the image's platforms (CPython 3.11, glibc Linux, amd64 and arm64) and records its hash. The
versions are requirements.lock's own, so `make audit` (which audits requirements.lock) covers the image.

Usage: image_lock.py PYTHON LOCKFILE OUTPUT
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GLIBC_MINORS = range(36, 4, -1)
"""python:3.11-slim-bookworm has glibc 2.36: every manylinux tag up to it is compatible."""
PLATFORMS = {
    arch: [f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS]
    + [f"manylinux{alias}_{arch}" for alias in ("2014", "2010", "1")]
    for arch in ("x86_64", "aarch64")
}
"""The image's platforms, amd64 and arm64. pip's hash-checking mode accepts any listed wheel of a pin,
so the one recorded per platform is enough even where the image's pip would rank another first."""


def pip(python: str, *args: str) -> str:
    command = [python, "-m", "pip", "--disable-pip-version-check", *args]
    # Only this script's own pip commands, with the interpreter the Makefile passes.
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603


def runtime_pins(python: str, lockfile: str) -> list[tuple[str, str]]:
    """The packages `pip install .` brings in, at requirements.lock's versions (the project left out)."""
    report = pip(
        python, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-", "-c", lockfile, "."
    )
    pins = []
    for item in json.loads(report)["install"]:
        metadata = item["metadata"]
        if item.get("download_info", {}).get("dir_info") is not None:
            continue  # the project itself: built from the build context, installed with --no-deps
        pins.append((metadata["name"], metadata["version"]))
    return sorted(pins, key=lambda pin: pin[0].lower())


def wheel_hashes(python: str, name: str, version: str) -> list[str]:
    hashes: set[str] = set()
    for tags in PLATFORMS.values():
        with tempfile.TemporaryDirectory() as directory:
            platform_args = [arg for tag in tags for arg in ("--platform", tag)]
            pip(
                python, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
                "--implementation", "cp", *platform_args, "--dest", directory, f"{name}=={version}",
            )  # fmt: skip
            for file in Path(directory).iterdir():
                hashes.add(hashlib.sha256(file.read_bytes()).hexdigest())
    return sorted(hashes)


def main() -> None:
    python, lockfile, output = sys.argv[1:4]
    lines = [
        "# The container image's dependencies (pyproject.toml's, no extras) at requirements.lock's versions,",
        "# with the sha256 of the wheel pip picks for CPython 3.11 on glibc Linux, amd64 and arm64.",
        "# Written by `make image-lock` (.ci/image_lock.py); installed with `pip install --require-hashes`.",
    ]
    for name, version in runtime_pins(python, lockfile):
        hashes = wheel_hashes(python, name, version)
        lines.append(f"{name}=={version} \\")
        for i, digest in enumerate(hashes):
            lines.append(f"    --hash=sha256:{digest}" + (" \\" if i < len(hashes) - 1 else ""))
    Path(output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
