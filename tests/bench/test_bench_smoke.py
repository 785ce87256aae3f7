"""A tiny run of the benchmark harness: every figure is produced and the gateway served without errors.

Speed is not asserted here (that is what `make bench` reports); this only keeps the harness working.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.run import main


def test_tiny_benchmark_produces_every_figure(tmp_path: Path, capsys: object) -> None:
    output = tmp_path / "results.json"
    assert main(["--tiny", "--json", str(output)]) == 0
    report = json.loads(output.read_text())
    for label in ("c1", "c32"):
        assert report["gateway"][label]["requests"] > 0
        assert report["gateway"][label]["errors"] == 0
        assert report["direct"][label]["requests"] > 0
        assert report["nginx"][label]["requests"] > 0
        assert report["nginx"][label]["errors"] == 0
    assert report["streams"]["relay_gateway"]["events_per_s"] > 0
    assert report["streams"]["relay_nginx"]["events_per_s"] > 0
    assert report["memory"]["streams_open"] == report["memory"]["streams_requested"]
    assert report["memory_nginx"]["streams_open"] == report["memory_nginx"]["streams_requested"]
    assert report["cpu_us_per_request"] > 0
