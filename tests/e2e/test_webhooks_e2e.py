"""Webhooks from a real stack (daphne + qcluster, its relay thread sending) to
receivers on 127.0.0.1: one that refuses its first answers, one that is down for
a while, one that hangs, and a qcluster SIGKILLed between a request and its
record."""

import contextlib
import json
import re
import time
from collections import defaultdict

import pytest
from standardwebhooks import Webhook

from tests.stack import free_port, make_stack, wait_until
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = make_stack(tmp_path_factory.mktemp("webhooks"), **FAST_WEBHOOKS).start()
    yield running
    running.stop()


FAST_WEBHOOKS = {
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
    "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,1,1,2",
    "WEBHOOK_TIMEOUT_SECONDS": "3",
}


def add_endpoint(stack, url: str, *args: str) -> str:
    """The new endpoint's secret, from the last line `webhooks add` prints."""
    return stack.manage("webhooks", "add", url, *args).stdout.splitlines()[-1]


@contextlib.contextmanager
def endpoint(stack, url: str, *args: str):
    """An endpoint for one test: (its id, its secret); disabled afterwards, so
    the module's other tests' orders do not reach it."""
    lines = stack.manage("webhooks", "add", url, *args).stdout.splitlines()
    endpoint_id = re.match(r"Endpoint (\d+) added", lines[0]).group(1)
    try:
        yield endpoint_id, lines[-1]
    finally:
        stack.manage("webhooks", "disable", endpoint_id)


def accepted_event_ids(receiver) -> set[int]:
    return {json.loads(r.body)["data"]["event_id"] for r in receiver.accepted()}


def events_of(stack, order_ids) -> set[int]:
    return {
        event["event_id"]
        for order_id in order_ids
        for event in stack.status(order_id)["events"]
    }


def test_a_receiver_refusing_at_first_gets_every_event_signed_and_in_order(stack):
    with (
        Receiver(answers=[500, 503, 500, 502, 500]) as receiver,
        endpoint(stack, receiver.url) as (_, secret),
    ):
        order_ids = [stack.place(fail_times=n % 2)["order_id"] for n in range(6)]
        for order_id in order_ids:
            stack.wait_for_terminal(order_id)
        expected = events_of(stack, order_ids)

        def all_accepted():
            got = {json.loads(r.body)["data"]["event_id"] for r in receiver.accepted()}
            return got >= expected

        wait_until(all_accepted, timeout=60, what="every event accepted")
        requests = receiver.received()

    verifier = Webhook(secret)
    for request in requests:
        verifier.verify(request.body, request.headers)
    accepted = [r for r in requests if r.answered == 200]
    refused = [r for r in requests if r.answered != 200]
    assert len(refused) == 5
    accepted_ids = {r.headers["webhook-id"] for r in accepted}
    assert {r.headers["webhook-id"] for r in refused} <= accepted_ids
    by_id = {r.headers["webhook-id"]: r.body for r in accepted}
    assert all(by_id[r.headers["webhook-id"]] == r.body for r in refused)
    per_order = defaultdict(list)
    for request in accepted:
        data = json.loads(request.body)["data"]
        per_order[data["order_id"]].append(data["event_id"])
    assert set(per_order) == set(order_ids)
    for event_ids in per_order.values():
        assert event_ids == sorted(event_ids)


def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_up(stack):
    port = free_port()
    receiver = Receiver(port=port)
    with endpoint(stack, receiver.url, "--events", "order.completed"):
        order_ids = [stack.place()["order_id"] for _ in range(3)]
        for order_id in order_ids:
            stack.wait_for_terminal(order_id)
        # Nothing listens: each attempt is refused and retried.
        wait_until(
            lambda: (
                stack.read_one(
                    "SELECT COUNT(*) FROM orders_webhookattempt "
                    "WHERE status_code IS NULL"
                )[0]
                >= 3
            ),
            timeout=30,
            what="attempts refused while the receiver is down",
        )
        with receiver:
            receiver.wait_for(3, timeout=30)
            got = {json.loads(r.body)["data"]["order_id"] for r in receiver.accepted()}
    assert got == set(order_ids)


def test_a_hanging_receiver_delays_neither_orders_nor_another_endpoint(stack):
    with (
        Receiver(delay=60) as hanging,
        Receiver() as fast,
        endpoint(stack, hanging.url),
        endpoint(stack, fast.url),
    ):
        started = time.monotonic()
        order_ids = [stack.place()["order_id"] for _ in range(8)]
        for order_id in order_ids:
            stack.wait_for_terminal(order_id, timeout=15)
        expected = events_of(stack, order_ids)
        wait_until(
            lambda: accepted_event_ids(fast) >= expected,
            timeout=15,
            what="the fast endpoint to get every event",
        )
        took = time.monotonic() - started
        assert hanging.received(), "the hanging receiver was called"
    # Every request to the hanging one takes the 3 s timeout; the fast one got
    # all its events meanwhile.
    assert took < 12


def test_a_cluster_killed_between_sending_and_recording_sends_again(fresh_stack):
    own = fresh_stack(**FAST_WEBHOOKS)
    with (
        Receiver(delay=2) as receiver,
        endpoint(own, receiver.url, "--events", "order.completed"),
    ):
        order_id = own.place()["order_id"]
        receiver.wait_for(1, timeout=30, accepted=False)
        own.kill_cluster()  # the request is under way; its answer never recorded
        own.start_cluster()

        receiver.wait_for(2, timeout=60)
        requests = receiver.received()
    assert {r.headers["webhook-id"] for r in requests} == {
        requests[0].headers["webhook-id"]
    }
    assert {json.loads(r.body)["data"]["order_id"] for r in requests} == {order_id}
    recorded = wait_until(
        lambda: own.read_one(
            "SELECT state, attempts FROM orders_webhookmessage WHERE state = ?",
            ("DELIVERED",),
        ),
        timeout=20,
        what="the second attempt recorded",
    )
    assert recorded == ("DELIVERED", 2)
