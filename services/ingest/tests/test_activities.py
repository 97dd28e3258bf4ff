"""Write API with the in-memory broker: acceptance, message contract, every error."""

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from activity_contract.events import ActivityGroupMessage, ActivityMessage
from activity_testing.events import event_payload
from ingest.publishing import ActivityPublisher

from .conftest import Published

SINGLE = "/api/v1/activities"
BATCH = "/api/v1/activities/batch"


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    assert isinstance(body["details"], list)
    return body


async def test_single_event_is_published_and_accepted(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(
        SINGLE, json=event_payload(user_id=" ann "), headers={"X-Request-ID": "req-42"}
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "req-42"
    event_id = response.json()["event_id"]
    assert response.json() == {"event_id": event_id, "status": "accepted"}

    [message] = published.messages
    body = ActivityMessage.model_validate_json(message.body)
    assert str(body.event_id) == event_id
    assert body.user_id == "ann"
    assert body.timestamp == body.received_at
    assert message.message_id == event_id
    assert message.correlation_id == "req-42"
    assert message.content_type == "application/json"


async def test_client_event_id_is_kept(client: httpx.AsyncClient, published: Published) -> None:
    event_id = str(uuid.uuid4())
    response = await client.post(SINGLE, json=event_payload(event_id=event_id))
    assert response.json()["event_id"] == event_id
    assert published.messages[0].message_id == event_id


async def test_request_id_is_generated_when_absent_or_unusable(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(
        SINGLE, json=event_payload(), headers={"X-Request-ID": "bad id with spaces"}
    )
    generated = response.headers["X-Request-ID"]
    assert generated != "bad id with spaces"
    assert published.messages[0].correlation_id == generated


async def test_charset_parameter_is_allowed(
    client: httpx.AsyncClient, published: Published
) -> None:
    response = await client.post(
        SINGLE,
        content=json.dumps(event_payload()),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202
    assert len(published.messages) == 1


async def test_batch_is_published_in_order(client: httpx.AsyncClient, published: Published) -> None:
    events = [event_payload(user_id=f"user-{i}") for i in range(10)]
    response = await client.post(BATCH, json={"events": events})
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 10
    [message] = published.messages  # one batch, one group message
    group = ActivityGroupMessage.model_validate_json(message.body)
    assert message.message_id == str(group.group_id)
    carried = [event for event in group.events if isinstance(event, ActivityMessage)]
    assert len(carried) == len(group.events)  # every event published is one of the contract
    assert [str(event.event_id) for event in carried] == body["event_ids"]
    assert [event.user_id for event in carried] == [f"user-{i}" for i in range(10)]
    assert {event.request_id for event in carried} == {message.correlation_id}


async def test_invalid_batch_lists_each_bad_index_and_publishes_nothing(
    client: httpx.AsyncClient, published: Published
) -> None:
    events = [
        event_payload(),
        event_payload(user_id=""),
        event_payload(),
        event_payload(event_type="9lives", extra_field=1),
    ]
    body = assert_envelope(
        await client.post(BATCH, json={"events": events}), 422, "validation_error"
    )
    details = body["details"]
    assert isinstance(details, list)
    assert sorted({detail["index"] for detail in details}) == [1, 3]
    locations = {tuple(detail["loc"]) for detail in details}
    assert ("body", "events", 3, "extra_field") in locations
    assert ("body", "events", 1, "user_id") in locations
    assert published.messages == []


async def test_unknown_field_is_named(client: httpx.AsyncClient) -> None:
    body = assert_envelope(
        await client.post(SINGLE, json=event_payload(colour="red")), 422, "validation_error"
    )
    assert body["details"] == [
        {
            "loc": ["body", "colour"],
            "message": "Extra inputs are not permitted",
            "type": "extra_forbidden",
        }
    ]


@pytest.mark.parametrize(
    "body", [b"{", b"not json", b'{"user_id": "u",}', b"\xff\xfe", b'{"a": NaN'], ids=repr
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(SINGLE, content=body, headers={"Content-Type": "application/json"})
    assert_envelope(response, 400, "malformed_json")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_non_json_content_type_is_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        SINGLE, content=json.dumps(event_payload()), headers={"Content-Type": content_type}
    )
    assert_envelope(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("body", [b"[]", b"123", b'"text"', b"null"])
async def test_json_that_is_not_an_object_is_422(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(SINGLE, content=body, headers={"Content-Type": "application/json"})
    assert_envelope(response, 422, "validation_error")


async def test_body_over_64_kib_is_413(client: httpx.AsyncClient, published: Published) -> None:
    big = json.dumps(event_payload(metadata={"pad": "x" * 70_000}))
    response = await client.post(SINGLE, content=big, headers={"Content-Type": "application/json"})
    assert_envelope(response, 413, "payload_too_large")
    assert published.messages == []


async def test_streamed_body_over_the_limit_is_413_without_content_length(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    response = await client.post(
        SINGLE, content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "payload_too_large")


async def test_batch_over_1_mib_is_413(client: httpx.AsyncClient) -> None:
    events = [event_payload(metadata={"pad": "x" * 15_000}) for _ in range(80)]
    response = await client.post(BATCH, json={"events": events})
    assert_envelope(response, 413, "payload_too_large")


async def test_batch_under_1_mib_but_over_64_kib_is_accepted(client: httpx.AsyncClient) -> None:
    events = [event_payload(metadata={"pad": "x" * 10_000}) for _ in range(20)]
    assert (await client.post(BATCH, json={"events": events})).status_code == 202


async def test_batch_that_grows_past_one_message_once_encoded_is_413(
    client: httpx.AsyncClient, published: Published
) -> None:
    """Under 1 MiB as sent, ~4 MB once `9e15` is written back as 9000000000000000.0."""
    numbers = ",".join(["9e15"] * 850)
    event = f'{{"user_id": "u", "event_type": "page_view", "metadata": {{"n": [{numbers}]}}}}'
    body = '{"events": [' + ",".join([event] * 240) + "]}"
    assert len(body) < 1024 * 1024
    response = await client.post(BATCH, content=body, headers={"content-type": "application/json"})
    assert_envelope(response, 413, "payload_too_large")
    assert "send fewer events" in response.json()["message"]
    assert published.messages == []


@pytest.mark.parametrize("events", [[], [event_payload()] * 501])
async def test_batch_size_out_of_range_is_422(
    client: httpx.AsyncClient, events: list[object]
) -> None:
    assert_envelope(await client.post(BATCH, json={"events": events}), 422, "validation_error")


async def test_unknown_route_and_wrong_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/nope"), 404, "not_found")
    assert_envelope(await client.get(SINGLE), 405, "method_not_allowed")


async def test_unconfirmed_publish_is_503_with_retry_after(
    client: httpx.AsyncClient, publisher: ActivityPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def time_out(*_: object, **__: object) -> None:
        raise TimeoutError

    monkeypatch.setattr(publisher._publisher, "publish", time_out)
    response = await client.post(SINGLE, json=event_payload())
    body = assert_envelope(response, 503, "broker_unavailable")
    assert response.headers["Retry-After"].isdigit()
    # The id the server assigned is named, so a retry cannot store the event twice.
    assigned_ids = body["event_ids"]
    assert isinstance(assigned_ids, list)
    [assigned] = assigned_ids
    assert uuid.UUID(assigned)
    given = str(uuid.uuid4())
    events = [event_payload(), event_payload(event_id=given), event_payload()]
    response = await client.post(BATCH, json={"events": events})
    body = assert_envelope(response, 503, "broker_unavailable")
    ids = body["event_ids"]
    assert isinstance(ids, list)
    assert len(ids) == 3
    assert ids[1] == given
    assert len({*ids, assigned}) == 4


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["broker"] == "up"


async def test_openapi_documents_both_write_endpoints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (SINGLE, BATCH):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"202", "400", "413", "415", "422", "503"} <= set(responses)


async def test_open_ingest_declares_no_security_on_write_routes(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (SINGLE, BATCH):
        assert "security" not in schema["paths"][path]["post"]
    assert schema["paths"]["/api/v1/users/{user_id}/activities"]["get"]["security"]
