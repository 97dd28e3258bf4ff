"""The observability files as the tests read them: rules, dashboard expressions, metric names.

`promtool` comes from Debian's `prometheus` package (scripts/test.sh fetches it when it is
missing, without installing the Prometheus server): `PROMTOOL` names it, or it is on PATH.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY = ROOT / "deploy" / "observability"
ALERTS = OBSERVABILITY / "alerts.yml"
ALERT_TESTS = OBSERVABILITY / "alerts_test.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "event-tracker.json"
# Grafana's range variable, as Prometheus sees it once Grafana has filled it in.
GRAFANA_RANGE = "$__rate_interval"

# PromQL words that are not metric names: operators, modifiers, aggregation clauses.
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?")


def promtool() -> str | None:
    """The promtool to run, or None."""
    return os.environ.get("PROMTOOL") or shutil.which("promtool")


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every query of the dashboard, with Grafana's variables as Prometheus gets them."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace(GRAFANA_RANGE, "5m")
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRINGS.sub('""', expression)
    text = _LABEL_LISTS.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", text)))
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1).lower() not in _KEYWORDS
    }


def exported_names(exposition: str) -> set[str]:
    """The series names a Prometheus text exposition can carry (also families with no sample)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            suffixes = {
                "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("", "_count", "_sum"),
            }
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
