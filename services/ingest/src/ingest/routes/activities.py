"""Write API: accept one event or a batch, publish, answer 202 (design §3.1, §3.2).

These routes declare the write contract to FastAPI (the OpenAPI document, `405` for other
methods); their requests are answered by `ingest.http.write_path`, the service's hot path,
before FastAPI's middleware and routing (`WRITE_ROUTES` says how to answer each).
"""

from typing import NoReturn

from fastapi import APIRouter, status

from activity_contract.events import ActivityBatchIn, ActivityIn
from ingest.http.errors import WRITE_ERROR_RESPONSES
from ingest.http.json_bodies import json_request_body
from ingest.http.write_path import AcceptedOut, BatchAcceptedOut

router = APIRouter(
    prefix="/api/v1/activities", tags=["activities"], responses=WRITE_ERROR_RESPONSES
)


def _served_by_write_path() -> NoReturn:
    raise RuntimeError("the write routes are answered by ingest.http.write_path")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=json_request_body(ActivityIn),
    response_model=AcceptedOut,
)
async def post_activity() -> NoReturn:
    """Accept one activity event."""
    _served_by_write_path()


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=json_request_body(ActivityBatchIn),
    response_model=BatchAcceptedOut,
)
async def post_activity_batch() -> NoReturn:
    """Accept 1-500 events, all or nothing at validation."""
    _served_by_write_path()
