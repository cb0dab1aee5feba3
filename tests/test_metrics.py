"""GET /metrics: who may read it, and what each family says about crafted data.
The same against a real daphne + qcluster: tests/e2e/test_metrics_e2e.py."""

from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from orders import selectors
from orders.api import metrics as api_metrics
from orders.models import Delivery, EventTally, Order, OrderEvent
from orders.operations import metrics
from orders.services import orders as services
from orders.services.events import events_trim
from orders.services.failure_actions import failure_group_resolve
from tests import factories

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, **headers) -> dict:
    """The scrape as {sample name: {labels as a sorted tuple: value}}."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples: dict = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


# Who may read it ------------------------------------------------------------------


@pytest.mark.django_db
def test_an_anonymous_caller_gets_a_json_401_that_asks_for_the_token(
    client, metrics_token
):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_a_wrong_token_is_refused_with_a_json_401(client, metrics_token):
    response = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization", [f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer "]
)
def test_anything_but_bearer_and_the_token_is_refused(
    client, metrics_token, authorization
):
    response = client.get("/metrics", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


@pytest.mark.django_db
def test_no_token_is_accepted_while_metrics_token_is_unset(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401


@pytest.mark.django_db
def test_a_session_that_is_not_staff_gets_a_json_403(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("customer", "", "pw"))
    response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.django_db
def test_a_staff_session_reads_the_metrics(staff_client):
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "orders_by_status" in response.content.decode()


@pytest.mark.django_db
def test_the_right_token_reads_the_metrics(client, metrics_token):
    samples = scrape(client, headers={"Authorization": f"Bearer {TOKEN}"})
    assert "orders_attempts_total" in samples


@pytest.mark.django_db
def test_a_staff_session_with_a_wrong_token_is_refused(staff_client, metrics_token):
    response = staff_client.get("/metrics", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401


@pytest.mark.django_db
def test_openmetrics_is_served_when_asked_for(staff_client):
    response = staff_client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


@pytest.mark.django_db
def test_other_methods_get_a_json_405(staff_client):
    response = staff_client.post("/metrics")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_the_token_is_compared_in_constant_time(monkeypatch):
    compared = []

    def compare_digest(a, b):
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(api_metrics.hmac, "compare_digest", compare_digest)
    assert api_metrics.bearer_token_matches("Bearer abc", "abc")
    assert not api_metrics.bearer_token_matches("Bearer abd", "abc")
    assert compared == [(b"abc", b"abc"), (b"abd", b"abc")]


# What each family says ------------------------------------------------------------


@pytest.mark.django_db
def test_orders_by_status_counts_each_status_and_zero_for_the_empty_ones(
    staff_client, immediate_retries
):
    factories.place()
    factories.place()
    factories.processed(fail_times=1)  # RETRYING
    factories.processed(failure="permanent", fail_times=1)  # FAILED
    factories.claim(factories.place())  # PROCESSING
    factories.process_until_terminal(factories.place())  # COMPLETED

    samples = scrape(staff_client)

    assert samples["orders_by_status"] == {
        (("status", "PENDING"),): 2,
        (("status", "PROCESSING"),): 1,
        (("status", "RETRYING"),): 1,
        (("status", "COMPLETED"),): 1,
        (("status", "FAILED"),): 1,
    }


@pytest.mark.django_db
def test_attempts_retries_and_outcomes_are_counted(staff_client, immediate_retries):
    factories.process_until_terminal(factories.place())  # 1 attempt
    factories.process_until_terminal(factories.place(fail_times=2))  # 3, 2 retries
    factories.process_until_terminal(factories.place(fail_times=5))  # 3, gave up
    factories.processed(failure="permanent", fail_times=1)  # 1, failed at once

    samples = scrape(staff_client)

    assert value(samples, "orders_attempts_total") == 8
    assert value(samples, "orders_attempt_failures_total") == 6
    assert value(samples, "orders_retries_total") == 4
    assert value(samples, "orders_failed_total") == 2
    assert value(samples, "orders_completed_total") == 2


@pytest.mark.django_db
def test_the_attempt_duration_histogram_has_cumulative_buckets_in_seconds(
    staff_client,
):
    order = factories.place()
    for duration_ms in [30, 70, 400, 20_000]:
        OrderEvent.objects.create(
            order=order,
            type=OrderEvent.Type.ATTEMPT_FAILED,
            status=Order.Status.PROCESSING,
            duration_ms=duration_ms,
            at=timezone.now(),
        )

    buckets = scrape(staff_client)["orders_attempt_duration_seconds_bucket"]

    assert buckets[(("le", "0.05"),)] == 1
    assert buckets[(("le", "0.1"),)] == 2
    assert buckets[(("le", "0.25"),)] == 2
    assert buckets[(("le", "0.5"),)] == 3
    assert buckets[(("le", "10.0"),)] == 3
    assert buckets[(("le", "30.0"),)] == 4
    assert buckets[(("le", "+Inf"),)] == 4
    samples = scrape(staff_client)
    assert value(samples, "orders_attempt_duration_seconds_count") == 4
    assert value(samples, "orders_attempt_duration_seconds_sum") == pytest.approx(20.5)


@pytest.mark.django_db
def test_the_queue_reports_its_waiting_tasks_and_the_oldest_ones_age(staff_client):
    for order in [factories.place(), factories.place()]:
        services.order_enqueue(order.order_id, order.queued_at)
    oldest = selectors.oldest_queued_at()
    before = timezone.now()

    samples = scrape(staff_client)

    waited = (before - oldest).total_seconds()
    assert value(samples, "orders_queue_reachable") == 1
    assert value(samples, "orders_queue_depth") == 2
    age = value(samples, "orders_queue_oldest_task_age_seconds")
    assert waited <= age <= (timezone.now() - oldest).total_seconds() + 0.001


@pytest.mark.django_db
def test_an_empty_queue_has_no_age(staff_client):
    samples = scrape(staff_client)
    assert value(samples, "orders_queue_depth") == 0
    assert value(samples, "orders_queue_oldest_task_age_seconds") == 0


@pytest.mark.django_db
def test_open_failure_groups_are_counted_with_the_regressions_apart(staff_client):
    factories.failure_record(exception_type="KeyError")
    factories.failure_record(exception_type="KeyError")  # the same group
    factories.failure_record(exception_type="ValueError")
    resolved = factories.failure_record(exception_type="TypeError")
    failure_group_resolve(group=resolved.group)
    regression = factories.failure_record(exception_type="OSError")
    failure_group_resolve(group=regression.group)
    factories.failure_record(exception_type="OSError")  # reopens it

    samples = scrape(staff_client)

    assert value(samples, "orders_failure_groups_open", reopened="false") == 2
    assert value(samples, "orders_failure_groups_open", reopened="true") == 1


@pytest.mark.django_db
def test_the_dispatcher_lag_is_zero_while_nothing_due_waits(staff_client):
    order = factories.place()
    Order.objects.filter(pk=order.pk).update(
        dispatch_due_at=timezone.now() + timedelta(seconds=30)
    )
    assert value(scrape(staff_client), "orders_dispatcher_lag_seconds") == 0


@pytest.mark.django_db
@pytest.mark.parametrize("late_work", ["order_due", "lease_expired", "listener_due"])
def test_the_dispatcher_lag_is_how_long_the_oldest_due_work_has_waited(
    staff_client, immediate_retries, late_work
):
    due_at = timezone.now() - timedelta(seconds=40)
    if late_work == "order_due":
        order = factories.place()
        Order.objects.filter(pk=order.pk).update(dispatch_due_at=due_at)
    elif late_work == "lease_expired":
        order = factories.place()
        factories.claim(order)
        Order.objects.filter(pk=order.pk).update(lease_expires_at=due_at)
    else:
        order = factories.process_until_terminal(factories.place())
        Delivery.objects.filter(order=order).update(listener_due_at=due_at)

    lag = value(scrape(staff_client), "orders_dispatcher_lag_seconds")

    assert 40 <= lag < 45


def test_the_pump_lag_is_the_age_of_the_oldest_event_after_its_cursor(db):
    order = factories.place()  # its order.created event
    sent = OrderEvent.objects.get(order=order).pk
    now = timezone.now()
    unsent = [
        OrderEvent.objects.create(
            order=order,
            type=OrderEvent.Type.RETRY_REQUESTED,
            status=Order.Status.PENDING,
            at=now - timedelta(seconds=seconds),
        )
        for seconds in [7, 3]
    ]

    assert metrics.pump_lag_seconds([sent], now) == pytest.approx(7)
    assert metrics.pump_lag_seconds([unsent[0].pk], now) == pytest.approx(3)
    assert metrics.pump_lag_seconds([unsent[1].pk], now) == 0
    assert metrics.pump_lag_seconds([unsent[1].pk, sent], now) == pytest.approx(7)
    assert metrics.pump_lag_seconds([], now) == 0


@pytest.mark.django_db
def test_the_stream_figures_name_the_process_that_answered(staff_client):
    samples = scrape(staff_client)
    process = (("process", metrics.process_label()),)
    assert samples["orders_streams_open"] == {process: 0}
    assert samples["orders_stream_pump_lag_seconds"] == {process: 0}


# Counters never go down -----------------------------------------------------------

COUNTERS = [
    "orders_attempts_total",
    "orders_attempt_failures_total",
    "orders_retries_total",
    "orders_failed_total",
    "orders_completed_total",
    "orders_attempt_duration_seconds_count",
    "orders_attempt_duration_seconds_sum",
]


def counters(samples: dict) -> dict:
    figures = {name: value(samples, name) for name in COUNTERS}
    figures["buckets"] = samples["orders_attempt_duration_seconds_bucket"]
    return figures


@pytest.mark.django_db
def test_counters_do_not_drop_when_events_trim_deletes_the_events(
    staff_client, immediate_retries
):
    factories.process_until_terminal(factories.place(fail_times=2))
    factories.process_until_terminal(factories.place(fail_times=5))
    before = counters(scrape(staff_client))
    assert before["orders_attempts_total"] == 6
    events_before = OrderEvent.objects.count()

    trimmed = events_trim(now=timezone.now() + timedelta(days=8), retention_days=7)

    # The completed order's events go; the FAILED one's timeline is kept.
    assert trimmed and OrderEvent.objects.count() == events_before - trimmed
    assert counters(scrape(staff_client)) == before


@pytest.mark.django_db
def test_counters_go_on_from_the_tally_after_a_trim(staff_client, immediate_retries):
    factories.process_until_terminal(factories.place(fail_times=1))
    events_trim(now=timezone.now() + timedelta(days=8), retention_days=7)

    factories.process_until_terminal(factories.place(fail_times=1))
    samples = scrape(staff_client)

    assert value(samples, "orders_attempts_total") == 4
    assert value(samples, "orders_retries_total") == 2
    assert EventTally.objects.get(name="attempts").value == 2


@pytest.mark.django_db
def test_a_trim_tallies_only_the_events_it_deletes(staff_client, immediate_retries):
    factories.process_until_terminal(factories.place(fail_times=1))
    before = counters(scrape(staff_client))

    assert events_trim(now=timezone.now(), retention_days=7) == 0
    assert not EventTally.objects.exists()
    assert counters(scrape(staff_client)) == before


@pytest.mark.django_db
def test_counters_do_not_drop_when_an_order_is_deleted(staff_client, immediate_retries):
    kept = factories.process_until_terminal(factories.place(fail_times=1))
    deleted = factories.process_until_terminal(factories.place(fail_times=5))
    before = counters(scrape(staff_client))

    Order.objects.filter(pk=deleted.pk).delete()

    assert not OrderEvent.objects.filter(order_id=deleted.pk).exists()
    assert OrderEvent.objects.filter(order=kept).exists()
    assert counters(scrape(staff_client)) == before
