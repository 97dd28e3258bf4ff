"""Read API: one user's stored activity, newest first, page by page (SPEC §3.3)."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, Field

from activity_contract.events import MAX_EVENT_TYPE_LENGTH, MAX_USER_ID_LENGTH, ActivityOut
from ingest.dependencies import ReaderDep
from ingest.errors import READ_ERROR_RESPONSES, InvalidQueryError
from ingest.reads import ActivityQuery, InvalidCursorError, Position

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

# The app includes it with `require_read_key` (ingest/app.py): every route needs a read key.
router = APIRouter(prefix="/users", tags=["users"], responses=READ_ERROR_RESPONSES)


class ActivityPageOut(BaseModel):
    """A page of a user's activity and the cursor of the next page."""

    items: list[ActivityOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


# `:path` lets the id contain `/`: servers decode `%2F` into `/` before routing, so
# `a%2Fb` reaches the router as `/users/a/b/activities`. The regex is greedy and the path
# ends in `/activities`, so the id is everything in between.
@router.get("/{user_id:path}/activities")
async def list_user_activities(
    reader: ReaderDep,
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID_LENGTH)],
    event_type: Annotated[
        str | None,
        Query(
            max_length=MAX_EVENT_TYPE_LENGTH,
            pattern=r"^[A-Za-z][A-Za-z0-9_.:-]*$",
            description="Only events of this type.",
        ),
    ] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(description="Only events at or after this time (RFC 3339 with offset)."),
    ] = None,
    until: Annotated[
        AwareDatetime | None,
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
        raise InvalidQueryError("until", "must be later than `since`")
    try:
        after = Position.decode(cursor) if cursor else None  # empty: first page
    except InvalidCursorError:
        raise InvalidQueryError(
            "cursor", "not a cursor of this API; pass `next_cursor` as given"
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
