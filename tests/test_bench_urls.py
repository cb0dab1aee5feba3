"""The bench's URLconf (orders/bench/urls.py, selected by orders/bench/settings.py):
orderproj's URLs plus the placing baseline, which the product never routes."""

import json

import pytest
from django_q.models import OrmQ

from orders.models import Order

BASELINE = "/api/bench/baseline"
BODY = json.dumps({"customer_email": "buyer@example.com"})


def test_bench_settings_are_orderprojs_with_the_bench_urlconf():
    from orderproj import settings as product
    from orders.bench import settings as bench

    assert bench.ROOT_URLCONF == "orders.bench.urls"
    assert bench.INSTALLED_APPS == product.INSTALLED_APPS


@pytest.mark.django_db
@pytest.mark.urls("orders.bench.urls")
def test_baseline_inserts_one_pending_row_and_queues_one_task(client):
    response = client.post(BASELINE, BODY, content_type="application/json")
    assert response.status_code == 202
    order = Order.objects.get()
    assert response.json() == {"order_id": order.order_id}
    assert order.status == Order.Status.PENDING
    assert OrmQ.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.urls("orders.bench.urls")
def test_bench_urlconf_keeps_every_product_url(client):
    assert client.get("/healthz").status_code == 200
    missing = client.get("/api/no-such-thing")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
