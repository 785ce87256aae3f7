"""`make audit`: known vulnerabilities in the locked dependencies (requirements.lock).

pip-audit needs a per-version vulnerability service: PyPI's `/pypi/<name>/<version>/json` or OSV.
Where neither answers (package mirrors and proxies often serve only the per-project JSON), pip-audit
would report every package as "could not be audited" and, without `--strict`, pass. Instead this
falls back to what PyPI's per-project JSON does answer: the known vulnerabilities of each package's
newest release. That is an exact audit for every package locked at its newest release and a
warning list for the others (a vulnerability still open in the newest release counts against any
older pin too). It says how many packages each method covered; it never passes silently.

Usage: audit.py LOCKFILE PIP_AUDIT_BIN SERVICE OSV_URL
Exit status: 0 no known vulnerability found (see the printed coverage), 1 vulnerabilities found,
2 nothing could be audited and AUDIT_REQUIRED=1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PYPI = "https://pypi.org/pypi"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
TIMEOUT_S = 15


def read_pins(path: str) -> list[tuple[str, str]]:
    pins = []
    with open(path, encoding="utf-8") as lock:
        for line in lock:
            match = PIN.match(line.strip())
            if match:
                pins.append((match.group(1), match.group(2)))
    return pins


def get_json(url: str, data: bytes | None = None) -> Any:
    # Only the fixed https URLs above (and OSV_URL from the Makefile) are ever opened.
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
        return json.load(response)


def service_answers(service: str, osv_url: str) -> str | None:
    """None when pip-audit's service answers, else why not."""
    try:
        if service == "osv":
            query = {"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "24.0"}
            get_json(osv_url, json.dumps(query).encode())
        else:
            get_json(f"{PYPI}/pip/24.0/json")
    except (OSError, ValueError) as exc:
        return f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
    return None


def newest_release(name: str) -> tuple[str, list[dict[str, Any]]] | str:
    """(newest version, its known vulnerabilities), or why PyPI did not say."""
    try:
        project = get_json(f"{PYPI}/{name}/json")
        return project["info"]["version"], list(project.get("vulnerabilities") or [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else repr(exc)


def normalise(version: str) -> str:
    return version.lower().lstrip("v")


def fallback(pins: list[tuple[str, str]]) -> int:
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(newest_release, [name for name, _ in pins]))
    exact: list[str] = []
    older: list[str] = []
    unknown: list[str] = []
    findings: list[str] = []
    for (name, version), answer in zip(pins, answers, strict=True):
        if isinstance(answer, str):
            unknown.append(f"{name}=={version} ({answer})")
            continue
        newest, vulnerabilities = answer
        at_newest = normalise(newest) == normalise(version)
        if at_newest:
            exact.append(f"{name}=={version}")
        else:
            older.append(f"{name}=={version} (newest {newest})")
        for vuln in vulnerabilities:
            if vuln.get("withdrawn"):
                continue
            ids = ", ".join([vuln.get("id", "?"), *vuln.get("aliases", [])])
            fixed = ", ".join(vuln.get("fixed_in") or []) or "no fix released"
            findings.append(f"{name}=={version}: {ids} (open in newest {newest}; fixed in: {fixed})")
    total = len(pins)
    print(f"audit (PyPI per-project fallback): {total} locked packages")
    print(f"  {len(exact)} at their newest release: audited exactly")
    if older:
        print(f"  {len(older)} pinned below their newest release: checked only for vulnerabilities")
        print("    still open in the newest release; `make lock` moves them up:")
        for item in older:
            print(f"      {item}")
    if unknown:
        print(f"  {len(unknown)} PyPI did not describe (NOT audited):")
        for item in unknown:
            print(f"      {item}")
    if findings:
        print(f"known vulnerabilities: {len(findings)}", file=sys.stderr)
        for item in findings:
            print(f"  {item}", file=sys.stderr)
        return 1
    if len(unknown) == total:
        print("*** PyPI did not answer: the locked dependencies were NOT audited ***", file=sys.stderr)
        return 2 if os.environ.get("AUDIT_REQUIRED") == "1" else 0
    print("known vulnerabilities: none")
    return 0


def main(lockfile: str, pip_audit: str, service: str, osv_url: str) -> int:
    why = service_answers(service, osv_url)
    if why is None:
        command = [pip_audit, "--strict", "--no-deps", "--disable-pip", "--progress-spinner", "off"]
        command += ["--vulnerability-service", service, "-r", lockfile]
        if service == "osv":
            command += ["--osv-url", osv_url]
        return subprocess.call(command)  # noqa: S603 (our own venv's pip-audit)
    print(f"audit: pip-audit's {service} service does not answer here ({why}); using PyPI's per-project JSON")
    return fallback(read_pins(lockfile))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
