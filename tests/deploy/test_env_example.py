"""env.example lists every variable the services read, with the code's default."""

import re
from enum import Enum
from pathlib import Path

from pydantic_settings import BaseSettings

from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def documented() -> dict[str, tuple[bool, str]]:
    """Variable -> (commented out, value)."""
    found = {}
    for line in (ROOT / "env.example").read_text().splitlines():
        if match := LINE.match(line.strip()):
            found[match[2]] = (bool(match[1]), match[3])
    return found


def as_env(value: object) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_is_documented_with_its_default() -> None:
    listed = documented()
    settings_classes: tuple[type[BaseSettings], ...] = (IngestSettings, ProcessorSettings)
    for settings_class in settings_classes:
        for name, field in settings_class.model_fields.items():
            variable = name.upper()
            assert variable in listed, f"env.example lacks {variable}"
            commented, value = listed[variable]
            default = field.get_default(call_default_factory=True)
            if default is None:
                assert commented, f"{variable} has no default: env.example must comment it out"
            else:
                assert not commented, variable
                assert value == as_env(default), f"{variable}: {value!r} != {default!r}"
