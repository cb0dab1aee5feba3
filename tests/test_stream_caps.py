"""How many streams a web process holds (orders/live/caps.py), in-process: per
client address (429) and in all (503), both with Retry-After in the JSON error
shape and before any database work. The same against a real daphne, with its
file-descriptor limit: tests/e2e/test_stream_caps_e2e.py."""

import asyncio
import json
import logging
import resource

import pytest

from orders.live import caps
from orders.live.caps import process_cap, raise_file_limit, streams_allowed_by
from tests.test_streams import StreamClient, run, staff_session_header

pytestmark = pytest.mark.django_db(transaction=True)


def stream_from(order, address: str, *, forwarded_for: str | None = None):
    client = StreamClient(f"/api/orders/{order.order_id}/events")
    client.scope["client"] = (address, 40000)
    if forwarded_for is not None:
        client.scope["headers"].append((b"x-forwarded-for", forwarded_for.encode()))
    return client


async def refusal_of(client) -> tuple[int, dict, dict]:
    await client.start()
    body = json.loads(await client.body())
    await asyncio.wait_for(client.task, 5)
    return client.status, client.headers, body


def test_a_client_past_its_stream_cap_is_answered_429_with_retry_after(
    place_order, settings
):
    settings.ORDER_STREAMS_PER_CLIENT = 2
    order = place_order()

    async def scenario():
        held = [await stream_from(order, "203.0.113.7").start() for _ in range(2)]
        refused = await refusal_of(stream_from(order, "203.0.113.7"))
        for client in held:
            await client.close()
        return [client.status for client in held], refused

    statuses, (status, headers, body) = run(scenario())
    assert statuses == [200, 200]
    assert status == 429
    assert headers["content-type"] == "application/json"
    assert int(headers["retry-after"]) > 0
    assert body["error"] == "too_many_streams"
    assert body["detail"]


def test_the_caps_answer_before_any_database_work(settings):
    """An order that does not exist would be a 404 and a caller without a
    session a 403, each after a query: at the cap both are refused first."""
    settings.ORDER_STREAMS_PER_CLIENT = 1
    headers = staff_session_header()

    async def scenario():
        held = await StreamClient("/api/events", headers=headers).start()
        unknown = await refusal_of(StreamClient("/api/orders/ord_nope/events"))
        anonymous = await refusal_of(StreamClient("/api/events"))
        await held.close()
        return held.status, unknown[0], anonymous[0]

    assert run(scenario()) == (200, 429, 429)


def test_the_cap_counts_each_client_address_apart(place_order, settings):
    """Behind a trusted proxy each client is the address the proxy appended, not
    the proxy's own, nor what the client wrote on the left."""
    settings.ORDER_STREAMS_PER_CLIENT = 1
    settings.TRUSTED_PROXY_HOPS = 1
    order = place_order()

    async def scenario():
        first = await stream_from(
            order, "10.0.0.1", forwarded_for="203.0.113.7"
        ).start()
        other = await stream_from(
            order, "10.0.0.1", forwarded_for="6.6.6.6, 198.51.100.2"
        ).start()
        rotated = await refusal_of(
            stream_from(order, "10.0.0.1", forwarded_for="1.1.1.1, 203.0.113.7")
        )
        await first.close()
        await other.close()
        return first.status, other.status, rotated[0]

    assert run(scenario()) == (200, 200, 429)


def test_a_stream_that_ends_gives_its_slot_back(place_order, settings):
    settings.ORDER_STREAMS_PER_CLIENT = 1
    order = place_order()

    async def scenario():
        statuses = []
        for _ in range(3):
            client = await stream_from(order, "203.0.113.7").start()
            statuses.append(client.status)
            await client.close()
        return statuses, caps.stream_slots.open, dict(caps.stream_slots.by_client)

    assert run(scenario()) == ([200, 200, 200], 0, {})


def test_a_process_past_its_stream_cap_answers_503_with_retry_after(
    place_order, settings
):
    settings.ORDER_STREAMS_PER_CLIENT = 0
    settings.ORDER_STREAMS_PER_PROCESS = 3
    order = place_order()

    async def scenario():
        held = [await stream_from(order, f"203.0.113.{n}").start() for n in range(1, 4)]
        refused = await refusal_of(stream_from(order, "198.51.100.2"))
        for client in held:
            await client.close()
        return refused

    status, headers, body = run(scenario())
    assert status == 503
    assert int(headers["retry-after"]) > 0
    assert body["error"] == "stream_unavailable"
    assert body["detail"]


def test_zero_turns_the_per_client_cap_off(place_order, settings):
    settings.ORDER_STREAMS_PER_CLIENT = 0
    order = place_order()

    async def scenario():
        held = [await stream_from(order, "203.0.113.7").start() for _ in range(30)]
        for client in held:
            await client.close()
        return {client.status for client in held}

    assert run(scenario()) == {200}


@pytest.mark.parametrize(
    ("descriptors", "streams"),
    [(1024, 896), (256, 156), (80, 1), (1_048_576, 917_504)],
)
def test_the_process_cap_leaves_a_reserve_of_the_descriptor_limit(descriptors, streams):
    assert streams_allowed_by(descriptors) == streams


def test_unset_the_process_cap_follows_the_descriptor_limit(settings):
    settings.ORDER_STREAMS_PER_PROCESS = None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert process_cap() == streams_allowed_by(soft)
    settings.ORDER_STREAMS_PER_PROCESS = 0
    assert process_cap() == 0


def test_the_web_process_raises_its_descriptor_limit_and_says_how_many_streams(
    settings, caplog
):
    settings.ORDER_STREAMS_PER_PROCESS = None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(hard, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        with caplog.at_level(logging.INFO, logger="orders.live.caps"):
            raise_file_limit()
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised == hard
    assert (
        f"soft limit {hard} (was {lowered}, hard limit {hard}): "
        f"up to {streams_allowed_by(hard)} streams in this process" in caplog.text
    )
