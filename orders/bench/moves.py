"""`manage.py bench moves`: the state machine's writes made by each of its
implementations (orders/state/transitions.py, IMPLEMENTATIONS: the raw SQL and
the ORM reference) on the same database in the same run, and the ratio of their
times. It decides where production keeps the raw SQL
(docs/decisions/0001-raw-sql-for-moves.md).

The measuring runs in a process of its own whose environment is the
benchmark's (its throwaway database): `python -m orders.bench.moves`, started
by the bench command. Each round runs every implementation once, in turn, the
first one alternating, so that a machine whose speed drifts moves both alike.
An implementation's round places `moves` orders in each of two lanes and
times, per order:

- the worker's batch lane, as a worker draining a backlog writes: claim_batch()
  of `batch` orders, a step's checkpoints (apply of plan_step), the completions
  with their deliveries (apply of plan_transition);
- the single-order lane: claim(), a failed attempt's move to RETRYING
  (transition) and an event that moves nothing (append_event).
"""

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from orders.bench.environment import bench_environment, describe

PHASES = ("claim_batch", "step", "complete", "claim", "retry", "append_event")


@dataclass(frozen=True)
class MovesPlan:
    # Orders per lane, implementation and round.
    moves: int = 1000
    batch: int = 10
    rounds: int = 3
    timeout: float = 300.0


def run_moves_bench(plan: MovesPlan, progress, *, quiet: bool) -> dict:
    """In the bench command's process: a throwaway database, migrated, and the
    measuring process in it. Returns its report (as_dict of MovesReport)."""
    from django.conf import settings
    from django.core.management.base import CommandError

    from orders.workers.processes import LocalService

    with (
        tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder,
        # DEBUG off: with it on, Django also logs every query it runs.
        bench_environment(
            Path(folder), DEBUG="0", SECRET_KEY=secrets.token_urlsafe(50)
        ) as env,
    ):
        progress(f"moves: {describe(env)}")
        LocalService(workdir=Path(folder), env=env).manage("migrate", "--noinput")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "orders.bench.moves",
                f"--moves={plan.moves}",
                f"--batch={plan.batch}",
                f"--rounds={plan.rounds}",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if quiet else None,
            text=True,
            timeout=plan.timeout,
        )
        if result.returncode:
            raise CommandError(
                f"the moves bench exited {result.returncode}:\n{result.stderr or ''}"
            )
        return json.loads(result.stdout.strip().splitlines()[-1])


def format_moves(report: dict | None) -> list[str]:
    """The report's lines; none when the scenario did not run."""
    if report is None:
        return []
    plan = report["plan"]
    lines = [
        f"moves: {report['database']}, {plan['moves']} orders per lane, batches "
        f"of {plan['batch']}, {plan['rounds']} rounds; µs per order (median of "
        "rounds)",
        f"{'':<14} {'sql':>9} {'orm':>9} {'orm ÷ sql':>10}   rounds",
    ]
    for phase in PHASES:
        figures = report["phases"][phase]
        spread = ", ".join(f"{ratio:.2f}" for ratio in figures["ratios"])
        lines.append(
            f"{phase:<14} {figures['sql_us']:>9.0f} {figures['orm_us']:>9.0f} "
            f"{figures['ratio']:>10.2f}   {spread}"
        )
    return lines


def measure(plan: MovesPlan, progress) -> dict:
    """In the benchmark's process, Django set up on its throwaway database."""
    from django.db import connection

    timings: dict[str, dict[str, list[float]]] = {
        name: {phase: [] for phase in PHASES} for name in ("sql", "orm")
    }
    for round_number in range(plan.rounds):
        order = ("sql", "orm") if round_number % 2 == 0 else ("orm", "sql")
        for name in order:
            seconds = _round(name, plan)
            for phase, value in seconds.items():
                timings[name][phase].append(value / plan.moves * 1e6)
            progress(
                f"round {round_number + 1}/{plan.rounds} {name}: "
                + ", ".join(
                    f"{phase} {value:.2f} s" for phase, value in seconds.items()
                )
            )
    phases = {}
    for phase in PHASES:
        sql, orm = timings["sql"][phase], timings["orm"][phase]
        phases[phase] = {
            "sql_us": statistics.median(sql),
            "orm_us": statistics.median(orm),
            "ratio": statistics.median(orm) / statistics.median(sql),
            "ratios": [o / s for s, o in zip(sql, orm, strict=True)],
        }
    database = connection.settings_dict
    where = (
        f"PostgreSQL {connection.pg_version // 10000}.{connection.pg_version % 10000}"
        if connection.vendor == "postgresql"
        else f"SQLite {connection.Database.sqlite_version}"
    )
    return {
        "plan": asdict(plan),
        "database": f"{where} ({database['NAME']})",
        "phases": phases,
    }


def _round(name: str, plan: MovesPlan) -> dict[str, float]:
    """One implementation's round: seconds spent in each phase."""
    from orders.state import transitions

    with transitions.written_by(name):
        batch = _batch_lane(plan)
        single = _single_lane(plan)
    return {**batch, **single}


