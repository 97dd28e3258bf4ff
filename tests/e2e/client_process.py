"""A process using the Python client, for the tests that end the process under it.

`python client_process.py MODE BASE_URL IDS_FILE COUNT [QUEUE_FILE]` tracks COUNT events and
writes their ids to IDS_FILE, then:

- `durable`: over the SQLite queue QUEUE_FILE, prints `tracked`, then sends, printing
  `no answer` once a request got none (a batch then waits for its retry); with COUNT 0 it
  only sends what the file holds, closes and prints `resumed <events left>`;
- `exit-sync`, `exit-async`: returns without closing the client: the interpreter's exit
  sends the events.
"""

import asyncio
import sys
from pathlib import Path

from activity_testing.waiting import wait_until_sync
from event_tracker_client import AsyncClient, Client, ClientConfig

# The test kills this process once it says `no answer`; a run that never meets one ends.
NO_ANSWER_WITHIN_SECONDS = 120.0


def track(client: Client | AsyncClient, count: int, ids_file: Path) -> None:
    """Track `count` events; `posted_as` tells two stored copies of one event apart."""
    ids = [client.track("process", "page_view", {"posted_as": f"n-{n}"}) for n in range(count)]
    if ids:
        ids_file.write_text("\n".join(ids))


def durable(config: ClientConfig, count: int, ids_file: Path) -> None:
    """Track into the file and send; or (count 0) send what the file holds and close."""
    client = Client(config)
    track(client, count, ids_file)
    if count == 0:
        client.close()
        print("resumed", len(client), flush=True)  # noqa: T201 - the test reads it
        return
    print("tracked", flush=True)  # noqa: T201 - the test reads it
    if not wait_until_sync(
        lambda: client.stats.no_answer > 0, NO_ANSWER_WITHIN_SECONDS, interval=0.01
    ):
        sys.exit("no request went unanswered")
    print("no answer", flush=True)  # noqa: T201 - the test reads it
    client.close()


async def exit_async(config: ClientConfig, count: int, ids_file: Path) -> None:
    """Track on the loop and return: the loop ends with the events still queued."""
    track(AsyncClient(config), count, ids_file)


def main() -> None:
    """Run MODE."""
    mode, base_url, ids_file, count = sys.argv[1:5]
    config = ClientConfig(
        base_url=base_url,
        durable_path=Path(sys.argv[5]) if mode == "durable" else None,
        batch_size=10,
        flush_interval=60 if mode.startswith("exit") else 0.05,  # exit must do the sending
        max_retry_seconds=600,
        shutdown_timeout=120,
    )
    if mode == "durable":
        durable(config, int(count), Path(ids_file))
    elif mode == "exit-sync":
        track(Client(config), int(count), Path(ids_file))
    else:
        asyncio.run(exit_async(config, int(count), Path(ids_file)))


if __name__ == "__main__":
    main()
