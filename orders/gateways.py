"""The steps an order goes through, behind small interfaces.

Each step is called with an idempotency key derived from the order and the step,
the same on every attempt, so a step interrupted after the gateway acted (the
worker killed before the checkpoint) can be run again without acting twice: the
gateway answers a key it has already served with its first result. That is the
contract a real payment or stock gateway must meet (README, "Steps").

The default implementations are simulated: they succeed, fail at random with
ORDER_FAILURE_RATE, or follow the order's `simulate` plan, so demos and tests can
make each failure strategy play out deterministically. Their ledger of what they
did stands in for the gateway's own database (SimulatedLedger).
"""

import fcntl
import os
import random
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from django.conf import settings

from orders.exceptions import PermanentStepError, TransientStepError

STEPS = ("payment", "stock")

FAILURE_MESSAGES = {
    ("payment", "transient"): "payment gateway timed out",
    ("payment", "permanent"): "card declined",
    ("stock", "transient"): "stock service unavailable",
    ("stock", "permanent"): "item out of stock",
}

# What a step's reference starts with, and what it did (for the timeline).
REFERENCE_PREFIX = {"payment": "pay_", "stock": "rsv_"}


@dataclass(frozen=True)
class StepResult:
    """What a gateway did: its reference, and whether it had done it already for
    this idempotency key (the earlier attempt's worker died before recording it)."""

    reference: str
    replayed: bool = False


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class StepOrder:
    """What a step is told about an order: plain values, never the row, so a
    gateway neither writes to the order nor depends on the ORM. `simulate` is
    the order's failure-injection plan (empty for a real order)."""

    order_id: str
    amount: Decimal
    currency: str
    lines: tuple[Line, ...] = ()
    simulate: dict = field(default_factory=dict)


class Step(Protocol):
    name: str

    def run(
        self, order: StepOrder, *, attempt: int, idempotency_key: str
    ) -> StepResult:
        """Do the step's work or raise a StepError saying how it failed."""


def step_idempotency_key(order_id: str, step: str) -> str:
    """Stable across attempts and operator retries: a step that succeeded once is
    never done again for this order."""
    return f"{order_id}:{step}"


@dataclass(frozen=True)
class SimulationPlan:
    fail_times: int = 0
    failure: str = "transient"
    step: str = "payment"
    delay_ms: int = 0
    # Which step sleeps delay_ms, and whether before the gateway call or after it
    # (the gateway has acted, the checkpoint is not written: the window a killed
    # worker leaves behind).
    delay_step: str = "payment"
    delay_when: str = "before"
    listener_fails: bool = False

    @classmethod
    def for_order(cls, order: StepOrder) -> "SimulationPlan":
        return cls(**(order.simulate or {}))

    def fails(self, step: str, attempt: int) -> bool:
        return step == self.step and attempt <= self.fail_times

    def pause(self, step: str, when: str) -> None:
        # Every attempt sleeps, failing or not, so a test can hold an order in a
        # step (to kill its worker there, say).
        if self.delay_ms and step == self.delay_step and when == self.delay_when:
            time.sleep(self.delay_ms / 1000)


def step_error(step: str, kind: str):
    error_class = PermanentStepError if kind == "permanent" else TransientStepError
    return error_class(step, FAILURE_MESSAGES[(step, kind)])


class SimulatedLedger:
    """What the simulated gateways have done, keyed by idempotency key, shared by
    every worker process on the machine: a SQLite file of its own under
    ORDER_SIMULATED_GATEWAY_DIR, where the first caller of a key wins and every
    later caller is answered with what the first one got.

    A file of its own, not a table: the gateway stands for another company's
    system, so its bookkeeping takes no part in this service's database
    transactions or locks. One file, not a file per key: a file per key is an
    inode per step of every order in one directory, without bound, and creating
    inodes slows down sharply after many are deleted
    (docs/developers/processing.md, "The simulated gateways").
    """

    FILE_NAME = "ledger.sqlite3"

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _connection(self) -> sqlite3.Connection:
        # One connection per process and thread: a forked worker must not use
        # its parent's, and a connection is not for two threads at once.
        key = (os.getpid(), threading.get_ident(), str(self.directory))
        connection = _ledger_connections.get(key)
        if connection is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.directory / self.FILE_NAME, isolation_level=None, timeout=30
            )
            # Setting up the file takes SQLite's exclusive lock, for which it
            # does not wait (two workers starting at once: "database is
            # locked"), so the processes take turns on a lock file of their own.
            with open(self.directory / "ledger.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS ledger "
                    "(key TEXT PRIMARY KEY, reference TEXT NOT NULL) WITHOUT ROWID"
                )
            # A worker killed mid-call loses nothing the gateway wrote (the
            # operating system has it); only a machine crash could.
            connection.execute("PRAGMA synchronous=OFF")
            _ledger_connections[key] = connection
        return connection

    def record(self, key: str, reference: str) -> StepResult:
        """Keep `reference` for `key`, or return the one kept before. The insert
        does nothing if the key exists, so of two callers with one key exactly
        one acts. BEGIN IMMEDIATE takes the write lock first, waiting for it:
        a write that started as a read can fail at once instead, when another
        process wrote in between."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            inserted = connection.execute(
                "INSERT INTO ledger (key, reference) VALUES (?, ?) "
                "ON CONFLICT (key) DO NOTHING RETURNING reference",
                (key, reference),
            ).fetchone()
            kept = None
            if inserted is None:
                (kept,) = connection.execute(
                    "SELECT reference FROM ledger WHERE key = ?", (key,)
                ).fetchone()
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if kept is None:
            return StepResult(reference=reference)
        return StepResult(reference=kept, replayed=True)

    def references(self, prefix: str = "") -> dict[str, str]:
        """Every key (starting with `prefix`) and its reference: what a test or an
        operator checks to see that nothing was done twice."""
        if not (self.directory / self.FILE_NAME).exists():
            return {}
        rows = self._connection().execute(
            "SELECT key, reference FROM ledger WHERE substr(key, 1, ?) = ? "
            "ORDER BY key",
            (len(prefix), prefix),
        )
        return dict(rows.fetchall())


_ledger_connections: dict[tuple, sqlite3.Connection] = {}


def simulated_ledger() -> SimulatedLedger:
    return SimulatedLedger(settings.ORDER_SIMULATED_GATEWAY_DIR)


@dataclass(frozen=True)
class SimulatedStep:
    name: str

    def run(
        self, order: StepOrder, *, attempt: int, idempotency_key: str
    ) -> StepResult:
        plan = SimulationPlan.for_order(order)
        plan.pause(self.name, "before")
        if plan.fails(self.name, attempt):
            raise step_error(self.name, plan.failure)
        random_failure = (
            not order.simulate
            and self.name == STEPS[0]
            and random.random() < settings.ORDER_FAILURE_RATE
        )
        if random_failure:
            raise step_error(self.name, "transient")
        reference = REFERENCE_PREFIX[self.name] + secrets.token_hex(8)
        result = simulated_ledger().record(idempotency_key, reference)
        plan.pause(self.name, "after")
        return result


def order_steps() -> list[Step]:
    return [SimulatedStep(name) for name in STEPS]
