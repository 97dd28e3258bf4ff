"""Inspect and replay the dead-letter queue: `event-tracker-dlq {list,show,replay}`.

- `list`: the dead letters grouped by reason, with how many would be stored if replayed;
- `show N`: the Nth dead letter (from 1, oldest first): properties, headers, body;
- `replay`: those selected by `--reason`, `--since`/`--until` (when they were dead-lettered)
  and `--count`, read again as the processor reads them; a dry run unless `--apply`, which
  moves each one that reads back to `user_activities`. What would still be refused stays.

With a tracking plan (TRACKING_PLAN_DIR and its modes, as the processor is given them), an
event the plan refuses counts as refused: replayed, it would only be dead-lettered again.

Every message is taken from the head of the dead-letter queue once and, unless replayed,
put back at its tail (a confirmed publish, then the ack): after a full pass the queue holds
what it held, in the same order, and nothing is ever requeued, so no delivery counts toward
a delivery limit. A replayed message is acknowledged only once `user_activities` confirmed
its copy; a crash in between leaves it in both, which is harmless: the processor stores
each event id once. RABBITMQ_URL names the broker and vhost, as for the services.
"""

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from activity_contract.events import (
    SCHEMA_VERSION,
    ActivityGroupMessage,
    UnreadableEvent,
    read_queue_message,
)
from activity_contract.settings import BrokerSettings, TrackingPlanSettings, load_settings
from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_contract.tracking_plan import TrackingPlan

# Bookkeeping of a dead letter that a replayed copy must not carry: the broker's delivery
# count and the processor's reason (a copy that fails again gets its own).
DROPPED_HEADERS = ("x-delivery-count", "x-dead-letter-reason", "x-dead-letter-error")


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read: why it is there, since when, and whether it would store."""

    message: AbstractIncomingMessage
    reason: str
    dead_lettered_at: datetime | None
    refusal: str | None  # why replaying it would be refused again; None: it would store


def read_dead_letter(
    message: AbstractIncomingMessage, plan: TrackingPlan | None = None
) -> DeadLetter:
    """The reason (the processor's header, else RabbitMQ's `x-death`), time and verdict."""
    headers = message.headers or {}
    deaths: Any = headers.get("x-death") or [{}]
    reason = headers.get("x-dead-letter-reason") or deaths[0].get("reason") or "unknown"
    at = deaths[0].get("time") or message.timestamp
    return DeadLetter(message, str(reason), _utc(at), _refusal(message.body, plan))


def _refusal(body: bytes, plan: TrackingPlan | None) -> str | None:
    try:
        read = read_queue_message(body)
    except ValidationError as error:
        return f"unreadable: {error.errors(include_url=False)[0]['msg']}"
    if read.schema_version != SCHEMA_VERSION:
        return f"unknown schema_version {read.schema_version}"
    events = read.events if isinstance(read, ActivityGroupMessage) else [read]
    readable = [event for event in events if not isinstance(event, UnreadableEvent)]
    if len(readable) < len(events):
        return f"{len(events) - len(readable)} unreadable events"
    if plan is None:
        return None
    refused = sum(plan.judge(event.event_type, event.metadata).refuse for event in readable)
    return f"{refused} events the tracking plan refuses" if refused else None


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def copy_of(message: AbstractIncomingMessage, replay: bool) -> aio_pika.Message:
    """The same message, persistent; a replayed copy without the dead letter's bookkeeping."""
    headers = dict(message.headers or {})
    if replay:
        for name in DROPPED_HEADERS:
            headers.pop(name, None)
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


# Called with each dead letter: True moves it to `user_activities`, False keeps it.
Visit = Callable[[int, DeadLetter], Awaitable[bool]]


async def one_pass(channel: AbstractChannel, visit: Visit, plan: TrackingPlan | None) -> None:
    """Each message the dead-letter queue holds now, once, oldest first, through `visit`."""
    queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
    held = queue.declaration_result.message_count or 0
    for position in range(1, held + 1):
        message = await queue.get(no_ack=False, fail=False)
        if message is None:  # another reader took the rest
            return
        replay = await visit(position, read_dead_letter(message, plan))
        target = ACTIVITY_QUEUE if replay else DEAD_LETTER_QUEUE
        await channel.default_exchange.publish(copy_of(message, replay), routing_key=target)
        await message.ack()


@dataclass
class Selection:
    """Which dead letters `replay` takes."""

    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    count: int | None = None

    def takes(self, letter: DeadLetter) -> bool:
        """Whether `letter` is selected (by reason and time; `count` is the caller's)."""
        if self.reasons and letter.reason not in self.reasons:
            return False
        at = letter.dead_lettered_at
        if self.since is not None and (at is None or at < self.since):
            return False
        return self.until is None or (at is not None and at < self.until)


