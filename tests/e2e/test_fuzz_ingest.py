"""Fuzz ingest's HTTP API from its own OpenAPI schema (schemathesis), against real services.

No answer may be a 5xx other than 503, and every answer must match the schema. The schema
is the one the app publishes at `/openapi.json`, built here without connecting anything;
the requests go to an ingest process on this test's own vhost, database and Redis keys.
"""

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from activity_testing.fuzzing import DERANDOMIZE, seeded
from activity_testing.processes import ServiceFactory, ServiceProcess
from ingest.app import create_app
from ingest.settings import IngestSettings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MAX_EXAMPLES = 60
# The schema declares bearer auth on every API route, so the service runs with keys set.
API_KEY = "fuzz-test-key"

# Building the app opens no connection (its clients connect in the lifespan).
schema = schemathesis.openapi.from_dict(
    create_app(
        IngestSettings(
            _env_file=None,
            ingest_api_keys=[API_KEY],
            read_api_keys=[API_KEY],
            admin_api_keys=[API_KEY],
        )
    ).openapi()
)


@pytest.fixture
def secured_ingest(ingest_with: ServiceFactory) -> Iterator[ServiceProcess]:
    """Ingest with API keys required on the write, read and erasure API."""
    keys = ("INGEST_API_KEYS", "READ_API_KEYS", "ADMIN_API_KEYS")
    with ingest_with(dict.fromkeys(keys, API_KEY)) as service:
        yield service


def no_server_error_but_503(ctx: Any, response: Any, case: Any) -> bool | None:
    """503 (broker or database unavailable) is a promised answer; any other 5xx is a bug."""
    assert response.status_code < 500 or response.status_code == 503, (
        f"{response.status_code} from {case.method} {case.path}: {response.text[:200]}"
    )
    return None


@schema.parametrize()
@seeded
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=DERANDOMIZE,  # FUZZ_SEED=n: other examples (activity_testing.fuzzing)
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_ingest_answers_match_its_schema(case: Any, secured_ingest: ServiceProcess) -> None:
    case.call_and_validate(
        base_url=secured_ingest.base_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        # Schema-valid is not always acceptable: JSON Schema cannot say "no control
        # characters", "at most 24 h ahead" or "16 KiB serialized", so a 422 for such a
        # body is right. Schema-invalid bodies must still be refused (negative checks).
        excluded_checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.positive_data_acceptance,
        ],
        additional_checks=[no_server_error_but_503],
    )
