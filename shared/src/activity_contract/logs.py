r"""Log setup both services use: console or one JSON object per line (design §11).

Log lines carry what clients sent (user ids, paths, header values, exception messages), so
neither format writes a character that is not printable: no line break a client could use
to forge a record, no terminal escape sequence, nothing invisible. JSON escapes them as
JSON does; the console format writes them as Python escapes (`\n`, `\x1b`, `\u2028`).
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Continuation lines (a traceback's) start with this, so a line that does not is a record.
_CONTINUATION = "    "


def printable(text: str) -> str:
    """`text` with every character `str.isprintable` refuses written as a Python escape.

    Those are the control characters (C0, DEL, C1), format characters (zero-width,
    bidirectional overrides), line and paragraph separators, and spaces other than ' '.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    # In the order they were given (a set difference would shuffle them per process).
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES}


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the record's `extra` key/values."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_extra_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # ensure_ascii (the default, spelled out): every character outside printable ASCII
        # is escaped, control characters, DEL and line separators included.
        return json.dumps(entry, default=str, ensure_ascii=True)


class ConsoleFormatter(logging.Formatter):
    """Human-readable line followed by the record's `extra` key=value pairs.

    One line per record, every unprintable character escaped; a traceback follows on lines
    of its own, each indented and escaped the same way.
    """

    def __init__(self) -> None:
        """Use a timestamped, levelled line."""
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its extra fields appended, then its traceback, if any."""
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extras = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items())
        lines = [printable(f"{line} {extras}" if extras else line)]
        # Formatted here rather than taken from `record.exc_text`: another handler's
        # formatter may have left its own, unescaped text there.
        if record.exc_info:
            lines += _continuation(self.formatException(record.exc_info))
        if record.stack_info:
            lines += _continuation(self.formatStack(record.stack_info))
        return "\n".join(lines)


def _continuation(text: str) -> list[str]:
    return [_CONTINUATION + printable(line) for line in text.split("\n")]


def configure_logging(level: str, log_format: Literal["console", "json"]) -> None:
    """Send every logger's records to stderr in the chosen format."""
    # Neither format shows threads, processes or the caller's source line: not collecting
    # them makes every record cheaper (the Python docs' "Optimization" advice).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # skips the stack walk per record
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
