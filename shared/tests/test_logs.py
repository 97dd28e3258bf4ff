"""Log lines: extra fields in the order the code gave them, in both formats."""

import json
import logging

from activity_contract.logs import ConsoleFormatter, JsonFormatter

FIELDS = {f"field_{letter}": index for index, letter in enumerate("qwertyuiopasdfgh")}


def record_with_fields() -> logging.LogRecord:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__.update(FIELDS)
    return record


def test_json_lines_keep_the_order_of_the_extra_fields() -> None:
    entry = json.loads(JsonFormatter().format(record_with_fields()))
    assert list(entry)[4:] == list(FIELDS)


def test_console_lines_keep_the_order_of_the_extra_fields() -> None:
    line = ConsoleFormatter().format(record_with_fields())
    pairs = line.split("hello ", 1)[1].split(" ")
    assert pairs == [f"{key}={value}" for key, value in FIELDS.items()]
