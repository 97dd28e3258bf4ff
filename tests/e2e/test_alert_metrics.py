"""Every metric the alert rules and the dashboard name is exported by what they scrape.

The services run as real processes against a private RabbitMQ node of this test's own with
the rabbitmq_prometheus plugin (the machine's broker is left as it is), configured as
Compose configures it (deploy/observability/rabbitmq-prometheus.conf) and scraped as
deploy/observability/prometheus.yml scrapes them: each service's /metrics and the node's.
An event is stored and a poison message dead-lettered first, so the queues and their
series exist.
"""

import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aio_pika
import httpx
import pytest

from activity_contract.topology import ACTIVITY_QUEUE, DEAD_LETTER_QUEUE
from activity_testing.events import event_payload
from activity_testing.processes import ServiceProcess, free_port
from activity_testing.promql import (
    OBSERVABILITY,
    alert_rules,
    dashboard_expressions,
    exported_names,
    metric_names,
)
from activity_testing.rabbit_nodes import RabbitCluster, missing_rabbitmq

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PROMETHEUS_CONF = OBSERVABILITY / "rabbitmq-prometheus.conf"
WaitUntil = Callable[..., Awaitable[bool]]
# Prometheus's own series for every scrape target.
SCRAPE_SERIES = {"up"}


@pytest.fixture
def prometheus_port() -> int:
    return free_port()


@pytest.fixture
def rabbit_url(prometheus_port: int) -> Iterator[str]:
    """Overrides the shared broker's vhost: a private node exporting Prometheus metrics."""
    if reason := missing_rabbitmq():
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="event-tracker-metrics-"))
    node_cluster = RabbitCluster(
        folder,
        size=1,
        plugins=["rabbitmq_prometheus"],
        config_lines=[
            f"prometheus.tcp.port = {prometheus_port}",
            "prometheus.tcp.ip = 127.0.0.1",
            *PROMETHEUS_CONF.read_text().splitlines(),
        ],
    )
    try:
        node_cluster.start()
        yield f"amqp://guest:guest@127.0.0.1:{node_cluster.nodes[0].amqp_port}/"
    finally:
        node_cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_every_metric_of_the_alerts_and_the_dashboard_is_exported(
    stack_env: dict[str, str],
    ingest: ServiceProcess,
    processor: ServiceProcess,
    rabbit_url: str,
    prometheus_port: int,
    wait_until: WaitUntil,
) -> None:
    processor.start()
    async with httpx.AsyncClient(timeout=30) as http:
        accepted = await http.post(f"{ingest.base_url}/api/v1/activities", json=event_payload())
        assert accepted.status_code == 202, accepted.text
        connection = await aio_pika.connect(rabbit_url)
        async with connection:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(b"not json", message_id="poison"), routing_key=ACTIVITY_QUEUE
            )

            async def dead_lettered() -> bool:
                queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
                return queue.declaration_result.message_count == 1

            assert await wait_until(dead_lettered, within=30), processor.tail()
        scraped = {
            "ingest": (await http.get(f"{ingest.base_url}/metrics")).text,
            "processor": (await http.get(f"{processor.base_url}/metrics")).text,
            "rabbitmq": (await http.get(f"http://127.0.0.1:{prometheus_port}/metrics")).text,
        }
    exported = SCRAPE_SERIES.union(*(exported_names(text) for text in scraped.values()))
    named = {f"alert {rule['alert']}": metric_names(rule["expr"]) for rule in alert_rules()} | {
        f"dashboard query {expr!r}": metric_names(expr) for expr in dashboard_expressions()
    }
    missing = {
        where: sorted(names - exported) for where, names in named.items() if names - exported
    }
    assert not missing, missing
    for queue in (ACTIVITY_QUEUE, DEAD_LETTER_QUEUE):
        assert f'queue="{queue}"' in scraped["rabbitmq"], queue
