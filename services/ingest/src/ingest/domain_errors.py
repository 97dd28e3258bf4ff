"""What ingest's own work fails with, free of HTTP: `ingest.http.errors` maps each to a status."""

from collections.abc import Sequence
from uuid import UUID


class BrokerUnavailableError(Exception):
    """RabbitMQ did not confirm a request's events; `event_ids` names every one of them."""

    def __init__(self, event_ids: Sequence[UUID]) -> None:
        """The events of the request, the ids the server assigned included."""
        super().__init__()
        self.event_ids = list(event_ids)


class DatabaseUnavailableError(Exception):
    """MongoDB is not configured, or did not answer in time; the message may say which."""


class PayloadTooLargeError(Exception):
    """A body, or the events it holds, is larger than a request may carry."""


class BodyTimeoutError(Exception):
    """A request's body did not arrive in time."""


class UnauthorizedError(Exception):
    """A key is missing or is not one of the keys the route accepts."""


class InvalidQueryError(Exception):
    """Query values the schema alone cannot check (a cursor, a range) are wrong."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        """Each wrong parameter and what is wrong with it."""
        super().__init__()
        self.problems = problems
