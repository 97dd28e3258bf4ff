"""One trace across the queue: real ingest and processor processes exporting over OTLP/HTTP.

The test is the collector: an HTTP server taking OTLP/HTTP protobuf exports, as
OTEL_EXPORTER_OTLP_ENDPOINT points both services at it. A client sends W3C `traceparent`,
so the test knows each request's trace.
"""

import asyncio
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from activity_testing.events import event_payload
from activity_testing.processes import ServiceProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@dataclass(frozen=True)
class ExportedSpan:
    """What the test reads of one exported span."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    links: tuple[str, ...]  # the trace ids of its links
    attributes: dict[str, Any]


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        super().__init__(("127.0.0.1", free_port()), _Receiver)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receiver(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest.FromString(
            self.rfile.read(int(self.headers["Content-Length"]))
        )
        for resource_spans in request.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append(
                        ExportedSpan(
                            service,
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            tuple(link.trace_id.hex() for link in span.links),
                            {a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def traced_env(stack_env: dict[str, str], collector: Collector) -> dict[str, str]:
    return {
        **stack_env,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def traceparent() -> tuple[str, str]:
    """A client's trace id and the `traceparent` header that starts it."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, f"00-{trace_id}-{span_id}-01"


async def test_one_request_is_one_trace_through_both_services(
    traced_env: dict[str, str], collector: Collector, wait_until: Any, tmp_path: Any
) -> None:
    ingest = ServiceProcess("ingest", traced_env, int(traced_env["INGEST_PORT"]))
    processor = ServiceProcess(
        "processor", traced_env, int(traced_env["PROCESSOR_PORT"]), stderr=tmp_path / "p.log"
    )
    trace_id, header = traceparent()
    with ingest, processor:
        async with httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"{ingest.base_url}/api/v1/activities",
                json=event_payload(),
                headers={"traceparent": header},
            )
        assert answer.status_code == 202, answer.text

        def whole() -> bool:
            names = {s.name for s in collector.spans if s.trace_id == trace_id}
            return {"user_activities process", "bulk insert"} <= names

        assert await wait_until(whole, within=30), processor.tail(60)
    spans = {s.name: s for s in collector.spans if s.trace_id == trace_id}
    request = spans["POST /api/v1/activities"]
    publish = spans["user_activities publish"]
    process = spans["user_activities process"]
    insert = spans["bulk insert"]
    assert request.service == publish.service == "event-tracker-ingest"
    assert process.service == insert.service == "event-tracker-processor"
    assert request.parent_id == header.split("-")[2]
    assert publish.parent_id == request.span_id
    assert process.parent_id == publish.span_id
    assert insert.parent_id == process.span_id
    assert request.attributes["http.response.status_code"] == 202
    assert process.attributes["messaging.rabbitmq.settlement"] == "ack"
    assert insert.attributes["event_tracker.stored"] == 1


async def test_requests_sharing_one_message_are_each_linked_to_its_publish(
    traced_env: dict[str, str], collector: Collector, wait_until: Any
) -> None:
    ingest = ServiceProcess("ingest", traced_env, int(traced_env["INGEST_PORT"]))
    traces = [traceparent() for _ in range(40)]
    with ingest:
        async with httpx.AsyncClient(timeout=30) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"{ingest.base_url}/api/v1/activities",
                        json=event_payload(),
                        headers={"traceparent": header},
                    )
                    for _, header in traces
                )
            )
        assert {answer.status_code for answer in answers} == {202}
        wanted = {trace_id for trace_id, _ in traces}

        def each_linked() -> bool:
            publishes = [s for s in collector.spans if s.name == "user_activities publish"]
            reached = {s.trace_id for s in publishes} | {t for s in publishes for t in s.links}
            return wanted <= reached

        assert await wait_until(each_linked, within=30)
    publishes = [s for s in collector.spans if s.name == "user_activities publish"]
    grouped = [s for s in publishes if s.links]
    assert grouped, "no message carried several requests"
    for span in grouped:
        assert span.attributes["messaging.batch.message_count"] == 1 + len(span.links)
