"""What a replica set election (or a shard's, behind mongos) throws at the writer is transient.

During an election the primary steps down and, for a few seconds, there is none: PyMongo's
retryable writes retry an insert once, and what still fails reaches the bulk writer as one of
the errors below: an outage as a whole, or per-document write errors of an unordered insert
the step-down interrupted. Each must be retried, never turned into a dead-lettered event.
"""

from collections.abc import Sequence

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WTimeoutError,
)

from processor.bulk_writer import BulkWriter, RetryPolicy, WriteOutcome

FAST_RETRY = RetryPolicy(first_delay=0.01, max_delay=0.02, give_up_after=5)

# Server error codes of an election, as PyMongo's SDAM and retryable-writes specs list them,
# plus mongos's when it cannot find a shard's primary.
ELECTION_CODES = {
    "NotWritablePrimary": 10107,
    "LegacyNotPrimary": 10058,
    "NotPrimaryNoSecondaryOk": 13435,
    "NotPrimaryOrSecondary": 13436,
    "PrimarySteppedDown": 189,
    "InterruptedDueToReplStateChange": 11602,
    "InterruptedAtShutdown": 11600,
    "ShutdownInProgress": 91,
    "FailedToSatisfyReadPreference": 133,
}


class FirstCallFails:
    """A store whose first `insert_many` (or `covered`, the erasure check) raises `error`."""

    def __init__(self, error: PyMongoError, call: str = "insert_many") -> None:
        self.failures = {call: [error]}

    def _fail_once(self, call: str) -> None:
        if self.failures.get(call):
            raise self.failures[call].pop()

    async def insert_many(self, _: Sequence[str]) -> None:
        self._fail_once("insert_many")

    async def covered(self, _: Sequence[str]) -> list[int]:
        self._fail_once("covered")
        return []

    async def delete(self, _: Sequence[str]) -> int:
        return 0


async def _outcome_after_one(error: PyMongoError, call: str = "insert_many") -> WriteOutcome:
    """The outcome of one write whose first `call` to the store raises `error`."""
    writer = BulkWriter(FirstCallFails(error, call), batch_size=1, max_wait=60, retry=FAST_RETRY)
    [outcome] = await writer.write_many(["event"])
    return outcome


ELECTION_ERRORS = [
    NotPrimaryError("not primary", {"code": 10107, "errmsg": "not primary"}),
    AutoReconnect("connection closed"),
    NetworkTimeout("timed out"),
    ServerSelectionTimeoutError("no primary available for writes"),
    WriteConcernError("waiting for replication interrupted", code=64),
    WTimeoutError("waiting for replication timed out", code=64),
    OperationFailure("anything", code=1, details={"errorLabels": ["RetryableWriteError"]}),
]


@pytest.mark.parametrize("error", ELECTION_ERRORS, ids=lambda error: type(error).__name__)
async def test_election_errors_are_retried(error: PyMongoError) -> None:
    assert await _outcome_after_one(error) is WriteOutcome.STORED


@pytest.mark.parametrize("error", ELECTION_ERRORS, ids=lambda error: type(error).__name__)
async def test_election_errors_of_the_erasure_check_are_retried(error: PyMongoError) -> None:
    """The check reads with majority read concern: it meets the same election."""
    assert await _outcome_after_one(error, call="covered") is WriteOutcome.STORED


@pytest.mark.parametrize("code", ELECTION_CODES.values(), ids=ELECTION_CODES.keys())
async def test_election_codes_are_retried_as_command_errors(code: int) -> None:
    error = OperationFailure("election", code=code)
    assert await _outcome_after_one(error) is WriteOutcome.STORED


@pytest.mark.parametrize("code", ELECTION_CODES.values(), ids=ELECTION_CODES.keys())
async def test_election_codes_are_retried_as_write_errors(code: int) -> None:
    # An unordered insert interrupted by a step-down reports the rest as per-document errors.
    error = BulkWriteError({"writeErrors": [{"index": 0, "code": code, "errmsg": "election"}]})
    assert await _outcome_after_one(error) is WriteOutcome.STORED


async def test_a_document_the_server_refuses_is_not_retried() -> None:
    error = BulkWriteError({"writeErrors": [{"index": 0, "code": 121, "errmsg": "validation"}]})
    assert await _outcome_after_one(error) is WriteOutcome.REJECTED
