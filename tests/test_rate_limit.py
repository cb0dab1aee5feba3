"""ORDER_PLACE_RATE_LIMIT: order placement per client address, counted in a
cache every web process shares."""

import json
import logging
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings

from orders.api.ratelimit_store import (
    CounterStoreFull,
    CounterStoreUnavailable,
    SQLiteCounterCache,
)
from orders.models import Order
from orders.workers.processes import free_port
from tests.conftest import ORDER_BODY

# A day's window: a test never straddles the window's end (it would reset the
# count) unless it runs across one of the day's few boundaries.
RATE = "3/d"


@pytest.fixture
def rate_limited(settings, tmp_path):
    settings.ORDER_PLACE_RATE_LIMIT = RATE
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "orders.api.ratelimit_store.SQLiteCounterCache",
            "LOCATION": str(tmp_path / "ratelimit"),
        },
    }


# How many counters the embedded store holds in the tests that fill it.
SMALL_STORE = 20


@pytest.fixture
def small_store(settings, tmp_path):
    settings.ORDER_PLACE_RATE_LIMIT = RATE
    settings.CACHES = {
        **settings.CACHES,
        "ratelimit": {
            "BACKEND": "orders.api.ratelimit_store.SQLiteCounterCache",
            "LOCATION": str(tmp_path / "ratelimit"),
            "OPTIONS": {"MAX_ENTRIES": SMALL_STORE},
        },
    }
    return SQLiteCounterCache(str(tmp_path / "ratelimit"), {})


def place(
    client,
    address: str = "192.0.2.10",
    key: str | None = None,
    forwarded_for: str | None = None,
):
    headers = {"Idempotency-Key": key} if key else {}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return client.post(
        "/api/orders",
        json.dumps(ORDER_BODY),
        content_type="application/json",
        REMOTE_ADDR=address,
        headers=headers,
    )


@pytest.mark.django_db
def test_an_address_over_the_limit_gets_429_with_retry_after_and_nothing_is_placed(
    client, rate_limited
):
    answers = [place(client, key=f"k-{n}") for n in range(4)]

    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    refused = answers[3]
    assert refused["Content-Type"] == "application/json"
    assert refused.json()["error"] == "rate_limited"
    assert "try again in" in refused.json()["detail"]
    assert 1 <= int(refused["Retry-After"]) <= 24 * 3600
    assert Order.objects.count() == 3


@pytest.mark.django_db
def test_each_client_address_has_a_limit_of_its_own(client, rate_limited):
    for _ in range(3):
        place(client, address="192.0.2.10")

    assert place(client, address="192.0.2.10").status_code == 429
    assert place(client, address="192.0.2.11").status_code == 202


@pytest.mark.django_db
def test_behind_one_proxy_a_client_is_counted_as_the_proxy_saw_it(
    client, rate_limited, settings
):
    """The leftmost entries are the client's own words: each placement claims
    another address, and all are counted under the one the proxy appended."""
    settings.TRUSTED_PROXY_HOPS = 1
    answers = [
        place(client, address="10.0.0.2", forwarded_for=f"203.0.113.{n}, 198.51.100.7")
        for n in range(5)
    ]

    assert [answer.status_code for answer in answers] == [202] * 3 + [429] * 2
    assert place(client, forwarded_for="198.51.100.8").status_code == 202


@pytest.mark.django_db
@pytest.mark.parametrize("forwarded_for", ["unknown", "1.2.3.4:5678", ",", "x" * 300])
def test_a_malformed_forwarded_for_is_counted_as_the_connection(
    client, rate_limited, settings, forwarded_for
):
    settings.TRUSTED_PROXY_HOPS = 1
    statuses = [
        place(client, address="10.0.0.3", forwarded_for=forwarded_for).status_code
        for _ in range(4)
    ]

    assert statuses == [202] * 3 + [429]


@pytest.mark.django_db
def test_an_ipv6_client_is_counted_by_its_network_and_ipv4_over_ipv6_by_itself(
    client, rate_limited
):
    for n in range(3):
        assert place(client, address=f"2001:db8:0:1::{n + 1}").status_code == 202
    assert place(client, address="2001:db8:0:1:ffff::9").status_code == 429
    assert place(client, address="2001:db8:0:2::1").status_code == 202

    for _ in range(3):
        assert place(client, address="::ffff:192.0.2.20").status_code == 202
    assert place(client, address="192.0.2.20").status_code == 429
    assert place(client, address="::ffff:192.0.2.21").status_code == 202


@pytest.mark.django_db
def test_only_placing_counts_against_the_limit(client, rate_limited):
    order_id = place(client).json()["order_id"]
    for _ in range(5):
        assert client.get(f"/api/orders/{order_id}").status_code == 200

    assert place(client).status_code == 202


@pytest.mark.django_db
def test_a_limit_of_zero_turns_it_off(client, rate_limited, settings):
    settings.ORDER_PLACE_RATE_LIMIT = "0"

    assert [place(client).status_code for _ in range(5)] == [202] * 5


@pytest.mark.django_db
def test_rotating_addresses_do_not_flush_another_client_s_count(client, small_store):
    """Ten times as many made-up addresses as the store holds: the client that
    is over the limit stays over it."""
    for _ in range(3):
        assert place(client, address="192.0.2.10").status_code == 202
    for n in range(10 * SMALL_STORE):
        place(client, address=f"10.1.{n // 250}.{n % 250}")

    assert place(client, address="192.0.2.10").status_code == 429
    # The store's own counters and the one the newcomers share.
    assert counters_in(small_store) == SMALL_STORE + 1


