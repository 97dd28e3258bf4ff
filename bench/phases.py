"""The measurements of one system, in order; each adds its rows to the report.

Every phase leaves the activity queue empty (what a phase left is purged once its
processor is stopped), so each one starts from the same state whatever the system.
"""

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from bench import bare
from bench.fill import FILL_USER_PREFIX, NO_EVENTS_USER_PREFIX, fill, reset_activities
from bench.loadgen import percentile
from bench.report import SUBJECT, Measure, Report
from bench.stack import (
    READ_API_KEY,
    Service,
    SystemStack,
    cpu_seconds,
    loadgen,
    loadgens,
    purge_queue,
    queue_depth,
    running,
    say,
    stored_count,
    stored_latencies,
    wait_stored,
)

# Groups of phases `--only` can pick: bare limits; ingest, drains, 500/s while draining and
# end to end (issue 10); the refusal path (issue 16); data size, reads and the write path
# beside readers (issues 17 and 18, event-tracker only).
GROUPS = frozenset({"bare", "ingest", "refusal", "data"})
GOOD_CLIENT = "127.0.0.2"
ABUSIVE_CLIENT = "127.0.0.3"
READER_CLIENT = "127.0.0.4"
WARM_UP_CLIENT = "127.0.0.5"
# Before a latency phase, wait (at most SETTLE_SECONDS) for the database to be idle: below
# IDLE_CPU_SECONDS of CPU in one second.
SETTLE_SECONDS = 60.0
IDLE_CPU_SECONDS = 0.1
STORED_WAIT_SECONDS = 30.0  # write path beside reads: bound on waiting for its events


@dataclass(frozen=True)
class Plan:
    """Counts and durations of one run."""

    name: str
    publish_count: int  # bare publishes
    insert_count: int  # bare inserts
    single_seconds: float
    batch_seconds: float
    single_backlog: int  # at least this many events posted one by one before that drain
    batch_backlog: int  # events posted in batches for that drain (after the batch phase)
    drain_within: float  # bound on one drain measurement (the Node consumer is slow)
    mixed_seconds: float
    e2e_seconds: float
    e2e_wait: float  # bound on waiting for the end-to-end events to be stored
    refusal_seconds: float  # each of: good client alone, abuser alone, both
    levels: tuple[int, ...]  # stored events before each insert-rate measurement
    level_backlog: int  # events the processor drains at each level
    fill_users: int  # users the stored events belong to
    reads: int  # timeline reads of each kind (users with / without events)
    rw_seconds: float  # write path with and without readers, each
    single_connections: int = 64
    batch_connections: int = 16
    batch_size: int = 100
    mixed_rate: float = 500.0
    e2e_rate: float = 1000.0
    refusal_limit: int = 6000  # per minute: the good client's 100/s stays under it
    good_rate: float = 100.0
    abusive_rate: float = 1000.0
    rw_rate: float = 200.0
    readers: int = 16


FULL = Plan(
    "full",
    publish_count=50_000,
    insert_count=50_000,
    single_seconds=20,
    batch_seconds=20,
    single_backlog=20_000,
    batch_backlog=100_000,
    drain_within=60,
    mixed_seconds=20,
    e2e_seconds=60,
    e2e_wait=30,
    refusal_seconds=15,
    levels=(0, 100_000, 250_000),
    level_backlog=10_000,
    fill_users=1000,
    reads=100,
    rw_seconds=20,
)
QUICK = Plan(
    "quick",
    publish_count=10_000,
    insert_count=10_000,
    single_seconds=8,
    batch_seconds=8,
    single_backlog=4_000,
    batch_backlog=20_000,
    drain_within=15,
    mixed_seconds=8,
    e2e_seconds=10,
    e2e_wait=20,
    refusal_seconds=6,
    levels=(0, 10_000, 25_000),
    level_backlog=3_000,
    fill_users=100,
    reads=30,
    rw_seconds=8,
)


