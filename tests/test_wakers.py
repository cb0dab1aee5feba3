"""The pump's wakers (orders/live/wakers.py): push through a channels layer,
polling as the safety net and as the fallback while the layer fails. Driven by a
layer that does what channels_redis does when Redis answers or is down."""

import asyncio
import logging

import pytest

from orders.live.wakers import LayerWaker, PollWaker, make_waker
from orders.state import notify

INTERVAL = 0.05
DEADLINE = 2.0


class FakeLayer:
    """A channels layer whose Redis can be taken down and brought back."""

    def __init__(self, *, down: bool = False):
        self.down = down
        self.messages: asyncio.Queue = asyncio.Queue()
        self.joined: list[tuple[str, str]] = []
        self.made = 0

    async def new_channel(self) -> str:
        self.made += 1
        return f"specific.fake!{self.made}"

    async def group_add(self, group: str, channel: str) -> None:
        if self.down:
            raise ConnectionError("Error connecting to 127.0.0.1:9: refused")
        self.joined.append((group, channel))

    async def receive(self, channel: str) -> dict:
        message = await self.messages.get()
        if isinstance(message, Exception):
            raise message
        return message

    def fail(self) -> None:
        """Redis goes away: the receive in progress raises."""
        self.down = True
        self.messages.put_nowait(ConnectionError("Connection closed by server."))


def run(scenario) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def until(condition, what: str) -> None:
    async with asyncio.timeout(DEADLINE):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


async def woken(waker, within: float = DEADLINE) -> bool:
    """Whether the waker's wait() returns within `within` seconds."""
    try:
        await asyncio.wait_for(waker.wait(), within)
    except TimeoutError:
        return False
    return True


def layer_waker(layer, **options) -> LayerWaker:
    options = {
        "interval": INTERVAL,
        "fallback": 30.0,
        "backoff": (0.01, 0.05),
    } | options
    return LayerWaker(layer, **options)


def test_a_message_wakes_the_pump_at_once_and_polling_slows_to_the_fallback():
    async def scenario():
        layer = FakeLayer()
        waker = layer_waker(layer)
        # The first wait subscribes; subscribing wakes it (events written
        # before the subscription are read now).
        assert await woken(waker)
        assert layer.joined == [(notify.EVENTS_GROUP, "specific.fake!1")]
        assert waker.pushing
        assert waker.current_interval() == 30.0
        assert not await woken(waker, within=INTERVAL * 4)
        layer.messages.put_nowait(dict(notify.MESSAGE))
        assert await woken(waker)

    run(scenario)


def test_while_the_layer_fails_it_polls_at_the_normal_rate_and_subscribes_again(
    caplog,
):
    async def scenario():
        layer = FakeLayer()
        waker = layer_waker(layer)
        assert await woken(waker)
        layer.fail()
        assert await woken(waker)
        await until(lambda: not waker.pushing, "push to be given up")
        assert waker.current_interval() == INTERVAL
        # Nothing nudges it: polls at the normal rate, several times.
        for _ in range(3):
            assert await woken(waker, within=INTERVAL * 4)
        await until(lambda: waker.failures >= 2, "subscribing to be retried")
        layer.down = False
        await until(lambda: waker.pushing, "push to resume")
        assert waker.current_interval() == 30.0
        # The same channel joins again: no stale member left in the group.
        assert layer.joined == [(notify.EVENTS_GROUP, "specific.fake!1")] * 2
        layer.messages.put_nowait(dict(notify.MESSAGE))
        assert await woken(waker)

    with caplog.at_level(logging.WARNING, logger="orders.live.wakers"):
        run(scenario)
    assert "the channels layer failed" in caplog.text
    assert "Connection closed by server." in caplog.text
    assert "subscribed again" in caplog.text


def test_a_layer_down_from_the_start_means_polling_until_it_comes_up():
    async def scenario():
        layer = FakeLayer(down=True)
        waker = layer_waker(layer)
        for _ in range(3):
            assert await woken(waker, within=INTERVAL * 4)
        assert not waker.pushing
        layer.down = False
        await until(lambda: waker.pushing, "push to start")

    run(scenario)


