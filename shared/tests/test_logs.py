"""Log lines: extra fields in the order the code gave them, one visible line per record
whatever a client sent, in both formats."""

import json
import logging
import sys

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


# A client's value that would end the line, start a forged one, colour the terminal, or
# hide characters: newline, carriage return, ANSI ESC, NUL, DEL, a C1 control (NEL), the
# Unicode line separator, a bidirectional override.
HOSTILE = "a\nb\r\x1b[31mc\x00d\x7fe\x85f\u2028g\u202eh"
VISIBLE = ("\\n", "\\r", "\\x1b[31m", "\\x00", "\\x7f", "\\x85", "\\u2028", "\\u202e")


def hostile_record() -> logging.LogRecord:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "got %s", (HOSTILE,), None)
    record.__dict__["user_id"] = HOSTILE
    record.__dict__["key\nforged"] = 1
    return record


def assert_one_visible_line(line: str) -> None:
    assert len(line.splitlines()) == 1
    assert line.isprintable(), [char for char in line if not char.isprintable()]


def test_console_lines_escape_every_control_character() -> None:
    line = ConsoleFormatter().format(hostile_record())
    assert_one_visible_line(line)
    escaped = "a\\nb\\r\\x1b[31mc\\x00d\\x7fe\\x85f\\u2028g\\u202eh"
    assert f"got {escaped} user_id={escaped} key\\nforged=1" in line
    assert all(escape in line for escape in VISIBLE)


def test_console_lines_keep_printable_text_as_it_is() -> None:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "café ✓ C:\\dir", None, None)
    assert ConsoleFormatter().format(record).endswith(": café ✓ C:\\dir")


def test_json_lines_escape_every_control_character() -> None:
    line = JsonFormatter().format(hostile_record())
    assert_one_visible_line(line)
    assert line.isascii()
    entry = json.loads(line)
    assert (entry["message"], entry["user_id"], entry["key\nforged"]) == (
        f"got {HOSTILE}",
        HOSTILE,
        1,
    )


def raised_with(message: str) -> logging.LogRecord:
    try:
        raise ValueError(message)
    except ValueError:
        return logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())


def test_a_console_traceback_cannot_forge_a_record_nor_colour_the_terminal() -> None:
    """The traceback's own lines follow its record indented; every other line break and
    control character inside it is escaped."""
    forged = "\n2026-01-01 00:00:00,000 INFO    ingest.access: forged\x1b[31m\u2028x"
    lines = ConsoleFormatter().format(raised_with(forged)).split("\n")
    assert lines[0].endswith(" ERROR   test: failed")
    assert len(lines) > 2
    assert all(line.startswith(" ") for line in lines[1:])
    assert all(line.isprintable() for line in lines)
    assert any("forged\\x1b[31m\\u2028x" in line for line in lines)


def test_a_json_traceback_stays_in_its_line() -> None:
    line = JsonFormatter().format(raised_with("x\ny\x1b[31m"))
    assert_one_visible_line(line)
    assert "ValueError: x\ny\x1b[31m" in json.loads(line)["exception"]
