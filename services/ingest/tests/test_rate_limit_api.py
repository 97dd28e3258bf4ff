"""Rate limiting and API keys through the real app, real Redis and a RabbitMQ vhost."""

import httpx
import pytest
import redis.asyncio

from activity_testing.events import event_payload

from .conftest import PEER, REDIS_URL, ClientFactory

pytestmark = pytest.mark.integration

ACTIVITIES = "/api/v1/activities"


async def post(http: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await http.post(ACTIVITIES, json=event_payload(), headers=headers)


async def test_headers_on_success_and_429_envelope_over_the_limit(
    client_for: ClientFactory, redis_key_prefix: str
) -> None:
    async with client_for(rate_limit="3/minute") as http:
        accepted = [await post(http) for _ in range(3)]
        refused = await post(http)
        batch = await http.post(f"{ACTIVITIES}/batch", json={"events": [event_payload()]})
    assert [response.status_code for response in accepted] == [202, 202, 202]
    assert [r.headers["RateLimit-Remaining"] for r in accepted] == ["2", "1", "0"]
    for response in accepted:
        assert response.headers["RateLimit-Limit"] == "3"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "rate_limited",
        "message": refused.json()["message"],
        "details": [],
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Remaining"] == "0"
    # Both ingest endpoints share the client's budget.
    assert batch.status_code == 429
    # The count lives in Redis under this test's prefix, keyed by the client IP.
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        assert await client.zcard(f"{redis_key_prefix}write:{PEER}") == 3
    finally:
        await client.aclose()


async def test_health_metrics_and_docs_are_never_limited(client_for: ClientFactory) -> None:
    async with client_for(rate_limit="1/minute") as http:
        assert (await post(http)).status_code == 202
        assert (await post(http)).status_code == 429
        for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"] * 3:
            response = await http.get(path)
            assert response.status_code == 200, path
            assert "RateLimit-Limit" not in response.headers
        ready = (await http.get("/health/ready")).json()
    assert ready["checks"]["broker"] == ready["checks"]["redis"] == "up"


async def test_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing(
    client_for: ClientFactory,
) -> None:
    async with client_for(rate_limit="2/minute") as http:
        statuses = [
            (await post(http, **{"X-Forwarded-For": f"203.0.113.{index}"})).status_code
            for index in range(4)
        ]
    assert statuses == [202, 202, 429, 429]


async def test_clients_behind_a_trusted_proxy_have_their_own_budgets(
    client_for: ClientFactory,
) -> None:
    async with client_for(
        peer="10.0.0.2", rate_limit="1/minute", trusted_proxies="10.0.0.0/8"
    ) as http:
        first = await post(http, **{"X-Forwarded-For": "6.6.6.6, 203.0.113.1"})
        again = await post(http, **{"X-Forwarded-For": "7.7.7.7, 203.0.113.1"})
        other = await post(http, **{"X-Forwarded-For": "2001:db8::5"})
        garbage = await post(http, **{"X-Forwarded-For": "not an address"})
        proxy_itself = await post(http)
    assert [first.status_code, again.status_code, other.status_code] == [202, 429, 202]
    # Garbage falls back to the proxy's own address, whose budget it then spends.
    assert [garbage.status_code, proxy_itself.status_code] == [202, 429]


async def test_ingest_keys_are_checked_after_the_rate_limit(client_for: ClientFactory) -> None:
    async with client_for(rate_limit="3/minute", ingest_api_keys="k-one,k-two") as http:
        missing = await post(http)
        wrong = await post(http, Authorization="Bearer k-three")
        valid = await post(http, Authorization="Bearer k-two")
        over = await post(http, Authorization="Bearer k-one")
    assert [missing.status_code, wrong.status_code] == [401, 401]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["error"] == "unauthorized"
    assert valid.status_code == 202
    # The two 401s were counted: the valid request used the last of the 3.
    assert valid.headers["RateLimit-Remaining"] == "0"
    # Wrong keys spent the budget too: key guessing is rate limited like anything else.
    assert over.status_code == 429


async def test_a_refused_client_is_refused_again_at_the_edge(client_for: ClientFactory) -> None:
    """Within its Retry-After a refused client is answered before routing: no body read,
    no Redis round trip, the same 429 (envelope, headers, metrics under the route)."""
    async with client_for(rate_limit="1/minute") as http:
        assert (await post(http)).status_code == 202
        first = await post(http)  # the limiter dependency refuses, and remembers
        again = await http.post(
            ACTIVITIES, content=b"not even json", headers={"Content-Type": "text/plain"}
        )
        metrics = (await http.get("/metrics")).text
    assert first.status_code == again.status_code == 429
    assert again.json() == first.json()
    for header in ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "X-Request-ID"):
        assert header in again.headers, header
    # A 415 would have come first, had the body guard or the route seen the request.
    assert (
        'event_tracker_ingest_http_requests_total{handler="/api/v1/activities",'
        'method="POST",status="429"} 2.0'
    ) in metrics
    assert 'event_tracker_ingest_rate_limited_total{scope="write"} 2.0' in metrics