def test_subscribing_again_backs_off_up_to_its_limit():
    async def scenario():
        layer = FakeLayer(down=True)
        waker = layer_waker(layer, backoff=(0.01, 0.04))
        started = asyncio.get_running_loop().time()
        await woken(waker, within=INTERVAL)
        await until(lambda: waker.failures >= 6, "six failed subscriptions")
        elapsed = asyncio.get_running_loop().time() - started
        # 0.01 + 0.02 + 0.04 + 0.04 + 0.04 at least, and no faster.
        assert elapsed >= 0.15

    run(scenario)


def test_membership_of_the_group_is_renewed_while_subscribed():
    async def scenario():
        layer = FakeLayer()
        waker = layer_waker(layer, refresh=0.02)
        assert await woken(waker)
        await until(lambda: len(layer.joined) >= 3, "the membership to be renewed")
        layer.messages.put_nowait(dict(notify.MESSAGE))
        assert await woken(waker)

    run(scenario)


def test_a_poll_waker_wakes_at_its_interval_and_when_nudged():
    async def scenario():
        waker = PollWaker(30.0)
        assert not await woken(waker, within=INTERVAL)
        asyncio.get_running_loop().call_later(INTERVAL, waker.nudge)
        assert await woken(waker)
        waker = PollWaker(INTERVAL)
        assert await woken(waker, within=INTERVAL * 4)

    run(scenario)


@pytest.mark.django_db(transaction=True)
def test_without_a_layer_a_commit_in_this_process_wakes_its_pump(settings):
    """The embedded default: the API placing an order in the web process nudges
    that process's pump at once (the commit happens on another thread)."""
    settings.CHANNEL_LAYERS = {}
    settings.ORDER_STREAM_POLL_SECONDS = 30.0
    from tests.factories import place

    async def scenario():
        waker = make_waker()
        assert isinstance(waker, PollWaker) and not isinstance(waker, LayerWaker)
        assert not await woken(waker, within=INTERVAL)
        waiting = asyncio.ensure_future(woken(waker))
        await asyncio.to_thread(place)
        assert await waiting

    run(scenario)


def test_with_a_layer_the_pump_gets_a_layer_waker(settings):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    settings.ORDER_STREAM_POLL_SECONDS = 0.3
    settings.ORDER_STREAM_PUSH_FALLBACK_SECONDS = 7.0

    async def scenario():
        waker = make_waker()
        assert isinstance(waker, LayerWaker)
        assert (waker.interval, waker.fallback) == (0.3, 7.0)

    run(scenario)


def test_a_commit_by_another_process_to_the_sqlite_file_wakes_the_pump_at_once(
    tmp_path,
):
    import sqlite3

    from orders.live.wakers import SQLiteWalWaker

    path = tmp_path / "db.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")

    async def scenario():
        loop = asyncio.get_running_loop()
        waker = SQLiteWalWaker(5.0, f"{path}-wal", every=0.005)
        # No commit: it waits (here cut short at 0.3 s of its 5 s interval).
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await waker.wait()
        # A commit on another connection, as a worker's would be.
        loop.call_later(0.05, writer.execute, "INSERT INTO t VALUES (1)")
        started = loop.time()
        await asyncio.wait_for(waker.wait(), DEADLINE)
        return loop.time() - started

    woke_after = asyncio.run(scenario())
    writer.close()
    assert 0.04 < woke_after < 0.5


def test_the_embedded_default_watches_the_wal_of_a_sqlite_file_only():
    from orders.live.wakers import sqlite_wal_path

    sqlite = "django.db.backends.sqlite3"
    postgres = "django.db.backends.postgresql"
    assert sqlite_wal_path({"ENGINE": sqlite, "NAME": "/srv/db.sqlite3"}) == (
        "/srv/db.sqlite3-wal"
    )
    memory = "file:memorydb_default?mode=memory&cache=shared"
    assert sqlite_wal_path({"ENGINE": sqlite, "NAME": memory}) is None
    assert sqlite_wal_path({"ENGINE": postgres, "NAME": "orderproj"}) is None