async def replay(
    channel: AbstractChannel, selection: Selection, apply: bool, plan: TrackingPlan | None
) -> list[str]:
    """Replay (or, without `apply`, tell what would be replayed); the summary lines."""
    replayed: Counter[str] = Counter()
    refused: Counter[tuple[str, str]] = Counter()
    skipped = 0

    async def visit(_: int, letter: DeadLetter) -> bool:
        nonlocal skipped
        if not selection.takes(letter) or (
            selection.count is not None and sum(replayed.values()) >= selection.count
        ):
            skipped += 1
            return False
        if letter.refusal is not None:
            refused[letter.reason, letter.refusal] += 1
            return False
        replayed[letter.reason] += 1
        return apply

    await one_pass(channel, visit, plan)
    verb = "replayed to user_activities" if apply else "would be replayed (dry run: --apply)"
    lines = [f"{verb}: {sum(replayed.values())}"]
    lines += [f"  {reason}: {count}" for reason, count in sorted(replayed.items())]
    lines.append(f"selected but still refused, left in the queue: {sum(refused.values())}")
    lines += [f"  {reason}: {count} ({why})" for (reason, why), count in sorted(refused.items())]
    lines.append(f"not selected, left in the queue: {skipped}")
    return lines


async def listing(channel: AbstractChannel, plan: TrackingPlan | None) -> list[str]:
    """The dead letters by reason: how many, the oldest, and how many would store."""
    by_reason: dict[str, list[DeadLetter]] = {}

    async def visit(_: int, letter: DeadLetter) -> bool:
        by_reason.setdefault(letter.reason, []).append(letter)
        return False

    await one_pass(channel, visit, plan)
    lines = [f"{sum(map(len, by_reason.values()))} dead letters in {DEAD_LETTER_QUEUE}"]
    for reason, letters in sorted(by_reason.items()):
        times = [letter.dead_lettered_at for letter in letters if letter.dead_lettered_at]
        oldest = f", oldest {min(times):%Y-%m-%dT%H:%M:%SZ}" if times else ""
        would_store = sum(1 for letter in letters if letter.refusal is None)
        lines.append(f"  {reason}: {len(letters)}{oldest}; would store if replayed: {would_store}")
    return lines


async def showing(channel: AbstractChannel, position: int, plan: TrackingPlan | None) -> list[str]:
    """The dead letter at `position` (from 1): properties, headers, body."""
    shown: list[str] = []

    async def visit(at: int, letter: DeadLetter) -> bool:
        if at == position:
            message = letter.message
            body = message.body.decode(errors="replace")
            with_json = _pretty(body)
            shown.extend(
                [
                    f"message_id: {message.message_id}",
                    f"correlation_id: {message.correlation_id}",
                    f"reason: {letter.reason}",
                    f"dead-lettered at: {letter.dead_lettered_at}",
                    f"would store if replayed: {letter.refusal or 'yes'}",
                    f"headers: {json.dumps(message.headers, default=str)}",
                    f"body ({len(message.body)} bytes):",
                    with_json,
                ]
            )
        return False

    await one_pass(channel, visit, plan)
    return shown or [f"no dead letter at position {position}"]


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2)
    except ValueError:
        return body


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parser() -> argparse.ArgumentParser:
    """The command line."""
    commands = argparse.ArgumentParser(prog="event-tracker-dlq", description=__doc__)
    verbs = commands.add_subparsers(dest="verb", required=True)
    verbs.add_parser("list", help="dead letters by reason")
    show = verbs.add_parser("show", help="one dead letter, from 1, oldest first")
    show.add_argument("position", type=int)
    again = verbs.add_parser("replay", help="move selected dead letters back (dry run by default)")
    again.add_argument("--reason", action="append", default=[], help="repeatable")
    again.add_argument("--since", type=_timestamp, help="dead-lettered at or after (ISO 8601)")
    again.add_argument("--until", type=_timestamp, help="dead-lettered before (ISO 8601)")
    again.add_argument("--count", type=int, help="at most this many")
    again.add_argument("--apply", action="store_true", help="do it (default: a dry run)")
    return commands


async def run(args: argparse.Namespace, url: str, plan: TrackingPlan | None) -> list[str]:
    """Connect, do the verb, return what to print."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()  # publisher confirms: each publish is confirmed
        if args.verb == "list":
            return await listing(channel, plan)
        if args.verb == "show":
            return await showing(channel, args.position, plan)
        selection = Selection(frozenset(args.reason), args.since, args.until, args.count)
        return await replay(channel, selection, args.apply, plan)


def main() -> None:
    """Entry point of `event-tracker-dlq`."""
    args = parser().parse_args()
    url = load_settings(BrokerSettings).rabbitmq_url
    plan = load_settings(TrackingPlanSettings).tracking_plan()
    sys.stdout.write("".join(f"{line}\n" for line in asyncio.run(run(args, url, plan))))


if __name__ == "__main__":
    main()