def _place(count: int) -> list:
    from orders.models import Order

    # Not timed: placing is not a move. The defaults make them PENDING, at
    # version 1, with no attempts.
    return Order.objects.bulk_create(
        Order(
            customer_email="bench@example.com",
            amount="10.00",
            currency="USD",
            max_attempts=3,
        )
        for _ in range(count)
    )


# Every claim's lease (it ends this long after the database's clock says now).
LEASE_SECONDS = 300


def _now():
    from django.utils import timezone

    return timezone.now()


def _describe(order) -> str:
    return f"attempt {order.attempts} of {order.max_attempts}"


def _batch_lane(plan: MovesPlan) -> dict[str, float]:
    from orders.models import Delivery, Order, OrderEvent
    from orders.state.transitions import (
        PrecedingEvent,
        apply,
        claim_batch,
        plan_step,
        plan_transition,
    )

    placed = _place(plan.moves)
    seconds = dict.fromkeys(("claim_batch", "step", "complete"), 0.0)
    for start in range(0, plan.moves, plan.batch):
        asked = placed[start]
        now = _now()
        started = time.perf_counter()
        claimed = claim_batch(
            asked.order_id,
            like={"attempts": 0, "max_attempts": asked.max_attempts, "steps": {}},
            companions=plan.batch - 1,
            companions_like={"simulate": {}},
            lease_seconds=LEASE_SECONDS,
            describe=_describe,
            now=now,
        )
        seconds["claim_batch"] += time.perf_counter() - started
        orders = claimed.orders
        expected = min(plan.batch, plan.moves - start)
        if len(orders) != expected:
            raise RuntimeError(f"claimed {len(orders)} orders, not {expected}")
        steps = {"payment": {"reference": "bench", "at": now.isoformat()}}
        moves = [
            plan_step(order, step="payment", detail="paid", changes={"steps": steps})
            for order in orders
        ]
        started = time.perf_counter()
        _check(apply(moves))
        seconds["step"] += time.perf_counter() - started
        moves = [
            plan_transition(
                order,
                Order.Status.COMPLETED,
                detail="payment, stock done",
                changes={
                    "lease_expires_at": None,
                    "failure_reason": "",
                    "steps": {**steps, "stock": {"reference": "bench"}},
                },
                preceding=[
                    PrecedingEvent(
                        OrderEvent.Type.STEP_COMPLETED, "stock done", step="stock"
                    )
                ],
                duration_ms=1,
                creates=[Delivery(order=order)],
            )
            for order in orders
        ]
        started = time.perf_counter()
        _check(apply(moves))
        seconds["complete"] += time.perf_counter() - started
    return seconds


def _single_lane(plan: MovesPlan) -> dict[str, float]:
    from orders.models import Order, OrderEvent
    from orders.state.transitions import (
        PrecedingEvent,
        append_event,
        claim,
        transition,
    )

    seconds = dict.fromkeys(("claim", "retry", "append_event"), 0.0)
    for placed in _place(plan.moves):
        now = _now()
        started = time.perf_counter()
        order = claim(
            placed.order_id, lease_seconds=LEASE_SECONDS, describe=_describe, now=now
        )
        seconds["claim"] += time.perf_counter() - started
        if order is None:
            raise RuntimeError(f"order {placed.order_id} was not claimed")
        started = time.perf_counter()
        moved = transition(
            order,
            Order.Status.RETRYING,
            detail="payment declined; attempt 2 of 3 in 1.0 s",
            changes={
                "next_attempt_at": now + timedelta(seconds=LEASE_SECONDS),
                "dispatch_due_at": now + timedelta(seconds=LEASE_SECONDS),
                "lease_expires_at": None,
            },
            preceding=[PrecedingEvent(OrderEvent.Type.ATTEMPT_FAILED, "declined", 1)],
        )
        seconds["retry"] += time.perf_counter() - started
        _check([moved])
        started = time.perf_counter()
        append_event(order, OrderEvent.Type.DELIVERY_COMPLETED, detail="bench")
        seconds["append_event"] += time.perf_counter() - started
    return seconds


def _check(results: list[bool]) -> None:
    if not all(results):
        raise RuntimeError("a move found its order changed: nothing else writes here")


def main(argv: list[str]) -> None:
    import django

    parser = argparse.ArgumentParser(prog="python -m orders.bench.moves")
    parser.add_argument("--moves", type=int, default=MovesPlan.moves)
    parser.add_argument("--batch", type=int, default=MovesPlan.batch)
    parser.add_argument("--rounds", type=int, default=MovesPlan.rounds)
    args = parser.parse_args(argv)
    django.setup()
    plan = MovesPlan(moves=args.moves, batch=args.batch, rounds=args.rounds)

    def progress(line: str) -> None:
        print(f"… {line}", file=sys.stderr, flush=True)

    report = measure(plan, progress)
    # The last line of stdout is the report; the bench command reads it.
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
