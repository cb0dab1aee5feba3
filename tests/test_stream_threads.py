"""The streams' database threads (orders/live/threads.py): calls run on
threads of their own, in turns, their results and errors come back to their
callers, and a backlog or a long wait refuses new calls at once."""

import asyncio
import threading
import time

import pytest

from orders.live.threads import DatabaseThreads, Saturated


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_calls_run_off_the_event_loop_in_few_turns_and_return_in_order():
    threads = DatabaseThreads("test", 2)
    ran_on = set()

    def work(number):
        ran_on.add(threading.current_thread().name)
        return number * 2

    async def scenario():
        loop_thread = threading.current_thread().name
        results = await asyncio.gather(*(threads.run(work, n) for n in range(200)))
        return loop_thread, results

    loop_thread, results = run(scenario())
    threads.close()
    assert results == [n * 2 for n in range(200)]
    assert loop_thread not in ran_on
    assert all(name.startswith("test") for name in ran_on)


def test_an_exception_is_raised_where_the_call_was_awaited():
    threads = DatabaseThreads("test", 1)

    def broken():
        raise KeyError("a bug")

    async def scenario():
        with pytest.raises(KeyError):
            await threads.run(broken)
        return await threads.run(lambda: "still works")

    assert run(scenario()) == "still works"
    threads.close()


def test_calls_beyond_the_backlog_are_refused_without_running():
    threads = DatabaseThreads("test", 1, backlog=3)
    release = threading.Event()
    ran = []

    def slow(number):
        release.wait(5)
        ran.append(number)

    async def scenario():
        waiting = [asyncio.ensure_future(threads.run(slow, n)) for n in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(Saturated):
            await threads.run(slow, 99)
        release.set()
        await asyncio.gather(*waiting)

    run(scenario())
    threads.close()
    assert sorted(ran) == [0, 1, 2]


def test_a_call_is_refused_at_once_while_the_last_one_waited_too_long():
    threads = DatabaseThreads("test", 1, max_wait=0.1)

    async def scenario():
        # One call holds the thread; the next waits 0.3 s for it.
        first = asyncio.ensure_future(threads.run(time.sleep, 0.3))
        second = asyncio.ensure_future(threads.run(time.sleep, 0.3))
        third = asyncio.ensure_future(threads.run(time.sleep, 0.01))
        await asyncio.sleep(0.5)  # the second has started, after a 0.3 s wait
        started = time.monotonic()
        with pytest.raises(Saturated):
            await threads.run(time.sleep, 0)
        refused_in = time.monotonic() - started
        await asyncio.gather(first, second, third)
        # Once nothing waits, calls are taken again.
        await threads.run(time.sleep, 0)
        return refused_in

    assert run(scenario()) < 0.05
    threads.close()
