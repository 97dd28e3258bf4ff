"""Read API: one user's stored activity, newest first, page by page (design §3.3)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.convertors import Convertor, register_url_convertor

from activity_contract.events import (
    EVENT_TYPE_PATTERN,
    MAX_EVENT_TYPE_LENGTH,
    MAX_USER_ID_LENGTH,
    ActivityOut,
    Rfc3339Datetime,
    UserId,
)
from ingest.deps import (
    AdminKeyRequiredDep,
    AdminRateLimitDep,
    EraserDep,
    KnownQueryParametersDep,
    MetricsDep,
    ReaderDep,
    ReadKeyRequiredDep,
    ReadRateLimitDep,
)
from ingest.domain_errors import InvalidQueryError
from ingest.http.errors import ERASURE_ERROR_RESPONSES, READ_ERROR_RESPONSES
from ingest.reads import ActivityQuery, InvalidCursorError, Position

DEFAULT_PAGE_SIZE = 50
USER_ID: TypeAdapter[str] = TypeAdapter(UserId)
MAX_PAGE_SIZE = 500

router = APIRouter(prefix="/api/v1/users", tags=["users"])


class ActivityPageOut(BaseModel):
    """A page of a user's activity and the cursor of the next page."""

    items: list[ActivityOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class UserIdConvertor(Convertor[str]):
    """A user id in a path: any characters, `/` and line breaks included.

    Servers decode `%2F` into `/` before routing, so `a%2Fb` reaches the router as
    `/users/a/b/activities`; the regex is greedy and the path ends in `/activities`, so the
    id is everything in between. (Starlette's `path` convertor stops at line breaks.)
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        """The id as given."""
        return value

    def to_string(self, value: str) -> str:
        """The id as given."""
        return value


register_url_convertor("anything", UserIdConvertor())
USER_ACTIVITIES = "/{user_id:anything}/activities"


@router.get(
    USER_ACTIVITIES,
    dependencies=[ReadRateLimitDep, ReadKeyRequiredDep, KnownQueryParametersDep],
    responses=READ_ERROR_RESPONSES,
)
async def list_user_activities(
    reader: ReaderDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH)],
    event_type: Annotated[
        str | None,
        Query(
            max_length=MAX_EVENT_TYPE_LENGTH,
            pattern=EVENT_TYPE_PATTERN,
            description="Only events of this type.",
        ),
    ] = None,
    since: Annotated[
        Rfc3339Datetime | None,
        Query(description="Only events at or after this time (RFC 3339 with offset)."),
    ] = None,
    until: Annotated[
        Rfc3339Datetime | None,
        Query(description="Only events before this time (RFC 3339 with offset)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        Query(max_length=512, description="`next_cursor` of the previous page, as given."),
    ] = None,
) -> ActivityPageOut:
    """A user's events, newest first by `timestamp`, ties in event id order."""
    if since is not None and until is not None and since >= until:
        raise InvalidQueryError(("until", "must be later than `since`"))
    try:
        after = Position.decode(cursor) if cursor else None  # empty: first page
    except InvalidCursorError:
        raise InvalidQueryError(
            ("cursor", "not a cursor of this API; pass `next_cursor` as given")
        ) from None
    page = await reader.page(
        ActivityQuery(
            user_id=user_id,
            limit=limit,
            event_type=event_type,
            since=since,
            until=until,
            after=after,
        )
    )
    return ActivityPageOut(items=page.items, next_cursor=page.next_cursor)


class ErasureOut(BaseModel):
    """What an erasure did."""

    user_id: str
    deleted: int = Field(description="Stored events deleted by this call (0 when repeated).")
    erased_at: datetime = Field(
        description="Events of this user received before this time, or whose timestamp "
        "precedes it, are deleted and never stored afterwards, whenever they arrive."
    )


@router.delete(
    USER_ACTIVITIES,
    dependencies=[AdminRateLimitDep, AdminKeyRequiredDep, KnownQueryParametersDep],
    responses=ERASURE_ERROR_RESPONSES,
)
async def erase_user_activities(
    eraser: EraserDep,
    metrics: MetricsDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH)],
) -> ErasureOut:
    """Erase a user (GDPR art. 17): stored events are deleted, queued ones never stored.

    The id is checked by the same rules as a written `user_id`, so nothing can be erased
    (or logged) under an id no event could have.
    """
    try:
        user_id = USER_ID.validate_python(user_id)
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("path", "user_id")} for problem in error.errors()]
        ) from None
    erasure = await eraser.erase(user_id)
    metrics.erasures.inc()
    metrics.erased_events.inc(erasure.deleted)
    return ErasureOut(user_id=erasure.user_id, deleted=erasure.deleted, erased_at=erasure.erased_at)
