"""Fail `make audit` with a clear message when pip-audit's vulnerability service does not answer.

pip-audit itself would report "Dependency not found on PyPI and could not be audited" for every
package (and pass without `--strict`): this says what is wrong instead. Usage: audit_probe.py URL
(a PyPI per-version JSON URL, or an OSV `/v1/query` URL, which is probed with a POST).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def main(url: str) -> int:
    data = None
    if url.endswith("/query"):
        data = json.dumps({"package": {"name": "pip", "ecosystem": "PyPI"}, "version": "24.0"}).encode()
    try:
        with urllib.request.urlopen(url, data=data, timeout=15) as response:  # noqa: S310 (our own URL)
            json.load(response)
    except (OSError, ValueError) as exc:
        reason = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        print(
            f"make audit: the vulnerability service does not answer from this machine ({url}: {reason}).\n"
            "Nothing was audited. Choose another with PIP_AUDIT_SERVICE=pypi|osv (OSV_URL=... for an OSV\n"
            "mirror), or skip the audit explicitly with PIP_AUDIT=off.",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
