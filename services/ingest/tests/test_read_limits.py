"""The read API has its own per-client budget, and its log lines name the request."""

import logging

import pytest

from activity_testing.events import event_payload
from activity_testing.processes import free_port

from .conftest import ClientFactory

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer reader"}
READ = "/api/v1/users/alice/activities"


async def test_reads_are_rate_limited_per_client_on_a_budget_of_their_own(
    client_for: ClientFactory, mongo_server_url: str, mongo_database: str, activities: object
) -> None:
    async with client_for(
        rate_limit="1/minute",
        read_rate_limit="2/minute",
        read_api_keys="reader",
        mongodb_url=mongo_server_url,
        mongodb_database=mongo_database,
    ) as http:
        reads = [await http.get(READ, headers=AUTH) for _ in range(3)]
        write = await http.post("/api/v1/activities", json=event_payload())
    assert [r.status_code for r in reads] == [200, 200, 429]
    assert reads[0].headers["RateLimit-Limit"] == "2"
    assert reads[2].json()["error"] == "rate_limited"
    assert 1 <= int(reads[2].headers["Retry-After"]) <= 60
    assert write.status_code == 202  # reading spent none of the write budget


async def test_read_failures_are_logged_with_the_request_id(
    client_for: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    nothing_listens = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
    caplog.set_level(logging.INFO)
    async with client_for(read_api_keys="reader", mongodb_url=nothing_listens) as http:
        response = await http.get(READ, headers={**AUTH, "X-Request-ID": "read-req-7"})
    assert response.status_code == 503
    assert response.headers["X-Request-ID"] == "read-req-7"
    [failed] = [r for r in caplog.records if r.getMessage() == "read failed"]
    assert failed.__dict__["request_id"] == "read-req-7"
    [access] = [r for r in caplog.records if r.getMessage() == "http request"]
    assert access.__dict__["request_id"] == "read-req-7"
