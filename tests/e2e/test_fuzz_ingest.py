"""Fuzz ingest's HTTP API from its own OpenAPI schema (schemathesis), against real RabbitMQ.

No answer may be a 5xx other than 503, and every answer must match the schema. The schema
is the one the app publishes at `/openapi.json`, built here without connecting anything;
the requests go to an ingest process on this test's own vhost.
"""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from activity_contract.testing import ServiceProcess
from ingest.app import create_app
from ingest.settings import IngestSettings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MAX_EXAMPLES = 60

# Building the app opens no connection; its broker connects only in the lifespan.
schema = schemathesis.openapi.from_dict(create_app(IngestSettings.model_construct()).openapi())


def no_server_error_but_503(ctx: Any, response: Any, case: Any) -> bool | None:
    """503 (broker unavailable) is an answer the contract promises; any other 5xx is a bug."""
    assert response.status_code < 500 or response.status_code == 503, (
        f"{response.status_code} from {case.method} {case.path}: {response.text[:200]}"
    )
    return None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_ingest_answers_match_its_schema(case: Any, ingest: ServiceProcess) -> None:
    case.call_and_validate(
        base_url=ingest.base_url,
        # Schema-valid is not always acceptable: JSON Schema cannot say "no control
        # characters", "at most 24 h ahead" or "16 KiB serialized", so a 422 for such a
        # body is right. Schema-invalid bodies must still be refused (negative checks).
        excluded_checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.positive_data_acceptance,
        ],
        additional_checks=[no_server_error_but_503],
    )
