"""The cluster's queue and locks with real processes: SIGKILL one at the moment
that matters and look at what it left behind."""

import fcntl
import multiprocessing
import os
import signal
import struct
import termios
import threading
import time
from queue import Empty

import pytest
from django_q.queues import Queue as DjangoQQueue

from orders.workers.djangoq.queues import READER, WRITER, ClusterQueue, RobustLock
from tests.stack import wait_until

fork = multiprocessing.get_context("fork")


def hold(lock, ready):
    with lock:
        ready.set()
        time.sleep(60)


def take(queue):
    queue.get()


def put_and_sleep(queue, message):
    queue.put(message)
    time.sleep(60)


def started(target, *args):
    process = fork.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def kill(process):
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=10)
    assert process.exitcode == -signal.SIGKILL


@pytest.fixture
def processes():
    """Children a test starts; whatever is left is killed afterwards."""
    children = []
    yield children
    for child in children:
        if child.is_alive():
            kill(child)


def test_a_lock_whose_holder_is_killed_is_free_at_once(processes):
    lock, ready = RobustLock(), fork.Event()
    holder = started(hold, lock, ready)
    processes.append(holder)
    assert ready.wait(10)
    assert not lock.acquire(timeout=0.2)
    kill(holder)
    assert lock.acquire(timeout=5)
    lock.release()


def test_a_multiprocessing_lock_whose_holder_is_killed_stays_held(processes):
    """What django-q2's queue is built on, and why it is replaced."""
    lock, ready = fork.Lock(), fork.Event()
    holder = started(hold, lock, ready)
    processes.append(holder)
    assert ready.wait(10)
    kill(holder)
    assert not lock.acquire(timeout=1)


def taken_by_another_thread(lock) -> bool:
    results = []

    def take_and_give_back():
        results.append(lock.acquire(timeout=0.1))
        if results[0]:
            lock.release()

    thread = threading.Thread(target=take_and_give_back)
    thread.start()
    thread.join()
    return results[0]


def test_the_lock_is_reentrant_and_keeps_other_threads_out():
    lock = RobustLock()
    assert lock.acquire()
    assert lock.acquire()
    assert not taken_by_another_thread(lock)
    lock.release()
    assert not taken_by_another_thread(lock)
    lock.release()
    assert taken_by_another_thread(lock)


def test_releasing_a_lock_this_thread_does_not_hold_is_an_error():
    with pytest.raises(RuntimeError):
        RobustLock().release()


def test_messages_and_stop_pills_pass_and_the_size_counter_follows():
    queue = ClusterQueue(name="task")
    for message in ({"id": 1}, {"id": 2}, "STOP"):
        queue.put(message)
    assert queue.qsize() == 3
    assert [queue.get(timeout=5) for _ in range(3)] == [{"id": 1}, {"id": 2}, "STOP"]
    assert queue.qsize() == 0
    assert queue.empty()


def test_a_get_that_times_out_leaves_the_lock_free_and_the_record_clean():
    queue = ClusterQueue(name="task")
    with pytest.raises(Empty):
        queue.get(timeout=0.1)
    with pytest.raises(Empty):
        queue.get(block=False)
    assert queue._record[READER] == 0
    assert queue._rlock.acquire(block=False)
    queue._rlock.release()


def test_a_reader_killed_while_waiting_leaves_the_queue_readable(processes, caplog):
    queue = ClusterQueue(name="task")
    reader = started(take, queue)
    processes.append(reader)
    wait_until(
        lambda: queue._record[READER] == reader.pid,
        timeout=10,
        what="the reader waiting with the read lock",
    )
    kill(reader)
    assert not queue.died_mid_transfer(reader.pid)
    queue.put("next")
    assert queue.get(timeout=5) == "next"
    assert f"process {reader.pid} died waiting for a message" in caplog.text


def test_django_q2s_queue_stays_locked_after_a_reader_killed_while_waiting(
    processes,
):
    """The wedge the cluster queue removes: the message is there, unreadable."""
    queue = DjangoQQueue()
    reader = started(take, queue)
    processes.append(reader)

    def reader_holds_the_lock():
        if queue._rlock.acquire(block=False):
            queue._rlock.release()
            return False
        return True

    wait_until(reader_holds_the_lock, timeout=10, what="the reader with the lock")
    kill(reader)
    queue.put("next")
    with pytest.raises(Empty):
        queue.get(timeout=1)


def test_a_reader_that_exits_after_its_message_left_nothing_behind(processes, caplog):
    """A worker that django-q2 recycles exits between messages."""
    queue = ClusterQueue(name="task")
    reader = started(take, queue)
    processes.append(reader)
    queue.put("only")
    reader.join(timeout=10)
    assert reader.exitcode == 0
    assert not queue.died_mid_transfer(reader.pid)
    queue.put("next")
    assert queue.get(timeout=5) == "next"
    assert "died" not in caplog.text


def test_a_reader_killed_inside_a_message_is_named_and_nobody_reads_after_it(
    processes, caplog
):
    queue = ClusterQueue(name="task")
    # The first 10 of 100 bytes: the reader takes them and waits for the rest.
    os.write(queue._writer.fileno(), struct.pack("!i", 100) + b"x" * 10)
    reader = started(take, queue)
    processes.append(reader)
    wait_until(
        lambda: queue._record[READER] == -reader.pid,
        timeout=10,
        what="the reader inside the message",
    )
    kill(reader)
    assert queue.died_mid_transfer(reader.pid)
    # The rest would be read as a message of its own: better none at all.
    os.write(queue._writer.fileno(), b"y" * 90)
    with pytest.raises(Empty):
        queue.get(timeout=0.3)
    assert f"process {reader.pid} died while reading a message" in caplog.text
    assert queue.died_mid_transfer(reader.pid)


def test_a_writer_killed_inside_a_message_is_named_and_nobody_writes_after_it(
    processes,
):
    queue = ClusterQueue(name="task")
    # Larger than the pipe holds: with no reader the writer stops inside it.
    writer = started(put_and_sleep, queue, b"z" * 1_000_000)
    processes.append(writer)
    wait_until(
        lambda: queue._record[WRITER] == writer.pid,
        timeout=10,
        what="the writer inside the message",
    )
    kill(writer)
    assert queue.died_mid_transfer(writer.pid)
    drain(queue)
    second = started(put_and_sleep, queue, "after")
    processes.append(second)
    time.sleep(0.5)  # ample for its feeder thread to write a short message
    assert pipe_bytes(queue) == 0
    assert queue._record[WRITER] == writer.pid


def pipe_bytes(queue) -> int:
    (count,) = struct.unpack(
        "i", fcntl.ioctl(queue._reader.fileno(), termios.FIONREAD, b"\0" * 4)
    )
    return count


def drain(queue) -> None:
    fd = queue._reader.fileno()
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                os.read(fd, 65536)
            except BlockingIOError:
                return
    finally:
        os.set_blocking(fd, True)
