"""The request line's own renderer (`gateway.observability.logs.log_info`) writes what structlog's
pipeline would, byte for byte but for the timestamp's value."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from gateway.observability.logs import _timestamp

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import gateway.observability.logs as logs
from gateway.context import RequestInfo, bind_request
from gateway.observability.logs import configure_logging, flush_logs, get_logger, log_info
from adapters.secret import Secret

configure_logging("info", "json")
log = get_logger("gateway.request")
info = RequestInfo("req_0123456789ab", 0.0)
info.key_id, info.model = "team-a", "llama"
bind_request(info)

def fields():
    return {"request_id": info.request_id, "key": info.key_id, "status": 200, "ratio": 0.25,
            "note": "caf\\u00e9 \\"quoted\\"", "metadata": {"a": [1, None]}, "user": Secret("s3cret"),
            "missing": None}

log_info(log, "request", fields())              # rendered by log_info
logs._renderer = object()                       # as if another pipeline were configured
log_info(log, "request", fields())              # rendered by structlog
flush_logs()
"""


def test_the_request_line_is_the_line_structlog_renders() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)], capture_output=True, cwd=ROOT, timeout=60, check=True
    )
    ours, structlogs = done.stdout.splitlines()
    stamp = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')
    assert stamp.search(ours)
    assert stamp.search(structlogs)
    assert stamp.sub(b"", ours) == stamp.sub(b"", structlogs)
    assert b"s3cret" not in ours


def test_the_timestamp_has_isoformats_shape() -> None:
    before = datetime.datetime.now(tz=datetime.UTC).replace(microsecond=0)
    text = _timestamp()
    parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert text.endswith("Z")
    assert text == parsed.isoformat().replace("+00:00", "Z")
    assert before <= parsed <= datetime.datetime.now(tz=datetime.UTC)
