"""schemathesis over the published OpenAPI document, against a real daphne on
127.0.0.1: valid and invalid requests generated from the schema, each checked
for no 5xx, a status code, content type, headers and body the document
describes, a 4xx for every request the schema forbids, and no row written by a
request that was refused.

The qcluster of this stack is stopped first, so the web process is the only
writer and the row counts move only with requests. The SSE streams are left
out (their requests do not end); tests/e2e/test_streams_e2e.py covers them.
Bounded: FUZZ_EXAMPLES (default 60) per operation and mode, well under a minute.
"""

import os
import sqlite3

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.stack import make_stack

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
STREAMS = {"orderEvents", "allEvents"}
OPERATIONS = [
    "placeOrder",
    "getOrder",
    "retryOrder",
    "completeDelivery",
    "dashboardStats",
    "metricsScrape",
    "health",
]
# Those with something to get wrong: a body, a path parameter or a header.
WITH_INPUT = ["placeOrder", "getOrder", "retryOrder", "completeDelivery"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
TABLES = [
    "orders_order",
    "orders_orderline",
    "orders_orderevent",
    "orders_delivery",
    "orders_failurerecord",
    "django_q_ormq",
]


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    running = make_stack(
        tmp_path_factory.mktemp("fuzz"), ORDER_PLACE_RATE_LIMIT="0"
    ).start()
    running.stop_cluster()
    yield running
    running.stop()


def load_schema(stack):
    config = schemathesis.Config()
    # The staff session is fixed below; do not fuzz it away.
    config.projects.get_default().generation.update(with_security_parameters=False)
    return schemathesis.openapi.from_url(
        f"{stack.base_url}/api/openapi.json", config=config, timeout=10
    )


def staff_session(stack) -> dict:
    """A staff session's cookies and CSRF header, as as_strategy() takes them."""
    client = stack.staff_client()
    try:
        return {
            "cookies": dict(client.cookies),
            "headers": {"X-CSRFToken": client.cookies["csrftoken"]},
        }
    finally:
        client.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_stack):
    return load_schema(fuzz_stack)


@pytest.fixture(scope="module")
def staff(fuzz_stack):
    return staff_session(fuzz_stack)


@pytest.fixture(scope="module")
def row_counts(fuzz_stack):
    path = fuzz_stack.workdir / "db.sqlite3"  # tests/stack.py: local_env
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def counts() -> dict[str, int]:
        return {
            table: database.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in TABLES
        }

    yield counts
    database.close()


def operation(api_schema, operation_id: str):
    for path, item in api_schema.raw_schema["paths"].items():
        for method, definition in item.items():
            if definition.get("operationId") == operation_id:
                return api_schema[path][method]
    raise LookupError(operation_id)


def test_every_operation_but_the_streams_is_fuzzed(api_schema):
    documented = {
        definition["operationId"]
        for item in api_schema.raw_schema["paths"].values()
        for definition in item.values()
    }
    assert documented - STREAMS == set(OPERATIONS)


@pytest.mark.parametrize(
    ("operation_id", "mode"),
    [(name, GenerationMode.POSITIVE) for name in OPERATIONS]
    + [(name, GenerationMode.NEGATIVE) for name in WITH_INPUT],
)
def test_no_generated_request_breaks_the_api_or_the_schema(
    api_schema, staff, row_counts, operation_id, mode
):
    fuzz(api_schema, operation_id, mode, staff=staff, row_counts=row_counts)


def fuzz(api_schema, operation_id, mode, *, staff, row_counts, examples=EXAMPLES):
    """Send `examples` generated requests of one operation, each checked."""
    # schemathesis's own pytest plugin (schema.parametrize) does not run under
    # pytest 9; its Hypothesis strategies do. The staff session is fixed, not
    # generated, so the fuzzer reaches past the 403.
    strategy = operation(api_schema, operation_id).as_strategy(mode, **staff)
    statuses = set()

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        # Shrinking a failure would keep sending requests; the first is reported.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def send(case):
        before = row_counts()
        response = case.call_and_validate(timeout=10, checks=CHECKS)
        statuses.add(response.status_code)
        if 400 <= response.status_code < 500:
            assert row_counts() == before, (
                f"{case.method} {case.formatted_path} answered "
                f"{response.status_code} and wrote rows"
            )

    send()
    assert statuses - {403}, "the staff session should get past the 403"