def http_measure(result: dict[str, Any], cpu: dict[str, float], note: str = "") -> Measure:
    """A row's figures from a load-generator summary: events/s, p50, p99."""
    notes = [note] if note else []
    if result["non_2xx_share"] > 0:
        statuses = ", ".join(
            f"{n:,} x {status}"
            for status, n in sorted(result["statuses"].items())
            if status != "202"
        )
        errors = f", {result['errors']:,} unanswered" if result["errors"] else ""
        notes.append(f"{result['non_2xx_share']:.1%} not accepted ({statuses}{errors})")
    counts = {"sent": result["sent"], "accepted": result["accepted_requests"]}
    return Measure(
        result["events_per_second"],
        result["p50_ms"],
        result["p99_ms"],
        cpu,
        "; ".join(notes),
        counts,
    )


def ingest_side(events: int) -> dict[str, int]:
    """Event counts for the CPU of the processes an ingest-only phase loads."""
    return dict.fromkeys(("ingest", "redis", "mq"), events)


def drain_rate(samples: list[tuple[float, float]]) -> float:
    """Events/s from the first sample that saw events stored to the last one."""
    moving = [(t, count) for t, count in samples if count > 0]
    if len(moving) < 2:
        return 0.0
    (t0, c0), (t1, c1) = moving[0], moving[-1]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def stored_measure(stack: SystemStack, event_type: str, accepted: int, waited: float) -> Measure:
    """processed_at - received_at of the stored events of `event_type`: count, p50, p99.

    Accepted events not stored count as infinitely late.
    """
    latencies = stored_latencies(stack, event_type)
    if latencies is None:
        return Measure(note="the database did not answer the read-back in time")
    missing = accepted - len(latencies)
    counted = latencies + [math.inf] * max(0, missing)
    note = ""
    if missing > 0:
        note = f"{missing:,} accepted, not stored after {waited:.0f} s (counted as late)"
    elif missing < 0:
        note = f"{-missing:,} events answered 503 were stored too (confirmed late)"
    return Measure(len(latencies), percentile(counted, 0.5), percentile(counted, 0.99), note=note)


