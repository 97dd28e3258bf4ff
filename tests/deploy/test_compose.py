"""docker-compose.yml and the Dockerfile, read carefully since no engine runs here."""

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRASTRUCTURE = ("rabbitmq", "mongo", "redis")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_infrastructure_service_has_a_health_check_and_a_named_volume(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["rabbitmq"]["image"].endswith("-management")
    assert services["mongo"]["image"].startswith("mongo:")
    for name in INFRASTRUCTURE:
        assert services[name]["healthcheck"]["test"], name
        volume = services[name]["volumes"][0].split(":")[0]
        assert volume in compose["volumes"], name


def test_services_wait_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, needs in {"ingest": INFRASTRUCTURE, "processor": ("rabbitmq", "mongo")}.items():
        depends_on = services[name]["depends_on"]
        assert {dep: depends_on[dep]["condition"] for dep in needs} == dict.fromkeys(
            needs, "service_healthy"
        )
        assert services[name]["healthcheck"]["test"]
    assert "8000:8000" in services["ingest"]["ports"]
    assert "8001:8001" in services["processor"]["ports"]


def test_services_reach_the_containers_by_name(compose: dict[str, Any]) -> None:
    for name in ("ingest", "processor"):
        environment = compose["services"][name]["environment"]
        assert "@rabbitmq:5672" in environment["RABBITMQ_URL"]
        assert environment["MONGODB_URL"] == "mongodb://mongo:27017"
        assert environment["LOG_FORMAT"] == "json"
    assert "redis:6379" in compose["services"]["ingest"]["environment"]["REDIS_URL"]


def test_one_image_recipe_multi_stage_non_root_built_from_the_lock(
    compose: dict[str, Any],
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") >= 2
    assert "uv.lock" in dockerfile
    assert 'uv sync --frozen --no-dev --package "$SERVICE"' in dockerfile
    assert "\nUSER app" in dockerfile
    assert 'CMD ["event-tracker-service"]' in dockerfile
    for service in ("ingest", "processor"):
        build = compose["services"][service]["build"]
        assert build["context"] == "."
        assert "dockerfile" not in build  # the root Dockerfile
        assert build["args"]["SERVICE"] == service
        pyproject = (ROOT / "services" / service / "pyproject.toml").read_text()
        assert f'event-tracker-{service} = "{service}.__main__:main"' in pyproject
