"""The Python client's batched sending against single POSTs: `python -m bench.client`.

Both send the same events to one ingest (the bench's own stack: vhost, Redis, database) from
this process: the client as an application would use it (`track()` in a loop, `flush()`),
and single `POST /api/v1/activities` in a loop on one kept-alive connection, as a user
writing `requests.post` would. Prints events/s and ingest's CPU per event for each.
"""

import argparse
import time
import uuid

import httpx

from bench.stack import event_tracker_spec, running, say, system_stack
from event_tracker_client import Client, ClientConfig


def batched(base_url: str, events: int, batch_size: int) -> float:
    """Seconds to track `events` with the client and see every one accepted."""
    config = ClientConfig(base_url=base_url, batch_size=batch_size, max_queue_size=events)
    started = time.perf_counter()
    with Client(config) as client:
        for n in range(events):
            client.track(f"bench-{n % 100}", "bench_client", {"n": n})
        if not client.flush(timeout=300) or client.stats.delivered != events:
            raise RuntimeError(f"the client did not deliver every event: {client.stats}")
    return time.perf_counter() - started


def single_posts(base_url: str, events: int) -> float:
    """Seconds to post `events` one request each (with their own ids), one after the other."""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for n in range(events):
            body = {
                "event_id": str(uuid.uuid4()),
                "user_id": f"bench-{n % 100}",
                "event_type": "bench_single",
                "metadata": {"n": n},
            }
            http.post("/api/v1/activities", json=body).raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    """Measure both ways on one ingest and print a row for each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events sent by the client")
    parser.add_argument("--single-events", type=int, default=3_000, help="events posted singly")
    parser.add_argument("--batch-size", type=int, default=100, help="the client's batch_size")
    args = parser.parse_args()
    rows = []
    with system_stack(event_tracker_spec()) as stack, running(stack.ingest()) as ingest:
        for label, count, send in (
            (f"client, batch_size {args.batch_size}", args.events, "batched"),
            ("single POSTs, one connection", args.single_events, "single"),
        ):
            say(f"  {label}: {count} events")
            meter = stack.meter(ingest=ingest)
            if send == "batched":
                seconds = batched(ingest.base_url, count, args.batch_size)
            else:
                seconds = single_posts(ingest.base_url, count)
            cpu = meter.per_event_us(count).get("ingest")
            rows.append((label, count, count / seconds, cpu))
    print(f"{'sending':<32} {'events':>8} {'events/s':>10} {'ingest CPU us/event':>20}")
    for label, count, rate, cpu in rows:
        shown = "n/a" if cpu is None else f"{cpu:,.0f}"
        print(f"{label:<32} {count:>8,} {rate:>10,.0f} {shown:>20}")


if __name__ == "__main__":
    main()
