"""The Compose files, their config files and the Dockerfile, read carefully (no engine here)."""

import re
import shutil
import subprocess
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from ingest.http.file_limits import RESERVED_DESCRIPTORS
from ingest.settings import IngestSettings
from processor.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_CONFIG = ROOT / "deploy" / "cluster"
INFRASTRUCTURE = ("rabbitmq", "mongo", "redis")
RABBITMQ_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")
MONGO_MEMBERS = ("mongo-1", "mongo-2", "mongo-3")
SETTINGS: dict[str, type[BaseSettings]] = {"ingest": IngestSettings, "processor": ProcessorSettings}


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load("docker-compose.cluster.yml")


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


def settings_from(settings_class: type[BaseSettings], environment: dict[str, str]) -> Any:
    """`settings_class` built from `environment` alone (no process environment, no .env)."""

    class FromComposeOnly(settings_class):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            **_: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    return FromComposeOnly(**{name.lower(): value for name, value in environment.items()})


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.cluster.yml"])
@pytest.mark.parametrize("service", ["ingest", "processor"])
def test_service_environment_is_settings_the_service_reads(compose_file: str, service: str) -> None:
    environment = load(compose_file)["services"][service]["environment"]
    settings_class = SETTINGS[service]
    unknown = {name for name in environment if name.lower() not in settings_class.model_fields}
    assert not unknown, f"{compose_file}: {service} does not read {sorted(unknown)}"
    settings_from(settings_class, environment)  # and every value is valid