class SystemRun:
    """The phases, run against one system's stack; rows go to `report` under its name."""

    def __init__(self, stack: SystemStack, plan: Plan, report: Report) -> None:
        """Measure `stack` with the counts of `plan`."""
        self.stack = stack
        self.plan = plan
        self.report = report
        self.system = stack.spec.name
        self.queued = 0  # events accepted and not yet drained nor purged
        self._processor_start_cpu: float | None = None

    def put(self, key: str, name: str, unit: str, measure: Measure) -> Measure:
        """Add this system's measure to row `key`."""
        return self.report.put(key, name, unit, self.system, measure)

    def run(self, groups: frozenset[str] = GROUPS) -> None:
        """The phases of `groups`, in order (see GROUPS)."""
        plan, stack = self.plan, self.stack
        if "bare" in groups:
            self.bare_limits()
        if groups & {"ingest", "data"}:
            self.processor_start_cpu()  # while the queue is empty
        if "ingest" in groups:
            ingest = stack.ingest()
            with running(ingest):
                say(f"[{self.system}] single-event ingest (processor stopped)")
                self.ingest_single(ingest)
                self.drain("drain_single", "posted one by one")
                say(f"[{self.system}] batch ingest (processor stopped)")
                self.ingest_batch(ingest)
                self.drain("drain_batch", f"posted in batches of {plan.batch_size}")
                self.mixed(ingest)
                self.end_to_end(ingest)
        if "refusal" in groups:
            self.refusals()
        if "data" in groups and stack.spec.reads:
            with running(stack.ingest()) as ingest:
                self.insert_rate_by_size(ingest)
                self.reads(ingest)
                self.write_path_beside_reads(ingest)

    # -- bare limits -----------------------------------------------------------------

    def bare_limits(self) -> None:
        """What the broker and this system's database take without any service."""
        plan, stack = self.plan, self.stack
        say(f"[{self.system}] bare limits: publish-with-confirm and insert_many")
        queue_type = bare.PRODUCT_QUEUE_TYPE if self.system == SUBJECT else bare.BASELINE_QUEUE_TYPE
        publish = asyncio.run(bare.bare_publish_aio_pika(stack, plan.publish_count, queue_type))
        self.put(
            "bare_publish",
            "bare publish-with-confirm, aio-pika, 1 channel",
            "messages/s",
            Measure(publish, note=f"{queue_type} queue"),
        )
        if self.system == SUBJECT:
            publish_fs = asyncio.run(bare.bare_publish_faststream(stack, plan.publish_count))
            self.put(
                "bare_publish_fs",
                "bare publish-with-confirm, FastStream publisher",
                "messages/s",
                Measure(publish_fs, note=f"{queue_type} queue"),
            )
        meter = stack.meter()
        insert = asyncio.run(bare.bare_insert(stack, plan.insert_count, concurrency=1))
        self.put(
            "bare_insert",
            f"bare insert_many x{bare.INSERT_BATCH}, w=majority j=true",
            "documents/s",
            Measure(insert, cpu_us=meter.per_event_us({"db": plan.insert_count})),
        )

    # -- ingest and drains -------------------------------------------------------------

    def ingest_single(self, ingest: Service) -> None:
        """Single-event POSTs, closed loop; then enough of them queued for the next drain."""
        plan = self.plan
        meter = self.stack.meter(ingest=ingest)
        result = loadgen(
            ingest.port,
            "single POST",
            duration=plan.single_seconds,
            concurrency=plan.single_connections,
        )
        self.put(
            "single",
            f"ingest single POST, {plan.single_connections} conns, closed loop",
            "events/s",
            http_measure(result, meter.per_event_us(ingest_side(result["accepted_events"]))),
        )
        queued = result["accepted_events"]
        if queued < plan.single_backlog:
            topup = loadgen(
                ingest.port,
                "backlog top-up, single POSTs",
                duration=600,
                concurrency=plan.single_connections,
                max_requests=plan.single_backlog - queued,
            )
            queued += topup["accepted_events"]
        self.queued = queued

    def ingest_batch(self, ingest: Service) -> None:
        """Batch POSTs, closed loop."""
        plan = self.plan
        meter = self.stack.meter(ingest=ingest)
        result = loadgen(
            ingest.port,
            f"batch POST x{plan.batch_size}",
            duration=plan.batch_seconds,
            concurrency=plan.batch_connections,
            batch=plan.batch_size,
        )
        self.put(
            "batch",
            f"ingest batch POST x{plan.batch_size}, {plan.batch_connections} conns, closed loop",
            "events/s",
            http_measure(result, meter.per_event_us(ingest_side(result["accepted_events"]))),
        )
        # The phase queues far more than one drain measures: a backlog of a known size,
        # drained whole, gives the drain's rate and CPU per event without a cut-off.
        self.leave_queue_empty()
        self.queued = self.post_backlog(ingest, plan.batch_backlog)

    def post_backlog(self, ingest: Service, events: int) -> int:
        """Queue about `events` events in batch POSTs (processor stopped); return accepted."""
        plan = self.plan
        result = loadgen(
            ingest.port,
            "backlog, batch POSTs",
            duration=600,
            concurrency=plan.batch_connections,
            batch=plan.batch_size,
            max_requests=max(1, -(-events // plan.batch_size)),
        )
        accepted: int = result["accepted_events"]
        return accepted

    def processor_start_cpu(self) -> float:
        """CPU seconds the processor spends starting up with nothing to consume (once).

        A processor consumes from its first second, before it answers ready: its drain CPU
        is counted from the spawn, less this. Measured while the queue is empty.
        """
        if self._processor_start_cpu is None:
            with running(self.stack.processor()) as idle:
                self._processor_start_cpu = cpu_seconds(idle.pid) or 0.0
        return self._processor_start_cpu

    def drain(self, key: str, how: str, name: str | None = None) -> float:
        """Start the processor on the queued backlog; measure until stored or the bound."""
        plan, stack = self.plan, self.stack
        backlog = self.queued
        messages = queue_depth(stack.rabbitmq_url)
        say(f"[{self.system}] processor drains {backlog:,} events {how} ({messages:,} messages)")
        start_cpu = self._processor_start_cpu or 0.0
        meter = stack.meter()  # the database and the broker, from before the processor runs
        with running(stack.processor()) as processor:
            samples = wait_stored(
                processor, stack.spec.stored_metric, backlog, plan.drain_within, "drain"
            )
            stored = int(samples[-1][1])
            spent = (cpu_seconds(processor.pid) or 0.0) - start_cpu
            cpu = meter.per_event_us(dict.fromkeys(("db", "mq"), stored))
            if stored:
                cpu["proc"] = spent / stored * 1e6
        rate = drain_rate(samples)
        note = f"backlog {backlog:,} events in {messages:,} messages"
        if stored < backlog:
            note += f", {stored:,} stored in the {plan.drain_within:.0f} s bound"
        self.put(
            key,
            name or f"processor drain, events {how}",
            "events/s",
            Measure(rate, cpu_us=cpu, note=note),
        )
        insert = self.report.get("bare_insert", self.system)
        if key in ("drain_single", "drain_batch") and insert and insert.value:
            self.put(
                f"{key}_ratio",
                f"  ... drain / bare insert_many, events {how}",
                "ratio",
                Measure(rate / insert.value),
            )
        self.leave_queue_empty()
        return rate

    def settle_database(self, within: float = SETTLE_SECONDS) -> str:
        """Wait until our database server is idle; a note when that took a while.

        SecantusDB runs a query to its end after the client gave up on it, so slow reads
        leave work behind that would slow the next phase.
        """
        pid = self.stack.pids.get("db")
        started = time.perf_counter()
        last = cpu_seconds(pid)
        while last is not None and time.perf_counter() - started < within:
            time.sleep(1)
            now = cpu_seconds(pid)
            if now is None or now - last < IDLE_CPU_SECONDS:
                break
            last = now
        busy = time.perf_counter() - started
        if busy >= within:
            say(f"  the database is still busy after {within:.0f} s")
            return f"database still busy {within:.0f} s after the previous phase"
        return f"database busy {busy:.0f} s after the previous phase" if busy > 2 else ""

    def leave_queue_empty(self) -> None:
        """Purge what a phase left in the queue (its processor is stopped by now)."""
        left = purge_queue(self.stack.rabbitmq_url)
        if left:
            say(f"  purged {left:,} messages left in the queue")
        self.queued = 0

    def mixed(self, ingest: Service) -> None:
        """Single POSTs at a fixed rate while the processor drains a backlog."""
        plan, stack = self.plan, self.stack
        say(f"[{self.system}] {plan.mixed_rate:,.0f} single POSTs/s while the processor drains")
        batch_drain = self.report.get("drain_batch", self.system)
        rate = batch_drain.value if batch_drain and batch_drain.value else 1000.0
        # Enough backlog to keep the processor busy for the whole phase, within bounds.
        backlog = int(min(max(rate * (plan.mixed_seconds + 5), 2_000), 200_000))
        queued = self.post_backlog(ingest, backlog)
        with running(stack.processor()) as processor:
            meter = stack.meter(ingest=ingest, proc=processor)
            result = loadgen(
                ingest.port,
                f"{plan.mixed_rate:,.0f}/s while draining",
                duration=plan.mixed_seconds,
                rate=plan.mixed_rate,
                concurrency=plan.single_connections,
                event_type="bench_mixed",
            )
            left = queue_depth(stack.rabbitmq_url)
            stored = int(processor.metric(stack.spec.stored_metric) or 0)
            accepted = result["accepted_events"]
            cpu = meter.per_event_us(
                {"ingest": accepted, "redis": accepted, "proc": stored, "db": stored}
            )
        note = f"backlog {queued:,}; {stored:,} stored meanwhile"
        if left == 0:
            note += "; the backlog ran out before the end"
        self.put(
            "mixed",
            f"{plan.mixed_rate:,.0f} single POSTs/s, open loop, processor draining",
            "events/s",
            http_measure(result, cpu, note),
        )
        self.leave_queue_empty()

    def end_to_end(self, ingest: Service) -> None:
        """Single POSTs at 1,000/s with the processor running; then wait until stored."""
        plan, stack = self.plan, self.stack
        say(f"[{self.system}] end to end: {plan.e2e_rate:,.0f} single POSTs/s, open loop")
        with running(stack.processor()) as processor:
            meter = stack.meter(ingest=ingest, proc=processor)
            result = loadgen(
                ingest.port,
                "end to end",
                duration=plan.e2e_seconds,
                rate=plan.e2e_rate,
                concurrency=plan.single_connections,
                event_type="bench_e2e",
            )
            accepted = result["accepted_events"]
            samples = wait_stored(
                processor, stack.spec.stored_metric, accepted, plan.e2e_wait, "end to end", 0.25
            )
            stored = int(samples[-1][1])
            cpu = meter.per_event_us(
                {"ingest": accepted, "redis": accepted, "proc": stored, "db": stored}
            )
        name = f"end to end {plan.e2e_rate:,.0f}/s x {plan.e2e_seconds:.0f} s, single POSTs"
        self.put(
            "e2e_http",
            f"{name}: HTTP",
            "events/s",
            http_measure(result, cpu, f"{accepted:,} of {result['sent']:,} accepted"),
        )
        self.put(
            "e2e_stored",
            "  ... processed_at - received_at, from the stored documents",
            "events",
            stored_measure(stack, "bench_e2e", accepted, plan.e2e_wait),
        )
        self.leave_queue_empty()

    # -- issue 16: the refusal path ------------------------------------------------------

    def refusals(self) -> None:
        """One client over its limit at 1,000 req/s beside one under it at 100 req/s."""
        plan, stack = self.plan, self.stack
        limit = f"{plan.refusal_limit}/minute"
        say(f"[{self.system}] refusal path, RATE_LIMIT={limit}")
        good_options: dict[str, float | int | str] = {
            "duration": plan.refusal_seconds,
            "rate": plan.good_rate,
            "concurrency": 8,
            "source": GOOD_CLIENT,
            "event_type": "bench_good",
        }
        abusive_options: dict[str, float | int | str] = {
            "duration": plan.refusal_seconds,
            "rate": plan.abusive_rate,
            "concurrency": plan.single_connections,
            "source": ABUSIVE_CLIENT,
            "event_type": "bench_abuse",
        }
        with running(stack.ingest(rate_limit=limit)) as ingest:
            # A fresh process answers its first requests slowly: warm it up from elsewhere.
            loadgen(
                ingest.port,
                "warm-up",
                duration=30,
                concurrency=8,
                max_requests=400,
                source=WARM_UP_CLIENT,
                event_type="bench_warm_up",
            )
            meter = stack.meter(ingest=ingest)
            alone = loadgen(ingest.port, "good client alone", **good_options)
            spent = meter.seconds()
            per_accept = spent.get("ingest", 0.0) / max(1, alone["accepted_requests"])
            accepted = alone["accepted_events"]
            self.put(
                "good_alone",
                f"refusals ({limit}): good client {plan.good_rate:,.0f}/s alone",
                "events/s",
                http_measure(alone, meter.per_event_us({"ingest": accepted, "redis": accepted})),
            )
            # The abuser spends its budget first (closed loop), then stays over its limit.
            loadgen(
                ingest.port,
                "abuser spends its budget",
                duration=120,
                concurrency=plan.single_connections,
                max_requests=plan.refusal_limit + 100,
                source=ABUSIVE_CLIENT,
                event_type="bench_abuse",
            )
            meter = stack.meter(ingest=ingest)
            abuse = loadgen(ingest.port, "abuser alone", **abusive_options)
            spent = meter.seconds()
            refused = abuse["refused"]
            cpu: dict[str, float] = {}
            if refused:
                # What the few accepted requests cost is taken off at the good client's rate.
                own = spent.get("ingest", 0.0) - abuse["accepted_requests"] * per_accept
                cpu = {"ingest": own / refused * 1e6}
                if "redis" in spent:
                    cpu["redis"] = spent["redis"] / refused * 1e6
            self.put(
                "abuser",
                f"  ... abuser {plan.abusive_rate:,.0f}/s over its limit, alone: refusals",
                "429/s",
                Measure(
                    refused / abuse["elapsed"] if abuse["elapsed"] else 0.0,
                    abuse["p50_ms"],
                    abuse["p99_ms"],
                    cpu,
                    f"{abuse['accepted_requests']:,} of {abuse['sent']:,} accepted; CPU per 429",
                ),
            )
            both, good = loadgens(
                (ingest.port, "abuser", abusive_options),
                (ingest.port, "good client beside the abuser", good_options),
            )
        ratio = good["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else math.inf
        self.put(
            "good_with",
            f"  ... good client {plan.good_rate:,.0f}/s beside the abuser",
            "events/s",
            http_measure(
                good, {}, f"p99 {ratio:.2f} x alone; abuser meanwhile {both['refused']:,} x 429"
            ),
        )
        self.leave_queue_empty()

    # -- issue 18 and issue 17 item 6: data size and reads ----------------------------------

    def insert_rate_by_size(self, ingest: Service) -> None:
        """The processor's drain rate with 0, 100k, 250k events already stored."""
        plan, stack = self.plan, self.stack
        reset_activities(stack)
        for level in plan.levels:
            missing = level - stored_count(stack)
            if missing > 0:
                say(f"[{self.system}] filling the collection to {level:,} events")
                fill(stack, missing, plan.fill_users, seed=level)
            self.queued = self.post_backlog(ingest, plan.level_backlog)
            self.drain(
                f"drain_at_{level}",
                f"posted in batches, {level:,} stored before",
                f"processor drain of {plan.level_backlog:,} events at {level // 1000:,}k stored",
            )

    def reads(self, ingest: Service) -> None:
        """Timeline pages of 50, one at a time, users with and without events."""
        plan, stack = self.plan, self.stack
        stored = stored_count(stack)
        say(f"[{self.system}] timeline reads at {stored:,} stored events")
        for key, prefix, whose in (
            ("read_with", FILL_USER_PREFIX, "users with events"),
            ("read_without", NO_EVENTS_USER_PREFIX, "users without events"),
        ):
            settled = self.settle_database()
            result = loadgen(
                ingest.port,
                f"reads, {whose}",
                duration=30.0,  # bound: a read the server gives up on takes 5 s
                concurrency=1,
                max_requests=plan.reads,
                read_prefix=prefix,
                read_users=plan.fill_users,
                api_key=READ_API_KEY,
            )
            measure = http_measure(result, {}, settled)
            measure.value = result["max_ms"]
            self.put(
                key,
                f"read page of 50, {whose}, {stored // 1000:,}k stored, 1 conn",
                "ms max",
                measure,
            )

    def write_path_beside_reads(self, ingest: Service) -> None:
        """Single POSTs at a fixed rate, alone and beside concurrent timeline readers."""
        plan, stack = self.plan, self.stack
        say(f"[{self.system}] write path alone and beside {plan.readers} readers")
        post: dict[str, float | int | str] = {
            "duration": plan.rw_seconds,
            "rate": plan.rw_rate,
            "concurrency": 32,
        }
        read: dict[str, float | int | str] = {
            "duration": plan.rw_seconds,
            "concurrency": plan.readers,
            "read_prefix": FILL_USER_PREFIX,
            "read_users": plan.fill_users,
            "api_key": READ_API_KEY,
            "source": READER_CLIENT,
        }
        name = f"{plan.rw_rate:,.0f} single POSTs/s, open loop"
        settled = self.settle_database()
        with running(stack.processor()) as processor:
            metric = stack.spec.stored_metric
            alone = loadgen(ingest.port, "POSTs alone", **post, event_type="bench_rw_alone")
            stored = alone["accepted_events"]
            wait_stored(processor, metric, stored, STORED_WAIT_SECONDS, "POSTs")
            beside, readers = loadgens(
                (ingest.port, "POSTs beside readers", {**post, "event_type": "bench_rw_reads"}),
                (ingest.port, f"{plan.readers} readers", read),
            )
            stored += beside["accepted_events"]
            wait_stored(processor, metric, stored, STORED_WAIT_SECONDS, "POSTs")
        for key, label, result, event_type in (
            ("rw_alone", f"{name}, no reads", alone, "bench_rw_alone"),
            ("rw_reads", f"{name}, {plan.readers} readers", beside, "bench_rw_reads"),
        ):
            note = settled if key == "rw_alone" else ""
            self.put(f"{key}_http", f"{label}: HTTP", "events/s", http_measure(result, {}, note))
            self.put(
                f"{key}_stored",
                "  ... processed_at - received_at",
                "events",
                stored_measure(stack, event_type, result["accepted_events"], STORED_WAIT_SECONDS),
            )
        measure = http_measure(readers, {})
        self.put(
            "rw_readers",
            f"  ... the {plan.readers} readers (closed loop), pages of 50",
            "reads/s",
            measure,
        )
        self.leave_queue_empty()
