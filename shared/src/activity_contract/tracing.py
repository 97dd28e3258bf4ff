"""Traces across the queue with OpenTelemetry: off unless OTEL_TRACES_EXPORTER=otlp.

One trace follows an event: ingest's HTTP request span, the publish span of the message that
carried it (a child of the first request it holds, linked to every other one: group commit
puts several requests in one message), the processor's consume span (a child of the publish,
found through the W3C `traceparent` AMQP header) and the bulk insert that stored it (a child
of the first message in its group, linked to the others). Spans go to the OTLP/HTTP
endpoint of the standard OTEL_EXPORTER_OTLP_* variables, in batches, off the request path.

Off, every hook is one `if tracer is None` and nothing else runs.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Tracer

# A span keeps at most this many links (OpenTelemetry's default limit).
MAX_LINKS = 128


@dataclass(frozen=True)
class Tracing:
    """A service's tracer and the provider that exports its spans."""

    tracer: Tracer
    provider: TracerProvider

    def shutdown(self) -> None:
        """Export what is buffered, then stop."""
        self.provider.shutdown()


def start_tracing(exporter: str, service_name: str) -> Tracing | None:
    """The service's tracing, exporting over OTLP/HTTP; None when `exporter` is `none`."""
    if exporter == "none":
        return None
    # Imported only when on: the exporter brings an HTTP client and protobuf.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider.get_tracer("event-tracker"), provider)


def current_span_context() -> SpanContext | None:
    """The context of the span this code runs in, if one is recording."""
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def _child_of(parents: Sequence[SpanContext]) -> tuple[Any, list[Link]]:
    """A parent context (the first) and links to the others, at most MAX_LINKS."""
    if not parents:
        return None, []
    parent = trace.set_span_in_context(NonRecordingSpan(parents[0]))
    return parent, [Link(context) for context in parents[1:MAX_LINKS]]


@contextmanager
def span_of_many(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    parents: Sequence[SpanContext],
    attributes: Mapping[str, Any],
) -> Iterator[Span]:
    """A span serving several callers: the child of the first, linked to the others."""
    parent, links = _child_of(parents)
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, links=links, attributes=attributes
    ) as span:
        yield span


def trace_headers() -> dict[str, Any]:
    """The current span's W3C trace context, as message headers."""
    headers: dict[str, Any] = {}
    propagate.inject(headers)
    return headers


@contextmanager
def span_from_headers(
    tracer: Tracer,
    name: str,
    kind: SpanKind,
    headers: Mapping[str, Any],
    attributes: Mapping[str, Any],
) -> Iterator[Span]:
    """A span continuing the trace whose context `headers` carry (a new trace if none)."""
    carrier = {key: value for key, value in headers.items() if isinstance(value, str)}
    with tracer.start_as_current_span(
        name, context=propagate.extract(carrier), kind=kind, attributes=attributes
    ) as span:
        yield span
