"""The client's settings: where to send, how to batch, how long to retry."""

from dataclasses import dataclass
from pathlib import Path

# The server's limits for one batch request (API_DOCS.md): 500 events, a 1 MiB body.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs; every field but `base_url` has a default.

    Attributes:
        base_url: ingest's address, e.g. `http://localhost:8000`.
        ingest_key: sent as `Authorization: Bearer <key>` when set (`INGEST_API_KEYS`).
        batch_size: events per request at most (1-500); a full batch is sent at once.
        flush_interval: seconds an event may wait for its batch to fill before it is sent.
        max_queue_size: events held at most; `track()` drops new events past it (counted).
        request_timeout: seconds for one request (connect, write, read).
        max_retry_seconds: how long one batch is retried before its events are dropped.
        backoff_base: the first retry's delay in seconds; doubled per retry.
        backoff_max: the longest delay between two tries, before jitter.
        shutdown_timeout: seconds `close()` (and interpreter exit) may spend sending.
        durable_path: a SQLite file holding queued events across restarts; None: memory only.
    """

    base_url: str
    ingest_key: str | None = None
    batch_size: int = 100
    flush_interval: float = 1.0
    max_queue_size: int = 10_000
    request_timeout: float = 10.0
    max_retry_seconds: float = 300.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    shutdown_timeout: float = 10.0
    durable_path: Path | None = None

    def __post_init__(self) -> None:
        """Refuse settings the server or the queue cannot honour."""
        if not 1 <= self.batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"batch_size must be 1-{MAX_BATCH_EVENTS}, not {self.batch_size}")
        if self.max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        for name in ("flush_interval", "request_timeout", "max_retry_seconds", "backoff_base"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be at least backoff_base")

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request."""
        headers = {"Content-Type": "application/json", "User-Agent": "event-tracker-python/0.1"}
        if self.ingest_key:
            headers["Authorization"] = f"Bearer {self.ingest_key}"
        return headers
