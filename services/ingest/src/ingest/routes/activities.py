"""Write API: accept one event or a batch, publish, answer 202 (design §3.1, §3.2)."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Request, status
from pydantic import BaseModel

from activity_contract.events import ActivityBatchIn, ActivityIn, ActivityMessage
from ingest.deps import MetricsDep, PublisherDep, RequestIdDep
from ingest.http.errors import WRITE_ERROR_RESPONSES
from ingest.http.json_bodies import json_request_body, parse_json_body
from ingest.metrics import IngestMetrics

router = APIRouter(
    prefix="/api/v1/activities", tags=["activities"], responses=WRITE_ERROR_RESPONSES
)


class AcceptedOut(BaseModel):
    """The event was confirmed by RabbitMQ and will be stored."""

    event_id: UUID
    status: Literal["accepted"] = "accepted"


class BatchAcceptedOut(BaseModel):
    """Every event of the batch was confirmed by RabbitMQ."""

    accepted: int
    event_ids: list[UUID]


def _observe_clock_skew(
    events: Sequence[ActivityIn], received_at: datetime, metrics: IngestMetrics
) -> None:
    for event in events:
        if event.sent_at is not None:
            metrics.clock_skew.observe(abs((event.sent_at - received_at).total_seconds()))


@router.post("", status_code=status.HTTP_202_ACCEPTED, openapi_extra=json_request_body(ActivityIn))
async def post_activity(
    request: Request, publisher: PublisherDep, metrics: MetricsDep, request_id: RequestIdDep
) -> AcceptedOut:
    """Accept one activity event."""
    received_at = datetime.now(UTC)
    event = parse_json_body(ActivityIn, await request.body(), {"received_at": received_at})
    _observe_clock_skew([event], received_at, metrics)
    message = event.to_message(received_at, request_id)
    await publisher.publish([message])
    return AcceptedOut(event_id=message.event_id)


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=json_request_body(ActivityBatchIn),
)
async def post_activity_batch(
    request: Request, publisher: PublisherDep, metrics: MetricsDep, request_id: RequestIdDep
) -> BatchAcceptedOut:
    """Accept 1-500 events, all or nothing at validation."""
    received_at = datetime.now(UTC)
    batch = parse_json_body(ActivityBatchIn, await request.body(), {"received_at": received_at})
    _observe_clock_skew(batch.events, received_at, metrics)
    messages: list[ActivityMessage] = [
        event.to_message(received_at, request_id) for event in batch.events
    ]
    await publisher.publish(messages)
    return BatchAcceptedOut(
        accepted=len(messages), event_ids=[message.event_id for message in messages]
    )
