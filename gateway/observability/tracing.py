"""Optional OpenTelemetry spans around upstream calls.

Switched on by the standard OpenTelemetry environment (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SERVICE_NAME` names the service) when the `otel` extra is
installed (`pip install 'llm-gateway[otel]'`). Otherwise nothing is imported and the request path
pays one `is None` check per upstream attempt.

One span per upstream attempt (`upstream.chat`, kind CLIENT) with the backend, the public and upstream
model, the attempt number and, on failure, the reason. A stream's span ends when its first event is in
hand (the failover boundary), a whole answer's when it has been read.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.observability.logs import get_logger

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = get_logger("gateway.tracing")
T = TypeVar("T")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Tracing:
    """The configured tracer, or nothing."""

    def __init__(self, tracer: Tracer, shutdown: Callable[[], None]) -> None:
        self._tracer = tracer
        self._shutdown = shutdown

    async def attempt(
        self, call: Callable[[], Awaitable[T]], *, backend: str, model: str, upstream_model: str, attempt: int
    ) -> T:
        from opentelemetry.trace import SpanKind, StatusCode

        attributes: dict[str, Any] = {
            "gateway.backend": backend,
            "gateway.model": model,
            "gen_ai.request.model": upstream_model,
            "gateway.attempt": attempt,
        }
        with self._tracer.start_as_current_span(
            "upstream.chat", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            outcome = await call()
            failure = getattr(outcome, "summary", None)  # a routing Failure; an Answer has no summary
            if failure is not None:
                span.set_attribute("gateway.failure", str(getattr(outcome, "kind", "failed")))
                span.set_status(StatusCode.ERROR, str(failure))
            return outcome

    def shutdown(self) -> None:
        self._shutdown()


def configure_tracing() -> Tracing | None:
    """A `Tracing` when an exporter is configured and the SDK is installed; None otherwise."""
    if not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "tracing_unavailable",
            message="an OTLP endpoint is configured but the otel extra is not installed: no spans",
        )
        return None
    service = os.environ.get("OTEL_SERVICE_NAME") or "llm-gateway"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing_enabled", service=service)
    return Tracing(provider.get_tracer("llm-gateway"), provider.shutdown)


__all__ = ("Tracing", "configure_tracing")
