"""Operator mistakes stop a service at start-up with one line naming the cause and variable.

Each service is started as a process against the machine's RabbitMQ with a vhost that does
not exist, a wrong password, or a user of the test's own without permissions, and against a
Redis of the test's own that requires a password. None of this touches the shared node's
other vhosts or users, nor the shared Redis.
"""

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from activity_testing.processes import RedisServer, ServiceProcess, free_port
from activity_testing.rabbitmq import rabbit_user, vhost_of, with_credentials, with_vhost

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

# A refused start-up exits within this (the process's own start takes most of it).
EXIT_BOUND_SECONDS = 60.0
SERVICES = ["ingest", "processor"]

StartRefused = Callable[[str, Mapping[str, str]], tuple[int, str]]


@pytest.fixture
def start_refused(stack_env: dict[str, str], tmp_path: Path) -> StartRefused:
    """Start a service with `env` on top of the test's stack; return its exit code and log."""

    def start(module: str, env: Mapping[str, str]) -> tuple[int, str]:
        merged = {**stack_env, **env}
        port = int(merged["INGEST_PORT" if module == "ingest" else "PROCESSOR_PORT"])
        stderr = tmp_path / f"{module}-{uuid.uuid4().hex[:8]}.log"
        service = ServiceProcess(module, merged, port, stderr=stderr)
        started = time.monotonic()
        try:
            with pytest.raises(RuntimeError, match="exited with"):
                service.start(timeout=EXIT_BOUND_SECONDS)
        finally:
            service.stop()
        assert time.monotonic() - started < EXIT_BOUND_SECONDS
        assert service.process is not None
        return service.process.returncode, stderr.read_text()

    return start


def assert_one_clear_line(log: str, line: str) -> None:
    """`line` is logged once, as the cause, with no traceback around it."""
    assert log.count(line) == 1, log
    assert "Traceback" not in log, log
    assert "InvalidFrameError" not in log, log


@pytest.fixture
def password_only_the_test_knows() -> str:
    return f"secret-{uuid.uuid4().hex}"


@pytest.fixture
def user_without_permissions(password_only_the_test_knows: str) -> Iterator[str]:
    with rabbit_user(password_only_the_test_knows) as user:
        yield user


@pytest.mark.parametrize("module", SERVICES)
def test_a_missing_vhost_stops_the_service_naming_it(
    start_refused: StartRefused, rabbit_url: str, module: str
) -> None:
    missing = f"event-tracker-missing-{uuid.uuid4().hex[:12]}"  # never created
    code, log = start_refused(module, {"RABBITMQ_URL": with_vhost(rabbit_url, missing)})
    assert code != 0
    assert_one_clear_line(
        log, f"RabbitMQ refused the connection: vhost '{missing}' does not exist (RABBITMQ_URL)"
    )


@pytest.mark.parametrize("module", SERVICES)
def test_a_wrong_password_stops_the_service_without_showing_it(
    start_refused: StartRefused, rabbit_url: str, password_only_the_test_knows: str, module: str
) -> None:
    url = with_credentials(rabbit_url, "guest", password_only_the_test_knows)
    code, log = start_refused(module, {"RABBITMQ_URL": url})
    assert code != 0
    assert_one_clear_line(
        log,
        "RabbitMQ refused the connection: authentication failed for user 'guest': wrong"
        " password or unknown user (RABBITMQ_URL)",
    )
    assert password_only_the_test_knows not in log


@pytest.mark.parametrize("module", SERVICES)
def test_a_user_without_permissions_on_the_vhost_stops_the_service(
    start_refused: StartRefused,
    rabbit_url: str,
    user_without_permissions: str,
    password_only_the_test_knows: str,
    module: str,
) -> None:
    url = with_credentials(rabbit_url, user_without_permissions, password_only_the_test_knows)
    code, log = start_refused(module, {"RABBITMQ_URL": url})
    assert code != 0
    assert_one_clear_line(
        log,
        f"RabbitMQ refused the connection: user '{user_without_permissions}' has no"
        f" permissions on vhost '{vhost_of(rabbit_url)}' (RABBITMQ_URL)",
    )
    assert password_only_the_test_knows not in log


def test_an_unreachable_broker_still_fails_start_up_as_before(
    start_refused: StartRefused, rabbit_url: str
) -> None:
    """Nothing listening is not a refusal: it exits at once, as it always did, unexplained."""
    url = rabbit_url.replace(":5672/", f":{free_port()}/")
    assert url != rabbit_url
    code, log = start_refused("ingest", {"RABBITMQ_URL": url})
    assert code != 0
    assert "Connection refused" in log
    assert "refused the connection:" not in log


def test_a_wrong_redis_password_stops_ingest(
    start_refused: StartRefused, password_only_the_test_knows: str
) -> None:
    with RedisServer(password=password_only_the_test_knows) as redis_server:
        wrong = f"wrong-{uuid.uuid4().hex}"
        code, log = start_refused("ingest", {"REDIS_URL": redis_server.url_with(wrong)})
        assert code != 0
        assert_one_clear_line(
            log,
            "Redis refused the credentials: authentication failed for user 'default' (REDIS_URL)",
        )
        assert wrong not in log

        code, log = start_refused("ingest", {"REDIS_URL": redis_server.url_with(None)})
        assert code != 0
        assert_one_clear_line(
            log,
            "Redis refused the credentials: it requires a password and the URL gives none"
            " (REDIS_URL)",
        )


@pytest.mark.parametrize("module", SERVICES)
@pytest.mark.parametrize(
    ("plan_file", "env", "line"),
    [
        (
            None,
            {"TRACKING_PLAN_ENFORCEMENT": "strict"},
            "TRACKING_PLAN_ENFORCEMENT: Input should be",
        ),
        (None, {"TRACKING_PLAN_UNPLANNED": "ignore"}, "TRACKING_PLAN_UNPLANNED: Input should be"),
        ("signup.yaml", {}, "TRACKING_PLAN_DIR: signup.yaml: version: String should match"),
        (
            "",
            {"TRACKING_PLAN_DIR": "/nonexistent/plan"},
            "/nonexistent/plan: not a readable folder",
        ),
    ],
)
def test_a_bad_tracking_plan_or_mode_stops_the_service_naming_it(
    start_refused: StartRefused,
    tmp_path: Path,
    module: str,
    plan_file: str | None,
    env: dict[str, str],
    line: str,
) -> None:
    if plan_file:
        (tmp_path / "plan").mkdir()
        (tmp_path / "plan" / plan_file).write_text(
            "event_type: signup\nversion: '1.0'\ndescription: d\nexamples: [{}]\n"
            "metadata: {type: object}\n"
        )
        env = {**env, "TRACKING_PLAN_DIR": str(tmp_path / "plan")}
    code, log = start_refused(module, env)
    assert code != 0
    assert line in log, log
    assert "Traceback" not in log, log
