"""Queue topology and the contract's independence from the services."""

import ast
from pathlib import Path

import activity_contract
from activity_contract.topology import (
    ACTIVITY_QUEUE,
    DEAD_LETTER_QUEUE,
    QueueType,
    activity_queues,
)


def test_quorum_queue_has_delivery_limit_and_dead_letters_to_the_dlq() -> None:
    dead_letter, main = activity_queues(QueueType.QUORUM, delivery_limit=7)
    assert dead_letter.name == DEAD_LETTER_QUEUE == "user_activities.dlq"
    assert main.name == ACTIVITY_QUEUE == "user_activities"
    assert main.arguments["x-queue-type"] == "quorum"
    assert main.arguments["x-delivery-limit"] == 7
    assert main.arguments["x-dead-letter-exchange"] == ""
    assert main.arguments["x-dead-letter-routing-key"] == DEAD_LETTER_QUEUE


def test_the_activity_queue_settles_what_it_cannot_deliver_by_itself() -> None:
    """Delivery limit, at-least-once dead-lettering and its required overflow, always."""
    dead_letter, main = activity_queues(QueueType.QUORUM, delivery_limit=2)
    assert dead_letter.arguments == {"x-queue-type": "quorum"}
    assert main.arguments["x-delivery-limit"] == 2
    assert main.arguments["x-dead-letter-strategy"] == "at-least-once"
    assert main.arguments["x-overflow"] == "reject-publish"


def test_quorum_is_the_only_queue_type() -> None:
    """Classic queues have neither a delivery limit nor at-least-once dead-lettering."""
    assert [queue_type.value for queue_type in QueueType] == ["quorum"]


def test_contract_imports_neither_service() -> None:
    package = Path(activity_contract.__file__).parent
    imported: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"ingest", "processor", "faststream", "fastapi", "beanie"}
    # Test helpers live in the test-only member `activity_testing`, not in what ships.
    assert "activity_testing" not in imported
    assert not (Path(activity_contract.__file__).parent / "testing.py").exists()
