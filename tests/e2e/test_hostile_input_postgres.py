"""The hostile requests of tests/test_hostile_input.py, and the fuzzer's staff
run (tests/fuzz.py), against a real daphne on PostgreSQL, which refuses a NUL
in text that SQLite stores: each is still a 4xx in the JSON error shape and
writes nothing. Skipped like the scale-out tests where PostgreSQL or Redis is
missing, unless REQUIRE_SERVICES=1."""

import pytest

from tests import fuzz
from tests.e2e.test_scale_out import scaled
from tests.test_hostile_input import (
    HOSTILE_BODIES,
    HOSTILE_SEGMENTS,
    HOSTILE_SESSION_COOKIES,
)

pytestmark = pytest.mark.e2e

TABLES = ["orders_order", "orders_orderline", "orders_orderevent", "orders_delivery"]
NUL_BODIES = [
    b'{"customer_email": "a@b.co", "items": [{"sku": "A\\u0000", "quantity": 1, '
    b'"unit_price": "1.00"}]}',
    b'{"customer_email": "a\\u0000@b.co", "items": [{"sku": "A", "quantity": 1, '
    b'"unit_price": "1.00"}]}',
    b'{"customer_email": "a@b.co", "items": [{"sku": "A", "quantity": 1, '
    b'"unit_price": "1.00"}], "simulate": {"step": "pay\\u0000ment"}}',
    b'{"\\u0000": 1}',
]


@pytest.fixture(scope="module")
def pg_target(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile-pg")
    with scaled(workdir, **fuzz.deployed_env()) as stack:
        # Then the web process alone writes: row counts move only with requests.
        yield fuzz.prepare(stack)


@pytest.fixture(scope="module")
def pg_stack(pg_target):
    return pg_target.stack


@pytest.fixture(scope="module")
def row_counts(pg_stack):
    import psycopg

    connection = psycopg.connect(pg_stack.env["DATABASE_URL"], autocommit=True)

    def counts():
        return {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in TABLES
        }

    yield counts
    connection.close()


def assert_json_refusal(response):
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["detail"], str)


def test_hostile_bodies_are_refused_on_postgresql_and_write_nothing(
    pg_stack, row_counts
):
    before = row_counts()
    with pg_stack.client() as client:
        for body in [*NUL_BODIES, *(body for body, _ in HOSTILE_BODIES.values())]:
            response = client.post(
                "/api/orders",
                content=body,
                headers={"Content-Type": "application/json"},
            )
            assert_json_refusal(response)
    assert row_counts() == before


def test_hostile_ids_in_paths_are_json_404s_on_postgresql(pg_stack, row_counts):
    before = row_counts()
    staff = pg_stack.staff_client()
    try:
        for segment in HOSTILE_SEGMENTS:
            for method, path in [
                ("GET", f"/api/orders/{segment}"),
                ("POST", f"/api/orders/{segment}/retry"),
                ("POST", f"/api/deliveries/{segment}/complete"),
            ]:
                response = staff.request(method, path)
                assert response.status_code == 404, (method, path, response.text)
                assert_json_refusal(response)
            assert staff.get(f"/orders/{segment}").status_code == 404
    finally:
        staff.close()
    assert row_counts() == before


def test_schemathesis_finds_nothing_on_postgresql(pg_target, tmp_path):
    result = fuzz.run(
        pg_target,
        "staff",
        seed=fuzz.LANE_SEED,
        max_examples=fuzz.LANE_EXAMPLES,
        workdir=tmp_path,
    )
    assert result.returncode == 0, result.stdout
    report = fuzz.report(tmp_path, "staff")
    assert (report["failures"], report["errors"]) == ([], []), result.stdout
    assert report["operations"]["tested"] == report["operations"]["total"]


def test_a_hostile_session_cookie_is_no_login_on_postgresql(pg_stack, row_counts):
    """PostgreSQL refuses a NUL in the session query: the key is refused first
    (orders/api/sessions.py), on every page and endpoint that reads the session."""
    order_id = pg_stack.place()["order_id"]
    before = row_counts()
    for cookie in HOSTILE_SESSION_COOKIES:
        with pg_stack.client() as client:
            headers = {"Cookie": cookie.encode("latin-1")}
            for path, expected in [
                ("/", 200),
                ("/dashboard/", 302),
                (f"/orders/{order_id}", 200),
                (f"/api/orders/{order_id}", 200),
            ]:
                response = client.get(path, headers=headers)
                assert response.status_code == expected, (cookie, path)
            stats = client.get("/api/dashboard/stats", headers=headers)
            assert stats.status_code == 403, (cookie, stats.text)
            assert_json_refusal(stats)
            retry = client.post(f"/api/orders/{order_id}/retry", headers=headers)
            assert retry.status_code == 403, (cookie, retry.text)
            assert_json_refusal(retry)
    assert row_counts() == before
