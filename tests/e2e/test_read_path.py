"""The read API as a client reaches it: real uvicorn in front, the processor's stored events."""

from typing import Any

import httpx
import pytest

from activity_testing.events import event_payload
from activity_testing.processes import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

READ_KEY = "e2e-read-key"


async def test_a_user_id_with_a_slash_is_stored_and_read_back(
    ingest_with: ServiceFactory, processor: ServiceProcess, wait_for_count: Any
) -> None:
    """uvicorn decodes `%2F` into `/` before routing; the read route still finds the id."""
    ingest = ingest_with({"READ_API_KEYS": READ_KEY})
    processor.start()
    with ingest:
        async with httpx.AsyncClient(base_url=ingest.base_url, timeout=30) as http:
            posted = {}
            for user_id in ("team/alice", "team"):
                response = await http.post(
                    "/api/v1/activities", json=event_payload(user_id=user_id)
                )
                assert response.status_code == 202, response.text
                posted[user_id] = response.json()["event_id"]
            assert await wait_for_count(2) == 2

            page = await http.get(
                "/api/v1/users/team%2Falice/activities",
                headers={"Authorization": f"Bearer {READ_KEY}"},
            )

    assert page.status_code == 200, page.text
    assert [item["event_id"] for item in page.json()["items"]] == [posted["team/alice"]]
    assert page.json()["items"][0]["user_id"] == "team/alice"
