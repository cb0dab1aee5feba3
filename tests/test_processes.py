"""Stopping the processes `serve` starts (orders/workers/processes.py), with real child
processes."""

import signal
import subprocess
import sys

from orders.workers.processes import stop_all

# A child that writes a line per SIGTERM it gets and exits half a second after
# the first: long enough for a second signal to reach it.
COUNTS_ITS_SIGTERMS = """
import signal, sys, time
received = []
def on_term(signum, frame):
    received.append(signum)
    print("SIGTERM", flush=True)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while not received:
    time.sleep(0.01)
time.sleep(0.5)
sys.exit(0)
"""

# A child that ignores SIGTERM.
IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def start(script: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def counting_signals(process: subprocess.Popen) -> list[int]:
    """The signals sent to `process` through its Popen, recorded as they go.
    (Two SIGTERMs sent microseconds apart usually reach a process as one, so
    only the sender can tell that it sent two.)"""
    sent: list[int] = []
    send_signal = process.send_signal

    def recording(signum):
        sent.append(signum)
        send_signal(signum)

    process.send_signal = recording
    return sent


def test_each_process_gets_one_sigterm_and_is_waited_for():
    children = [start(COUNTS_ITS_SIGTERMS), start(COUNTS_ITS_SIGTERMS)]
    sent = [counting_signals(child) for child in children]

    stop_all(children, timeout=10)

    for child, signals in zip(children, sent, strict=True):
        assert signals == [signal.SIGTERM]
        assert child.returncode == 0
        assert child.stdout.read().split() == ["SIGTERM"]


def test_a_process_that_does_not_stop_in_time_is_killed():
    child = start(IGNORES_SIGTERM)

    stop_all([child], timeout=0.5)

    assert child.returncode == -9


def test_a_process_that_has_exited_already_is_left_as_it_is():
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    child.wait(timeout=10)

    stop_all([child], timeout=1)

    assert child.returncode == 0
