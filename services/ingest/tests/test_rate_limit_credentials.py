"""Redis refusing the credentials: a configuration error, not an outage (a Redis of its own).

At start-up ingest stops; a password changed under a running instance keeps events flowing
on the in-memory limit, but readiness and the log say `auth_failed`, not `degraded`.
"""

import logging
from collections.abc import Iterator

import httpx
import pytest
import redis

from activity_contract.startup import DependencyRefusedError
from activity_testing.events import event_payload
from activity_testing.processes import RedisServer
from activity_testing.waiting import wait_until

from .conftest import ClientFactory

pytestmark = pytest.mark.integration

PASSWORD = "secret-of-this-test"
REFUSED = "Redis refused the credentials"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


async def redis_check(http: httpx.AsyncClient) -> str:
    response = await http.get("/health/ready")
    assert response.status_code == 200  # the limiter's store never takes ingest out
    state: str = response.json()["checks"]["redis"]
    return state


@pytest.mark.parametrize(
    ("password", "cause"),
    [
        ("wrong", "authentication failed for user 'default'"),
        (None, "it requires a password and the URL gives none"),
    ],
)
async def test_start_up_stops_on_refused_credentials(
    client_for: ClientFactory, redis_server: RedisServer, password: str | None, cause: str
) -> None:
    with pytest.raises(DependencyRefusedError) as refused:
        async with client_for(redis_url=redis_server.url_with(password)):
            pass
    assert str(refused.value) == f"{REFUSED}: {cause} (REDIS_URL)"


def change_password(server: RedisServer, old: str, new: str) -> None:
    """Set Redis's password to `new` and drop every other client, as a rotation would."""
    admin = redis.Redis.from_url(server.url_with(old))
    try:
        admin.config_set("requirepass", new)
        admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        admin.close()


async def test_a_password_changed_under_ingest_is_auth_failed_not_an_outage(
    client_for: ClientFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.shared_windows")
    async with client_for(redis_url=redis_server.url, rate_limit="3/minute") as http:
        assert await redis_check(http) == "up"
        change_password(redis_server, PASSWORD, "rotated")

        async def auth_failed() -> bool:
            return await redis_check(http) == "auth_failed"

        assert await wait_until(auth_failed, 15), "readiness never reported auth_failed"
        # Fail-open meanwhile: the same rule per process, in memory.
        statuses = [
            (await http.post("/api/v1/activities", json=event_payload())).status_code
            for _ in range(4)
        ]
        assert statuses == [202, 202, 202, 429]
        errors = [r for r in caplog.records if REFUSED in r.getMessage()]
        assert [r.levelno for r in errors] == [logging.ERROR]
        assert "authentication failed for user 'default' (REDIS_URL)" in errors[0].getMessage()
        assert PASSWORD not in caplog.text

        change_password(redis_server, "rotated", PASSWORD)

        async def up() -> bool:
            return await redis_check(http) == "up"

        assert await wait_until(up, 15), "readiness never saw redis accept the password again"


async def test_a_user_refused_the_limiters_commands_stays_auth_failed(
    client_for: ClientFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user that may PING but not run the script: PING's answer does not hide it."""
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.acl_setuser("pinger", enabled=True, passwords=["+pinger-pw"], commands=["+ping"])
    finally:
        admin.close()
    caplog.set_level(logging.WARNING, logger="ingest.shared_windows")
    url = redis_server.url.replace(f":{PASSWORD}@", "pinger:pinger-pw@")
    async with client_for(redis_url=url, rate_limit="3/minute") as http:
        statuses = [
            (await http.post("/api/v1/activities", json=event_payload())).status_code
            for _ in range(4)
        ]
        assert statuses == [202, 202, 202, 429]  # in memory
        for _ in range(3):
            assert await redis_check(http) == "auth_failed"
    refusals = [r for r in caplog.records if REFUSED in r.getMessage()]
    assert len(refusals) == 1
    assert "user 'pinger' lacks a permission the rate limiter needs" in refusals[0].getMessage()
    assert not [r for r in caplog.records if "available again" in r.getMessage()]
