"""Write API: accept one event or a batch, publish, answer 202 (SPEC §3.1, §3.2)."""

from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel

from activity_contract.events import ActivityBatchIn, ActivityIn
from ingest.dependencies import PublisherDep
from ingest.errors import ERROR_RESPONSES
from ingest.request_id import RequestIdDep

router = APIRouter(prefix="/activities", tags=["activities"], responses=ERROR_RESPONSES)


class AcceptedOut(BaseModel):
    """The event was confirmed by RabbitMQ and will be stored."""

    event_id: UUID
    status: Literal["accepted"] = "accepted"


class BatchAcceptedOut(BaseModel):
    """Every event of the batch was confirmed by RabbitMQ."""

    accepted: int
    event_ids: list[UUID]


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def post_activity(
    event: ActivityIn, publisher: PublisherDep, request_id: RequestIdDep
) -> AcceptedOut:
    """Accept one activity event."""
    message = event.to_message(received_at=datetime.now(UTC))
    await publisher.publish(message, request_id)
    return AcceptedOut(event_id=message.event_id)


@router.post("/batch", status_code=status.HTTP_202_ACCEPTED)
async def post_activity_batch(
    batch: ActivityBatchIn, publisher: PublisherDep, request_id: RequestIdDep
) -> BatchAcceptedOut:
    """Accept 1-500 events, all or nothing at validation."""
    received_at = datetime.now(UTC)
    messages = [event.to_message(received_at=received_at) for event in batch.events]
    await publisher.publish_many(messages, request_id)
    return BatchAcceptedOut(
        accepted=len(messages), event_ids=[message.event_id for message in messages]
    )
