import json

import pytest
from django_q.models import OrmQ

from orders.models import Order, OrderEvent
from tests.factories import claim, process

VALID = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}


def post_order(client, body, **headers):
    payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        "/api/orders", payload, content_type="application/json", headers=headers
    )


def with_item(**changes):
    return {**VALID, "items": [{**VALID["items"][0], **changes}]}


def assert_refused(response, status, error, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == error
    assert body["detail"]
    if field:
        assert field in body["fields"], body
    assert Order.objects.count() == 0
    assert OrderEvent.objects.count() == 0
    assert OrmQ.objects.count() == 0


@pytest.mark.django_db
def test_placing_an_order_answers_202_with_its_public_id_and_links(
    client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_order(client, VALID)
    assert response.status_code == 202
    body = response.json()
    order_id = body["order_id"]
    assert order_id.startswith("ord_") and len(order_id) >= 4 + 32
    assert body["status"] == "PENDING"
    assert body["amount"] == "25.00"
    assert body["status_url"] == f"/api/orders/{order_id}"
    assert body["events_url"] == f"/api/orders/{order_id}/events"
    assert body["page_url"] == f"/orders/{order_id}"
    assert OrmQ.objects.count() == 1


@pytest.mark.django_db
def test_status_document_has_every_contract_field_and_the_timeline(client):
    order_id = post_order(client, VALID).json()["order_id"]
    document = client.get(f"/api/orders/{order_id}").json()
    for name in [
        "order_id",
        "status",
        "amount",
        "currency",
        "attempts",
        "max_attempts",
        "next_attempt_at",
        "failure_reason",
        "created_at",
        "updated_at",
        "delivery",
        "delivered_at",
        "events",
    ]:
        assert name in document
    assert [event["type"] for event in document["events"]] == ["order.created"]
    assert "id" not in document and "pk" not in document


@pytest.mark.django_db
def test_status_document_answers_304_while_nothing_changed(client):
    order_id = post_order(client, VALID).json()["order_id"]
    first = client.get(f"/api/orders/{order_id}")
    etag = first.headers["ETag"]
    again = client.get(f"/api/orders/{order_id}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    claim(Order.objects.get())
    changed = client.get(f"/api/orders/{order_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["status"] == "PROCESSING"


@pytest.mark.django_db
def test_unknown_order_is_a_json_404(client):
    response = client.get("/api/orders/ord_doesnotexist")
    assert response.status_code == 404
    assert response.json()["error"] == "order_not_found"


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"{not json", "invalid_json", None),
        (b"[1, 2]", "invalid_json", None),
        ({"items": VALID["items"]}, "validation_failed", "customer_email"),
        ({**VALID, "customer_email": "not-an-email"}, "validation_failed", None),
        ({**VALID, "customer_email": 42}, "validation_failed", "customer_email"),
        ({"customer_email": "a@b.co"}, "validation_failed", "items"),
        ({**VALID, "items": []}, "validation_failed", "items"),
        ({**VALID, "items": VALID["items"] * 101}, "validation_failed", "items"),
        ({**VALID, "items": "MUG-1"}, "validation_failed", "items"),
        (with_item(quantity=0), "validation_failed", "items[0].quantity"),
        (with_item(quantity=-3), "validation_failed", "items[0].quantity"),
        (with_item(quantity=10_001), "validation_failed", "items[0].quantity"),
        (with_item(quantity="2"), "validation_failed", "items[0].quantity"),
        (with_item(quantity=1.5), "validation_failed", "items[0].quantity"),
        (with_item(quantity=True), "validation_failed", "items[0].quantity"),
        (with_item(unit_price="0"), "validation_failed", "items[0].unit_price"),
        (with_item(unit_price="-1.00"), "validation_failed", "items[0].unit_price"),
        (with_item(unit_price="1.001"), "validation_failed", "items[0].unit_price"),
        (with_item(unit_price=12.5), "validation_failed", "items[0].unit_price"),
        (with_item(unit_price="NaN"), "validation_failed", "items[0].unit_price"),
        (with_item(unit_price="abc"), "validation_failed", "items[0].unit_price"),
        (with_item(sku=""), "validation_failed", "items[0].sku"),
        ({**VALID, "coupon": "FREE"}, "validation_failed", "coupon"),
        (
            {**VALID, "simulate": {"fail_times": -1}},
            "validation_failed",
            "simulate.fail_times",
        ),
        (
            {**VALID, "simulate": {"failure": "sometimes"}},
            "validation_failed",
            "simulate.failure",
        ),
        (
            {**VALID, "simulate": {"step": "shipping"}},
            "validation_failed",
            "simulate.step",
        ),
    ],
)
@pytest.mark.django_db
def test_bad_input_is_refused_with_a_named_problem_and_writes_nothing(
    client, body, error, field
):
    assert_refused(post_order(client, body), 400, error, field)


@pytest.mark.django_db
def test_a_whole_number_written_with_a_fraction_or_exponent_is_that_number(client):
    """JSON Schema's integer, and so the document's, counts 2.0 and 1e1 as
    whole numbers; 2.5 is not one."""
    assert_refused(
        post_order(client, with_item(quantity=2.5)), 400, "validation_failed"
    )
    for written, quantity in [("2.0", 2), ("1e1", 10), ("1.50E1", 15)]:
        body = json.dumps(VALID).replace('"quantity": 2', f'"quantity": {written}')
        response = client.post("/api/orders", body, content_type="application/json")
        assert response.status_code == 202, (written, response.content)
        assert Order.objects.latest("pk").lines.get().quantity == quantity


@pytest.mark.django_db
def test_a_body_over_128_kib_is_413_and_writes_nothing(client):
    body = {**VALID, "customer_email": "a@b.co", "padding": "x" * 140_000}
    assert_refused(post_order(client, body), 413, "body_too_large")


@pytest.mark.django_db
def test_simulate_is_refused_when_simulation_is_disabled(client, settings):
    settings.ORDER_SIMULATION_ENABLED = False
    body = {**VALID, "simulate": {"fail_times": 1}}
    assert_refused(post_order(client, body), 400, "simulation_disabled", "simulate")


@pytest.mark.django_db
def test_a_simulated_delay_over_half_an_attempts_time_is_a_400_that_writes_nothing(
    client, settings
):
    # A lease of 10 s lets an attempt run 5 s (orders/workers/timeouts.py).
    settings.ORDER_LEASE_SECONDS = 10
    body = {**VALID, "simulate": {"delay_ms": 2501}}

    response = post_order(client, body)

    assert_refused(response, 400, "validation_failed", "simulate.delay_ms")
    assert "2500" in response.json()["fields"]["simulate.delay_ms"]


@pytest.mark.django_db
def test_a_simulated_delay_over_the_limit_is_named_beside_the_other_problems(
    client, settings
):
    settings.ORDER_LEASE_SECONDS = 10
    body = {**with_item(quantity=0), "simulate": {"delay_ms": 60_000}}

    response = post_order(client, body)

    assert_refused(response, 400, "validation_failed", "items[0].quantity")
    assert "2500" in response.json()["fields"]["simulate.delay_ms"]


@pytest.mark.django_db
def test_a_simulated_delay_of_half_an_attempts_time_is_accepted(client, settings):
    settings.ORDER_LEASE_SECONDS = 10
    body = {**VALID, "simulate": {"delay_ms": 2500}}

    response = post_order(client, body)

    assert response.status_code == 202, response.content
    assert Order.objects.get().simulate["delay_ms"] == 2500


@pytest.mark.django_db
def test_wrong_method_is_a_json_405(client):
    response = client.get("/api/orders")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.django_db
def test_same_idempotency_key_and_body_returns_the_same_order(client):
    first = post_order(client, VALID, **{"Idempotency-Key": "checkout-42"})
    again = post_order(
        client,
        json.dumps(VALID, indent=2, sort_keys=True),
        **{"Idempotency-Key": "checkout-42"},
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["order_id"] == first.json()["order_id"]
    assert Order.objects.count() == 1


@pytest.mark.django_db
def test_same_idempotency_key_with_another_body_is_a_409_that_changes_nothing(client):
    post_order(client, VALID, **{"Idempotency-Key": "checkout-42"})
    response = post_order(
        client, with_item(quantity=3), **{"Idempotency-Key": "checkout-42"}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"
    assert Order.objects.count() == 1
    assert Order.objects.get().amount == 25


def failed_order(client):
    body = {**VALID, "simulate": {"failure": "permanent"}}
    order_id = post_order(client, body).json()["order_id"]
    process(order_id)
    return Order.objects.get(order_id=order_id)


@pytest.mark.django_db
def test_staff_retry_puts_a_failed_order_back_in_the_pipeline(
    staff_client, django_capture_on_commit_callbacks
):
    order = failed_order(staff_client)
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(f"/api/orders/{order.order_id}/retry")
    assert response.status_code == 202
    order.refresh_from_db()
    assert (order.status, order.attempts) == ("PENDING", 0)
    assert OrmQ.objects.filter(key="orderproj").count() >= 1


@pytest.mark.django_db
def test_retry_of_an_order_that_is_not_failed_is_a_409(staff_client):
    order_id = post_order(staff_client, VALID).json()["order_id"]
    response = staff_client.post(f"/api/orders/{order_id}/retry")
    assert response.status_code == 409
    assert response.json()["error"] == "invalid_status"
    assert Order.objects.get().status == "PENDING"


@pytest.mark.django_db
def test_retry_of_an_unknown_order_is_a_404(staff_client):
    response = staff_client.post("/api/orders/ord_nope/retry")
    assert response.status_code == 404


@pytest.mark.django_db
def test_retry_refuses_anonymous_and_non_staff_with_403_naming_why(
    client, django_user_model
):
    order = failed_order(client)
    url = f"/api/orders/{order.order_id}/retry"
    anonymous = client.post(url)
    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "not_authenticated"
    customer = django_user_model.objects.create_user("customer", password="pw")
    client.force_login(customer)
    response = client.post(url)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    order.refresh_from_db()
    assert order.status == "FAILED"


@pytest.mark.django_db
def test_retry_requires_the_csrf_token(client, staff_user):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(staff_user)
    order = failed_order(client)
    response = strict.post(f"/api/orders/{order.order_id}/retry")
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    order.refresh_from_db()
    assert order.status == "FAILED"


@pytest.mark.django_db
def test_health_reports_database_and_queue(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "queue": "ok"}


@pytest.mark.django_db
def test_the_benchmark_baseline_view_is_not_routed_unless_enabled(client):
    response = client.post(
        "/api/bench/baseline", json.dumps(VALID), content_type="application/json"
    )
    assert response.status_code == 404
    assert Order.objects.count() == 0