@pytest.mark.django_db
def test_while_the_store_is_full_new_clients_share_one_count(client, small_store):
    for n in range(SMALL_STORE):
        assert place(client, address=f"10.2.0.{n}").status_code == 202

    newcomers = [place(client, address=f"10.3.0.{n}").status_code for n in range(5)]

    assert newcomers == [202] * 3 + [429] * 2
    # A client with a counter of its own keeps its own limit.
    assert place(client, address="10.2.0.0").status_code == 202


def store_down(settings, tmp_path, kind: str) -> None:
    """The "ratelimit" cache, unreachable: Redis on a port nobody listens on, or
    a counter file that cannot be opened (a directory stands in its place)."""
    if kind == "redis":
        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    else:
        (tmp_path / "ratelimit" / "counters.sqlite3").mkdir(parents=True)
        cache = {
            "BACKEND": "orders.api.ratelimit_store.SQLiteCounterCache",
            "LOCATION": str(tmp_path / "ratelimit"),
        }
    settings.CACHES = {**settings.CACHES, "ratelimit": cache}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_orders_are_taken_while_the_rate_limit_store_is_down(
    client, settings, tmp_path, caplog, kind
):
    settings.ORDER_PLACE_RATE_LIMIT = "1/d"
    store_down(settings, tmp_path, kind)
    caplog.set_level(logging.WARNING, logger="orders.ratelimit")

    answers = [place(client).status_code for _ in range(3)]

    assert answers == [202] * 3
    assert Order.objects.count() == 3
    warnings = [r for r in caplog.records if r.name == "orders.ratelimit"]
    assert len(warnings) == 3
    assert all("cannot count" in r.getMessage() for r in warnings)
    assert all(r.levelno == logging.WARNING and r.exc_info for r in warnings)


def counters_in(store: SQLiteCounterCache) -> int:
    with store._transaction(write=False) as db:
        return db.execute("SELECT count(*) FROM counter").fetchone()[0]


def test_expired_counters_make_room_and_live_ones_are_never_deleted(tmp_path):
    store = SQLiteCounterCache(str(tmp_path), {"OPTIONS": {"MAX_ENTRIES": 3}})
    store.set("expired", 1, timeout=0)
    store.add("live-1", 1, timeout=500)
    store.add("live-2", 1, timeout=500)

    assert store.add("live-3", 1, timeout=500) is True
    assert store.get("expired") is None
    with pytest.raises(CounterStoreFull):
        store.add("live-4", 1, timeout=500)
    assert [store.get(f"live-{n}") for n in (1, 2, 3)] == [1, 1, 1]
    assert store.incr("live-1") == 2

    with SQLiteCounterCache.beyond_the_bound():
        assert store.add("shared", 1, timeout=500) is True
    assert store.get("shared") == 1
    assert counters_in(store) == 4


def test_the_store_counts_on_without_moving_the_counter_s_expiry(tmp_path):
    store = SQLiteCounterCache(str(tmp_path), {})
    store.add("counter", 1, timeout=500)
    with store._transaction(write=False) as db:
        (expiry,) = db.execute("SELECT expires FROM counter").fetchone()

    assert store.add("counter", 7, timeout=500) is False
    assert store.incr("counter") == 2
    assert store.incr("counter", 3) == 5

    with store._transaction(write=False) as db:
        assert db.execute("SELECT expires FROM counter").fetchone() == (expiry,)
    with pytest.raises(ValueError):
        store.incr("missing")
    store.set("gone", 1, timeout=0)
    with pytest.raises(ValueError):
        store.incr("gone")


def test_a_store_that_cannot_be_opened_is_an_outage_not_a_bug(tmp_path):
    (tmp_path / "ratelimit").mkdir()
    (tmp_path / "ratelimit" / "counters.sqlite3").mkdir()  # not a file
    store = SQLiteCounterCache(str(tmp_path / "ratelimit"), {})

    with pytest.raises(CounterStoreUnavailable):
        store.add("counter", 1, timeout=500)


# Counts 30 placements from one address against a limit of 40 a day, in a
# process of its own, and prints which of them were refused.
COUNT = """
import json, sys
import django
django.setup()
from django.test import RequestFactory
from orders.api.ratelimit import place_retry_after
request = RequestFactory().post("/api/orders", REMOTE_ADDR=sys.argv[1])
print(json.dumps([place_retry_after(request) is not None for _ in range(30)]))
"""


def count_in_two_processes_at_once(**environment: str) -> list[bool]:
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL"}},
        "DJANGO_SETTINGS_MODULE": "orderproj.settings",
        "ORDER_PLACE_RATE_LIMIT": "40/d",
        **environment,
    }
    # Redis keeps a count for the day: each run counts for an address of its own.
    address = (
        f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(256)}"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", COUNT, address],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    refused = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        refused += json.loads(out)
    return refused


def test_web_processes_on_one_machine_share_the_count(tmp_path):
    refused = count_in_two_processes_at_once(ORDER_RATE_LIMIT_DIR=str(tmp_path))

    # 60 placements, 40 allowed: each process counted the other's.
    assert refused.count(False) == 40
    assert refused.count(True) == 20


def test_web_processes_anywhere_share_the_count_in_redis(tmp_path):
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(f"no Redis at {redis_url}")

    # A directory of its own too: the count must not be in it.
    refused = count_in_two_processes_at_once(
        REDIS_URL=redis_url, ORDER_RATE_LIMIT_DIR=str(tmp_path)
    )

    assert refused.count(False) == 40
    assert refused.count(True) == 20
    assert list(tmp_path.iterdir()) == []
