"""The publisher on a virtual clock (activity_testing.simulation), against a fake broker edge:
what the seeded explorer (tests/explorer/test_ingest_publisher.py) found, kept as tests."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.exceptions import DeliveryError
from pamqp import commands as spec
from prometheus_client import CollectorRegistry

from activity_contract.events import ActivityMessage
from activity_testing.simulation import VirtualClockLoop, run_simulated
from activity_testing.waiting import wait_until
from ingest.domain_errors import BrokerUnavailableError
from ingest.metrics import IngestMetrics
from ingest.publishing import ActivityPublisher
from ingest.settings import IngestSettings


def message() -> ActivityMessage:
    now = datetime.now(UTC)
    return ActivityMessage(
        event_id=uuid.uuid4(),
        user_id="user-1",
        event_type="page_view",
        timestamp=now,
        received_at=now,
        request_id="request-1",
    )


class RenewableChannel:
    """The publishing channel as the renewal sees it: it only records what is done to it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def close(self) -> None:
        self.calls.append("close")

    async def reopen(self) -> None:
        self.calls.append("reopen")


class ChannelManager:
    def __init__(self) -> None:
        self.channel = RenewableChannel()

    async def get_channel(self, channel: object = None) -> RenewableChannel:
        return self.channel

    def disconnect(self) -> None:
        pass


def test_a_nack_in_the_first_second_of_the_loop_clock_renews_the_channel(
    settings: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's clock may begin near 0 (a virtual one does; the monotonic clock of a
    fresh machine nearly so): the first nack renews the channel there too. It was taken
    for a renewal at 0 s, and none came until a nack after the first second."""
    manager = ChannelManager()

    async def nacked(*_: Any, **__: Any) -> None:
        raise DeliveryError(None, spec.Basic.Nack(delivery_tag=1))

    async def main(loop: VirtualClockLoop) -> None:
        publisher = ActivityPublisher(settings, IngestMetrics(CollectorRegistry()))
        publisher.broker.config.broker_config.channel_manager = manager  # type: ignore[assignment]
        monkeypatch.setattr(publisher._publisher, "publish", nacked)
        with pytest.raises(BrokerUnavailableError):
            await publisher.publish([message()])
        nacked_at = loop.time()
        assert nacked_at < 1.0
        renewed = await wait_until(lambda: manager.channel.calls == ["close", "reopen"], 1, 0.01)
        await publisher.stop()
        assert renewed, f"no channel renewal after a nack at {nacked_at:.3f} s"

    run_simulated(main)
