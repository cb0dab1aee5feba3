"""The Procfile as README.md ("Scale-out") runs it: honcho with two web processes
and a worker, here on a temporary SQLite file (the scale-out configuration only
changes DATABASE_URL and REDIS_URL, which the scale-out tests cover)."""

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from orders.workers.processes import descendants_of, kill_session, local_env
from tests.stack import (
    DEFAULT_ENV,
    PROJECT_DIR,
    make_stack,
    procfile_lines,
    wait_until,
)

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_procfile_names_a_web_and_a_worker_service():
    services = procfile_lines()
    assert sorted(services) == ["web", "worker"]
    assert "orderproj.asgi:application" in services["web"]
    assert "$PORT" in services["web"]
    assert services["worker"] == "python manage.py serve --only workers"


def test_honcho_runs_two_web_processes_and_a_worker_and_stops_them_all(tmp_path):
    env = local_env(tmp_path, **DEFAULT_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    make_stack(tmp_path).migrate()
    base = free_consecutive_ports(2)
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-p", str(base)]
        + ["-c", "web=2,worker=1"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    urls = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
    try:

        def healthy(url):
            assert honcho.poll() is None, (tmp_path / "honcho.log").read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        for url in urls:
            wait_until(lambda url=url: healthy(url), timeout=60, what=f"{url}/healthz")
        placed = httpx.post(
            f"{urls[1]}/api/orders",
            json={
                "customer_email": "buyer@example.com",
                "items": [{"sku": "MUG-1", "quantity": 1, "unit_price": "3.00"}],
                "simulate": {"fail_times": 1},
            },
            timeout=10,
        )
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]

        def completed():
            document = httpx.get(f"{urls[0]}/api/orders/{order_id}", timeout=10)
            return document.json()["status"] == "COMPLETED"

        wait_until(completed, timeout=60, what="the order to complete")
        processes = descendants_of(honcho.pid)
        # honcho's shells, daphne twice, serve and its qcluster (main, sentinel,
        # workers, monitor, pusher).
        assert len(processes) >= 8, processes

        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=30)

        def all_gone():
            return not [pid for pid in processes if alive(pid)]

        wait_until(all_gone, timeout=30, what="every process to stop")
        output = (tmp_path / "honcho.log").read_text()
        # The qcluster's orderly stop (its main process alone got SIGTERM); a
        # plain `qcluster` line dies of the signal without it.
        assert "stopping cluster processes" in output
    finally:
        if honcho.poll() is None:  # the test failed: honcho stops what it runs
            honcho.terminate()
            try:
                honcho.wait(timeout=30)
            finally:
                kill_session(honcho)


def free_consecutive_ports(count: int) -> int:
    """The first of `count` consecutive ports free on 127.0.0.1 (honcho gives
    web.1 $PORT and web.2 $PORT + 1), below the kernel's ephemeral range, where
    no outgoing connection takes one meanwhile (a port picked by binding port 0
    is in that range, and the one after it was once an open connection's)."""
    low, _high = map(
        int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    for _ in range(200):
        base = random.randrange(10000, low - count)
        if all(_bindable(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
