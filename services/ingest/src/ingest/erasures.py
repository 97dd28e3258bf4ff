"""Erasing a user's activity (GDPR art. 17): record the erasure, then delete.

The erasure is recorded first, with its time, so that the processor does not store an
event the erasure covers (it checks the record before each bulk insert and after it),
whenever that event arrives; then the events already stored are deleted. What an erasure
covers is `activity_contract.erasure`.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pymongo
from pymongo import AsyncMongoClient, WriteConcern
from pymongo.errors import PyMongoError

from activity_contract.erasure import covered_query, erasure_time
from activity_contract.storage import ACTIVITIES_COLLECTION, ERASURES_COLLECTION
from ingest.domain_errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

# Acknowledged once a majority has it in its journal, like the processor's writes.
DURABLE_WRITES = WriteConcern(w="majority", j=True)
# The whole erasure's deadline (the shared client's default is a read's 2 s).
ERASURE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Erasure:
    """What one erasure did."""

    user_id: str
    erased_at: datetime
    deleted: int


class ActivityEraser:
    """Erases users' stored and queued events; shares the read path's MongoDB client."""

    def __init__(self, client: AsyncMongoClient[dict[str, object]], database: str) -> None:
        """Erase in `database` through `client`."""
        db = client.get_database(database, write_concern=DURABLE_WRITES)
        self._activities = db[ACTIVITIES_COLLECTION]
        self._erasures = db[ERASURES_COLLECTION]

    async def erase(self, user_id: str) -> Erasure:
        """Erase `user_id`: events received or timed until now are deleted, and not stored later.

        Idempotent: a repeated erasure moves its time forward (never back, whatever the
        clocks of several ingest instances say) and deletes what arrived in between.
        """
        erased_at = erasure_time(datetime.now(UTC))
        try:
            # Longer than a read's budget: a user with many events is a long delete, and a
            # 503 leaves it partly done (a retry finishes it).
            with pymongo.timeout(ERASURE_TIMEOUT_SECONDS):
                await self._erasures.update_one(
                    {"_id": user_id}, {"$max": {"erased_at": erased_at}}, upsert=True
                )
                result = await self._activities.delete_many(covered_query(user_id, erased_at))
        except PyMongoError as error:
            logger.warning("erasure failed", extra={"error_type": type(error).__name__})
            raise DatabaseUnavailableError("The erasure could not be done right now.") from error
        erasure = Erasure(user_id, erased_at, result.deleted_count)
        logger.info("user erased", extra={"user_id": user_id, "deleted": erasure.deleted})
        return erasure
