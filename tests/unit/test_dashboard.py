"""The Grafana dashboard only queries metrics the gateway exposes, with labels they carry."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "gateway-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exposed() -> dict[str, set[str]]:
    """Metric family name -> label names, from what a fresh app would serve."""
    metrics = Metrics()
    families: dict[str, set[str]] = {
        family.name: set() for family in text_string_to_metric_families(metrics.render().decode())
    }
    for metric in (
        metrics.requests, metrics.duration, metrics.first_token, metrics.upstream, metrics.tokens,
        metrics.failovers, metrics.rate_limited, metrics.redis_errors, metrics.breaker, metrics.in_flight,
        metrics.open_streams,
    ):  # fmt: skip
        families.setdefault(metric._name, set()).update(metric._labelnames)
    return families


def test_every_queried_metric_and_label_exists() -> None:
    families = exposed()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 10
    for panel in panels:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in re.findall(r"\bgateway_[a-z_]+", expr):
                base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
                assert base in families, f"{panel['title']}: {name} is not exposed"
                for label in re.findall(
                    r"\b([a-z_]+)\s*(?:=~|=|!=)", expr.split(name, 1)[1].split("}", 1)[0]
                ):
                    assert label in families[base] | {"le"}, f"{panel['title']}: {base} has no label {label}"
            # Grouping labels must be carried by every metric the expression aggregates (`le` by the
            # buckets of a histogram only), not merely by some metric somewhere.
            names = re.findall(r"\bgateway_[a-z_]+", expr)
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (part.strip() for part in group.split(",")):
                    for name in names:
                        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
                        carried = families[base] | ({"le"} if name.endswith("_bucket") else set())
                        assert label in carried, f"{panel['title']}: {name} has no label {label} to group by"
