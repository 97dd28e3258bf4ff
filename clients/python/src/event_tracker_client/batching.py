"""When a batch is due: full, or its oldest event has waited `flush_interval`."""


class BatchSchedule:
    """Decides, from the number of queued events and the time, when to send.

    The clock is the caller's (monotonic seconds), so tests drive it by hand.
    """

    def __init__(self, batch_size: int, flush_interval: float) -> None:
        """A schedule for batches of `batch_size`, sent `flush_interval` s after they start."""
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._window_start: float | None = None

    def seconds_until_due(self, queued: int, now: float, *, flushing: bool = False) -> float | None:
        """0 when a batch should go now, else how long to wait; None while nothing is queued."""
        if queued == 0:
            self._window_start = None
            return None
        if self._window_start is None:
            self._window_start = now
        if flushing or queued >= self.batch_size:
            return 0.0
        return max(0.0, self._window_start + self.flush_interval - now)

    def sent(self, now: float) -> None:
        """A batch went: the events left start a new window now."""
        self._window_start = now
