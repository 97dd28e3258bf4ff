"""A process using the Python client with a durable queue, for the kill -9 test.

`python client_process.py BASE_URL QUEUE_FILE IDS_FILE COUNT`: tracks COUNT events, writes
their ids to IDS_FILE, prints `tracked`, then sends until done, printing `no answer` once a
request got none (a batch is then waiting to be retried). With COUNT 0 it only sends what
the queue file holds, closes, and prints `resumed <events left>`.
"""

import sys
import time
from pathlib import Path

from event_tracker_client import Client, ClientConfig


def main() -> None:
    """Track, or resume."""
    base_url, queue_file, ids_file, count = sys.argv[1:5]
    config = ClientConfig(
        base_url=base_url,
        durable_path=Path(queue_file),
        batch_size=10,
        flush_interval=0.05,
        max_retry_seconds=600,
        shutdown_timeout=120,
    )
    client = Client(config)
    tag = "resumed" if int(count) == 0 else "tracked"
    ids = [client.track("durable", "page_view", {"posted_as": f"n-{n}"}) for n in range(int(count))]
    if ids:
        Path(ids_file).write_text("\n".join(ids))
        print(tag, flush=True)  # noqa: T201 - the test reads it
        while client.stats.no_answer == 0:
            time.sleep(0.01)
        print("no answer", flush=True)  # noqa: T201 - the test reads it
    client.close()
    if not ids:
        print(tag, len(client), flush=True)  # noqa: T201 - the test reads it


if __name__ == "__main__":
    main()
