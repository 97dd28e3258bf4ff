"""Queue topology (SPEC §5) and the contract's independence from the services."""

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


def test_classic_queue_still_dead_letters_but_has_no_delivery_limit() -> None:
    dead_letter, main = activity_queues(QueueType.CLASSIC, delivery_limit=5)
    assert main.arguments["x-queue-type"] == dead_letter.arguments["x-queue-type"] == "classic"
    assert main.arguments["x-dead-letter-routing-key"] == DEAD_LETTER_QUEUE
    assert "x-delivery-limit" not in main.arguments


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
