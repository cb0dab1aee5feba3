"""The admins' mail never holds up the workers: with an SMTP server that accepts
connections and never answers, a failure is recorded at once and orders keep
moving while the mail waits for its timeout."""

import json
import socket
import threading
import time

import pytest

from tests.stack import wait_until

pytestmark = pytest.mark.e2e

# orderproj/settings/mail.py: EMAIL_TIMEOUT for smtp:// transports.
SMTP_TIMEOUT_SECONDS = 10


class SilentSmtpServer:
    """Accepts TCP connections on 127.0.0.1 and never sends the SMTP greeting,
    like a mail server that hangs: a client waits for its own timeout."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connected_at: list[float] = []
        self.stopping = threading.Event()
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connected_at.append(time.monotonic())
            self.held.append(conn)

    def close(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_smtp():
    server = SilentSmtpServer()
    yield server
    server.close()


def failure_records(stack) -> list[dict]:
    output = stack.manage(
        "shell",
        "-c",
        "import json; from orders.models import FailureRecord as F; "
        "print(json.dumps(list(F.objects.values('task', 'group__count'))))",
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.alone
def test_a_hanging_mail_server_holds_up_no_worker(fresh_stack, silent_smtp):
    # One worker: if it waited on the mail server, nothing else could run.
    stack = fresh_stack(
        Q_WORKERS="1",
        ADMINS="ops@example.com",
        EMAIL_URL=f"smtp+plain://127.0.0.1:{silent_smtp.port}",
    )
    placed = stack.place(listener_fails=True)
    code = stack.wait_for_terminal(placed["order_id"])["delivery"]["code"]
    staff = stack.staff_client()
    assert staff.post(f"/api/deliveries/{code}/complete").status_code == 200
    staff.close()

    # The listener's failure is recorded before anyone tries to mail it.
    records = wait_until(
        lambda: failure_records(stack), timeout=20, what="the listener's record"
    )
    assert records == [
        {"task": "orders.tasks.order_delivery_completed", "group__count": 1}
    ]
    wait_until(
        lambda: silent_smtp.connected_at, timeout=20, what="a mail to be attempted"
    )
    mail_started = silent_smtp.connected_at[0]

    # While that mail hangs, an order runs on the one worker from start to end.
    order_id = stack.place()["order_id"]
    document = stack.wait_for_terminal(order_id, timeout=SMTP_TIMEOUT_SECONDS - 2)
    assert document["status"] == "COMPLETED"
    assert time.monotonic() - mail_started < SMTP_TIMEOUT_SECONDS
    # The mail is given up after its timeout, and that is logged, not hidden.
    wait_until(
        lambda: "could not mail the admins" in stack.all_logs(),
        timeout=SMTP_TIMEOUT_SECONDS + 10,
        what="the failed mail to be logged",
    )
