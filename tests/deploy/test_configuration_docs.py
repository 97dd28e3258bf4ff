"""docs/configuration.md is the one table of variables: it matches the settings classes."""

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

from .test_env_example import as_env

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \| ([^|]*) \|")


def table() -> dict[str, tuple[str, str]]:
    """Variable -> (default cell, service cell)."""
    rows = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        if match := ROW.match(line):
            rows[match[1]] = (match[2].strip(), match[3].strip())
    return rows


def test_every_setting_is_in_the_table_with_its_default_and_service() -> None:
    rows = table()
    services: dict[str, set[str]] = {}
    classes: dict[str, type[BaseSettings]] = {
        "ingest": IngestSettings,
        "processor": ProcessorSettings,
    }
    for service, settings_class in classes.items():
        for name, field in settings_class.model_fields.items():
            variable = name.upper()
            assert variable in rows, f"docs/configuration.md lacks {variable}"
            services.setdefault(variable, set()).add(service)
            default = field.get_default(call_default_factory=True)
            cell = rows[variable][0]
            if default is None:
                assert cell == "unset", variable
            elif default in ([], ""):
                assert cell == "empty", variable
            else:
                assert cell == f"`{as_env(default)}`", f"{variable}: {cell} != {default!r}"
    for variable, where in services.items():
        expected = "both" if len(where) == 2 else where.pop()
        assert rows[variable][1] == expected, variable
    assert set(rows) == set(services), "the table lists variables no service reads"
