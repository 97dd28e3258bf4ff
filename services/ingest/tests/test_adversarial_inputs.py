"""What a hostile client can send: refused with a documented code, never stored altered,
never a 500 (issues of the adversarial probe)."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from activity_testing.events import event_payload
from activity_testing.processes import free_port
from activity_testing.waiting import wait_until
from ingest.app import create_app
from ingest.http.errors import install_error_handlers
from ingest.http.request_guards import JsonBodyGuard
from ingest.settings import IngestSettings

from .conftest import Published

SINGLE = "/api/v1/activities"
BATCH = "/api/v1/activities/batch"


def problems(response: httpx.Response) -> list[tuple[list[str | int], str]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    return [(detail["loc"], detail["message"]) for detail in body["details"]]


async def post_raw(client: httpx.AsyncClient, path: str, payload: str) -> httpx.Response:
    """POST `payload` exactly as written (not re-encoded by the client)."""
    return await client.post(
        path, content=payload.encode(), headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    "metadata",
    [
        '{"a": NaN}',
        '{"b": Infinity}',
        '{"c": -Infinity}',
        '{"d": 1e400}',
        '{"l": [' + ",".join(["NaN"] * 3300) + "]}",
        '{"s": "' + "x" * 16_368 + '", "n": NaN}',
        '{"a\\u0000b": 1}',
        '{"n": 1180591620717411303424}',
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "nan-list", "nan-near-16k", "nul", "int"],
)
async def test_what_json_or_the_database_cannot_hold_is_422_and_never_published(
    client: httpx.AsyncClient, published: Published, metadata: str
) -> None:
    single = await post_raw(
        client, SINGLE, f'{{"user_id": "m", "event_type": "page_view", "metadata": {metadata}}}'
    )
    [(loc, _)] = problems(single)
    assert loc == ["body", "metadata"]
    batch = await post_raw(
        client,
        BATCH,
        '{"events": [{"user_id": "ok", "event_type": "t"}, '
        f'{{"user_id": "m", "event_type": "t", "metadata": {metadata}}}]}}',
    )
    [(loc, _)] = problems(batch)
    assert loc == ["body", "events", 1, "metadata"]
    assert published.messages == []


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
async def test_calendar_edge_timestamps_are_422_not_500(
    client: httpx.AsyncClient, timestamp: str
) -> None:
    [(loc, message)] = problems(await client.post(SINGLE, json=event_payload(timestamp=timestamp)))
    assert loc == ["body", "timestamp"]
    assert "9999" in message
    batch = {"events": [event_payload(), event_payload(timestamp=timestamp)]}
    [(loc, _)] = problems(await client.post(BATCH, json=batch))
    assert loc == ["body", "events", 1, "timestamp"]


@pytest.mark.parametrize("user_id", ["a\u200bb", "\u202eevil", "a\u2028b", "a\u2029b"])
async def test_look_alike_user_ids_are_refused(client: httpx.AsyncClient, user_id: str) -> None:
    [(loc, _)] = problems(await client.post(SINGLE, json=event_payload(user_id=user_id)))
    assert loc == ["body", "user_id"]


async def test_an_encoded_body_is_415_and_undecodable_text_is_400(
    client: httpx.AsyncClient,
) -> None:
    gzipped = await client.post(
        SINGLE,
        content=b"\x1f\x8b\x08\x00",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert gzipped.status_code == 415
    assert gzipped.json()["error"] == "unsupported_media_type"
    latin1 = await client.post(
        SINGLE,
        content='{"user_id": "caf\xe9", "event_type": "t"}'.encode("latin-1"),
        headers={"Content-Type": "application/json"},
    )
    assert latin1.status_code == 400
    assert latin1.json()["error"] == "malformed_json"
    surrogate = await post_raw(client, SINGLE, '{"user_id": "a\\ud800", "event_type": "t"}')
    assert surrogate.status_code == 400


async def test_sent_at_is_applied_and_the_original_kept(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(
        SINGLE,
        json=event_payload(timestamp="2026-01-01T00:00:00Z", sent_at="2026-01-01T00:00:10Z"),
    )
    assert response.status_code == 202
    [message] = published.messages
    body = json.loads(message.body)
    assert body["original_timestamp"] == "2026-01-01T00:00:00Z"
    assert body["timestamp"] != body["original_timestamp"]  # moved to ~ received_at - 10 s


async def test_a_body_that_stops_arriving_is_408() -> None:
    """A client announcing a body it never sends holds nothing beyond the bound."""
    more = asyncio.Event()
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b'{"user_id":', "more_body": True}
        await more.wait()  # the rest never comes
        return {"type": "http.disconnect"}

    answered: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        answered.append(message)

    app = FastAPI()
    install_error_handlers(app, [])

    @app.post(SINGLE)
    async def reads_its_body(request: Request) -> None:
        await request.body()

    guard = JsonBodyGuard(app, {SINGLE: 1024}, timeout=0.2)
    scope = {
        "type": "http",
        "method": "POST",
        "path": SINGLE,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "query_string": b"",
    }
    await asyncio.wait_for(guard(scope, receive, send), 5)  # type: ignore[arg-type]
    assert answered[0]["status"] == 408
    assert (b"connection", b"close") in answered[0]["headers"]  # type: ignore[operator]
    body = answered[1]["body"]
    assert isinstance(body, bytes)
    assert json.loads(body)["error"] == "request_timeout"


@pytest.fixture
async def served_app_with_a_bug(
    settings: IngestSettings,
) -> AsyncIterator[tuple[FastAPI, int]]:
    """The real app, served by uvicorn, with one route whose handler raises."""
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    # uvicorn has no start-up event to wait on: its flag is polled.
    assert await wait_until(lambda: server.started, 10, interval=0.01), "uvicorn did not start"
    yield app, port
    server.should_exit = True
    await asyncio.wait_for(serving, 10)


async def test_an_internal_error_is_a_500_envelope_with_request_id_and_keeps_the_connection(
    served_app_with_a_bug: tuple[FastAPI, int], caplog: pytest.LogCaptureFixture
) -> None:
    _, port = served_app_with_a_bug
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Two pipelined requests: the answer to the second must not be lost to the first's 500.
    writer.write(
        b"GET /boom HTTP/1.1\r\nHost: x\r\nX-Request-ID: boom-1\r\n\r\n"
        b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Request-ID: after-1\r\n\r\n"
    )
    await writer.drain()
    with caplog.at_level(logging.ERROR):
        first = await asyncio.wait_for(_read_response(reader), 10)
        second = await asyncio.wait_for(_read_response(reader), 10)
    writer.close()
    status, headers, body = first
    assert status == 500
    assert headers["x-request-id"] == "boom-1"
    assert json.loads(body) == {
        "error": "internal_error",
        "message": "The server could not handle the request.",
        "details": [],
    }
    assert "a bug" not in body.decode()
    status, headers, _ = second
    assert (status, headers["x-request-id"]) == (200, "after-1")
    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert logged.__dict__["request_id"] == "boom-1"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in head[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body
