"""The alert rules, their unit tests and the dashboard, checked by promtool; the Compose profile.

Whether every metric they name is exported is checked against real processes in
tests/e2e/test_alert_metrics.py.
"""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from activity_testing.promql import (
    ALERT_TESTS,
    ALERTS,
    DASHBOARD,
    OBSERVABILITY,
    ROOT,
    alert_rules,
    dashboard_expressions,
    metric_names,
    promtool,
)


def run_promtool(*args: str) -> str:
    tool = promtool()
    if tool is None:
        pytest.skip(
            "promtool not found: scripts/test.sh fetches it from Debian's prometheus package "
            "(or set PROMTOOL, or apt-get install prometheus)"
        )
    result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    assert "SUCCESS: 13 rules found" in run_promtool("check", "rules", str(ALERTS))
    run_promtool("test", "rules", str(ALERT_TESTS))


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules():
        outcomes = {
            bool(case["exp_alerts"]) for case in cases if case["alertname"] == rule["alert"]
        }
        assert outcomes == {True, False}, f"{rule['alert']}: needs a firing and a quiet case"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": expression}
                    for index, expression in enumerate(expressions)
                ],
            }
        ]
    }
    as_rules = tmp_path / "dashboard_rules.yml"
    as_rules.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(expressions)} rules found" in run_promtool(
        "check", "rules", str(as_rules)
    )


def test_metric_names_are_read_from_expressions() -> None:
    expression = (
        'sum by (le, handler) (rate(a_bucket{handler=~"/x.*"}[5m])) / ignoring(x) '
        "b_total offset 5m and on(instance) up > bool 2"
    )
    assert metric_names(expression) == {"a_bucket", "b_total", "up"}


def test_the_observability_profile_loads_the_rules_and_the_dashboard() -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana", "rabbitmq"):
        assert name == "rabbitmq" or services[name]["profiles"] == ["observability"], name
        for volume in services[name]["volumes"]:
            source, _, _ = volume.partition(":")
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/observability/alerts.yml"
    scrape = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert set(jobs) == {"event-tracker-ingest", "event-tracker-processor", "rabbitmq"}
    assert jobs["rabbitmq"].get("metrics_path", "/metrics") == "/metrics"
    rabbit_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["rabbitmq"]["volumes"]}
    assert rabbit_mounts["/etc/rabbitmq/enabled_plugins"].endswith("rabbitmq-enabled-plugins")
    assert rabbit_mounts["/etc/rabbitmq/conf.d/40-prometheus.conf"].endswith(
        "rabbitmq-prometheus.conf"
    )
    assert "rabbitmq_prometheus" in (OBSERVABILITY / "rabbitmq-enabled-plugins").read_text()
    assert DASHBOARD.parent.as_posix().endswith("grafana/dashboards")
