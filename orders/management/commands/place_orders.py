import random
import time
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.api.validation import SIMULATE_DEFAULTS
from orders.models import Order, OrderEvent
from orders.services import orders as services
from orders.services.inputs import LineInput, OrderInput

Status = Order.Status
POLL_SECONDS = 0.25


class Command(BaseCommand):
    help = (
        "Place N orders through the same service as POST /api/orders (a load "
        "generator), then print how many completed, failed and were retried. "
        "Workers (manage.py qcluster) must be running for the orders to move."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--count", type=int, required=True, help="How many orders to place."
        )
        parser.add_argument(
            "--fail-rate",
            type=float,
            default=None,
            help=(
                "Chance (0-1) that an attempt's payment fails with a transient "
                "error, drawn per order and per attempt; needs "
                "ORDER_SIMULATION_ENABLED. Without it ORDER_FAILURE_RATE applies."
            ),
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Poll the database until every order is COMPLETED or FAILED.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=300,
            help="With --wait: give up after this many seconds (default 300).",
        )
        parser.add_argument(
            "--email", default="load@example.com", help="The orders' customer_email."
        )
        parser.add_argument(
            "--seed", type=int, default=None, help="Seed for --fail-rate's draws."
        )

    def handle(self, *args, **options):
        total = options["count"]
        fail_rate = options["fail_rate"]
        if total < 1:
            raise CommandError("--count must be at least 1.")
        if fail_rate is not None:
            if not 0 <= fail_rate <= 1:
                raise CommandError("--fail-rate must be between 0 and 1.")
            if not settings.ORDER_SIMULATION_ENABLED:
                raise CommandError(
                    "--fail-rate simulates failures, which needs "
                    "ORDER_SIMULATION_ENABLED=1."
                )
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be more than 0 seconds.")
        rng = random.Random(options["seed"])
        started = time.monotonic()
        pks = []
        self.stdout.write(f"Placing {total} order(s)")
        for number in range(1, total + 1):
            order, _ = services.order_place(
                data=self._order_input(options["email"], fail_rate, rng)
            )
            pks.append(order.pk)
            self._progress("placed", number, total)
        placed_in = time.monotonic() - started
        finished_in = None
        if options["wait"]:
            finished_in = self._wait(pks, started, options["timeout"])
        counts = self._summary(pks, placed_in, finished_in)
        if options["wait"] and finished_in is None:
            raise CommandError(
                f"{counts['still moving']} of {total} order(s) were not finished "
                f"after {options['timeout']:g} s; are workers running "
                "(manage.py qcluster)?"
            )

    def _order_input(self, email: str, fail_rate: float | None, rng) -> OrderInput:
        simulate = {}
        if fail_rate is not None:
            # Fail the first k attempts, each failing with the given chance: the
            # same as a per-attempt failure rate, but decided up front.
            fail_times = 0
            while fail_times < settings.ORDER_MAX_ATTEMPTS and rng.random() < fail_rate:
                fail_times += 1
            simulate = {**SIMULATE_DEFAULTS, "fail_times": fail_times}
        return OrderInput(
            customer_email=email,
            lines=[LineInput(sku="LOAD-1", quantity=1, unit_price=Decimal("9.99"))],
            simulate=simulate,
        )

    def _wait(self, pks: list[int], started: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        open_statuses = [Status.PENDING, Status.PROCESSING, Status.RETRYING]
        while True:
            still_moving = Order.objects.filter(
                pk__in=pks, status__in=open_statuses
            ).count()
            self._progress("finished", len(pks) - still_moving, len(pks))
            if not still_moving:
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                self.stdout.write("")
                return None
            self._pause()

    def _pause(self) -> None:
        time.sleep(POLL_SECONDS)

    def _progress(self, what: str, done: int, total: int) -> None:
        width = 30
        filled = width * done // total
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what}"
        if self.stdout.isatty():
            self.stdout.write("\r" + bar, ending="\n" if done == total else "")
            self.stdout.flush()
        elif done == total or done % max(1, total // 10) == 0:
            self.stdout.write(bar)

    def _summary(self, pks, placed_in: float, finished_in: float | None) -> dict:
        by_status = dict.fromkeys(Status.values, 0)
        for status in Order.objects.filter(pk__in=pks).values_list("status", flat=True):
            by_status[status] += 1
        retried = (
            OrderEvent.objects.filter(
                order_id__in=pks, type=OrderEvent.Type.RETRY_SCHEDULED
            )
            .values("order_id")
            .distinct()
            .count()
        )
        counts = {
            "completed": by_status[Status.COMPLETED],
            "failed": by_status[Status.FAILED],
            "retried (at least once)": retried,
            "still moving": len(pks)
            - by_status[Status.COMPLETED]
            - by_status[Status.FAILED],
        }
        rows = [(name, str(value)) for name, value in counts.items()]
        rows.append(("placed in", f"{placed_in:.2f} s ({len(pks) / placed_in:.0f}/s)"))
        if finished_in is not None:
            rows.append(("all finished in", f"{finished_in:.2f} s"))
        width = max(len(name) for name, _ in rows)
        self.stdout.write("")
        self.stdout.write(f"{'orders':<{width}}  {len(pks)}")
        self.stdout.write("-" * (width + 12))
        for name, value in rows:
            self.stdout.write(f"{name:<{width}}  {value}")
        return counts