@pytest.mark.parametrize("compose_file", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_ingest_may_open_files_for_its_connection_cap(compose_file: str) -> None:
    service = load(compose_file)["services"]["ingest"]
    environment = service.get("environment", {})
    default_cap = IngestSettings.model_fields["ingest_max_connections"].default
    cap = int(environment.get("INGEST_MAX_CONNECTIONS", default_cap))
    nofile = service["ulimits"]["nofile"]
    assert nofile["soft"] == nofile["hard"] >= cap + RESERVED_DESCRIPTORS


def one_shot_services(compose: dict[str, Any]) -> set[str]:
    """Services others wait for to finish (`service_completed_successfully`)."""
    return {
        dependency
        for service in compose["services"].values()
        for dependency, condition in service.get("depends_on", {}).items()
        if condition["condition"] == "service_completed_successfully"
    }


def test_cluster_every_long_running_service_has_a_health_check(cluster: dict[str, Any]) -> None:
    one_shots = one_shot_services(cluster)
    assert one_shots == {"mongo-init"}
    for name, service in cluster["services"].items():
        if name in one_shots:
            assert "healthcheck" not in service
            assert service.get("restart", "no") == "no", name
        else:
            assert service["healthcheck"]["test"], name
            assert service["restart"] == "unless-stopped", name


def test_cluster_dependencies_wait_until_healthy(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    one_shots = one_shot_services(cluster)
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency in one_shots else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"
    database = {*MONGO_MEMBERS, "mongo-init"}
    assert set(services["ingest"]["depends_on"]) == {"rabbitmq-lb", "redis", *database}
    assert set(services["processor"]["depends_on"]) == {"rabbitmq-lb", *database}
    assert set(services["rabbitmq-lb"]["depends_on"]) == set(RABBITMQ_NODES)
    assert set(services["mongo-init"]["depends_on"]) == set(MONGO_MEMBERS)
    assert set(services["ingest-lb"]["depends_on"]) == {"ingest"}


def test_cluster_rabbitmq_nodes_form_one_cluster_with_quorum_queues_on_all_three(
    cluster: dict[str, Any],
) -> None:
    services = cluster["services"]
    config = (CLUSTER_CONFIG / "rabbitmq.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in config
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", config, re.M)
    assert listed == [f"rabbit@{node}" for node in RABBITMQ_NODES]
    assert re.search(r"^quorum_queue\.initial_cluster_size = 3$", config, re.M)
    cookies = set()
    for node in RABBITMQ_NODES:
        service = services[node]
        assert service["image"].startswith("rabbitmq:4")
        assert service["hostname"] == node
        assert (
            "./deploy/cluster/rabbitmq.conf:/etc/rabbitmq/conf.d/30-cluster.conf:ro"
            in (service["volumes"])
        )
        data = service["volumes"][0].split(":")[0]
        assert data in cluster["volumes"]
        cookies.add(service["environment"]["RABBITMQ_ERLANG_COOKIE"])
        assert "cluster_status" in service["healthcheck"]["test"][1]
    assert len(cookies) == 1


def test_cluster_services_reach_rabbitmq_through_the_health_checked_balancer(
    cluster: dict[str, Any],
) -> None:
    haproxy = (CLUSTER_CONFIG / "haproxy-amqp.cfg").read_text()
    assert re.search(r"^\s*mode tcp$", haproxy, re.M)
    assert re.search(r"^\s*default-server check .*on-marked-down shutdown-sessions", haproxy, re.M)
    for node in RABBITMQ_NODES:
        assert re.search(rf"^\s*server {node} {node}:5672$", haproxy, re.M), node
    mount = cluster["services"]["rabbitmq-lb"]["volumes"][0]
    assert mount == "./deploy/cluster/haproxy-amqp.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    for name in ("ingest", "processor"):
        assert "@rabbitmq-lb:5672/" in cluster["services"][name]["environment"]["RABBITMQ_URL"]


def test_cluster_mongodb_is_a_replica_set_initiated_by_the_stack(cluster: dict[str, Any]) -> None:
    services = cluster["services"]
    for member in MONGO_MEMBERS:
        assert services[member]["command"] == ["mongod", "--replSet", "rs0", "--bind_ip_all"]
        assert "isWritablePrimary" in " ".join(services[member]["healthcheck"]["test"])
    script = (CLUSTER_CONFIG / "mongo-init-replica-set.js").read_text()
    assert 'SET_NAME = "rs0"' in script
    assert 'MEMBERS = ["mongo-1:27017", "mongo-2:27017", "mongo-3:27017"]' in script
    assert "replSetInitiate" in script
    init = services["mongo-init"]
    assert init["volumes"] == [
        "./deploy/cluster/mongo-init-replica-set.js:/scripts/mongo-init-replica-set.js:ro"
    ]
    assert init["command"][-1] == "/scripts/mongo-init-replica-set.js"
    for name in ("ingest", "processor"):
        url = services[name]["environment"]["MONGODB_URL"]
        assert url == "mongodb://mongo-1:27017,mongo-2:27017,mongo-3:27017/?replicaSet=rs0"


def test_cluster_ingest_replicas_trust_only_their_forwarding_balancer(
    cluster: dict[str, Any],
) -> None:
    services = cluster["services"]
    ingest, balancer = services["ingest"], services["ingest-lb"]
    assert ingest["deploy"]["replicas"] >= 2
    assert "ports" not in ingest  # reached through ingest-lb only
    assert balancer["ports"] == ["8000:8000"]
    haproxy = (CLUSTER_CONFIG / "haproxy-ingest.cfg").read_text()
    assert re.search(r"^\s*http-request del-header X-Forwarded-For$", haproxy, re.M)
    assert re.search(r"^\s*option forwardfor$", haproxy, re.M)
    assert re.search(r"^\s*option httpchk GET /health/ready$", haproxy, re.M)
    assert re.search(r"^\s*server-template ingest- \d+ ingest:8000 check ", haproxy, re.M)

    balancer_address = ip_address(balancer["networks"]["default"]["ipv4_address"])
    pool = cluster["networks"]["default"]["ipam"]["config"][0]
    assert balancer_address in ip_network(pool["subnet"])
    assert balancer_address not in ip_network(pool["ip_range"])  # never handed to a replica
    trusted = settings_from(IngestSettings, ingest["environment"]).trusted_proxies
    assert [balancer_address in network for network in trusted] == [True]
    assert all(network.num_addresses == 1 for network in trusted)


def test_cluster_runs_competing_processors(cluster: dict[str, Any]) -> None:
    assert cluster["services"]["processor"]["deploy"]["replicas"] >= 2
    assert "ports" not in cluster["services"]["processor"]


def test_cluster_builds_the_services_as_the_single_node_file_does(
    compose: dict[str, Any], cluster: dict[str, Any]
) -> None:
    for service in ("ingest", "processor"):
        assert cluster["services"][service]["build"] == compose["services"][service]["build"]


@pytest.mark.parametrize("config", ["haproxy-amqp.cfg", "haproxy-ingest.cfg"])
def test_cluster_haproxy_configuration_is_valid(config: str) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed: its configuration check cannot run")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(CLUSTER_CONFIG / config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
