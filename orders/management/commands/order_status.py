from django.core.management.base import BaseCommand, CommandError

from orders import selectors
from orders.models import FailureRecord


class Command(BaseCommand):
    help = "Print an order's status and its whole timeline."

    def add_arguments(self, parser):
        parser.add_argument("order_id", help="The public order id (ord_…).")

    def handle(self, *args, **options):
        order = selectors.order_get(options["order_id"])
        if order is None:
            raise CommandError(f"No order with id {options['order_id']!r}.")
        write = self.stdout.write
        write(
            f"{order.order_id}  {order.status}  {order.amount} {order.currency}  "
            f"attempt {order.attempts} of {order.max_attempts}  {order.customer_email}"
        )
        write(f"created {selectors.iso(order.created_at)}")
        write(f"updated {selectors.iso(order.updated_at)}")
        if order.next_attempt_at:
            write(f"next attempt at {selectors.iso(order.next_attempt_at)}")
        if order.failure_reason:
            write(f"failure reason: {order.failure_reason}")
        for step in selectors.order_steps_document(order):
            if step["state"] == "done":
                state = f"done  {step['reference']}  (attempt {step['attempt']})"
            else:
                state = "pending"
            write(f"step {step['name']:<8} {state}")
        delivery = getattr(order, "delivery", None)
        if delivery:
            state = (
                f"completed {selectors.iso(delivery.completed_at)}"
                if delivery.completed_at
                else "not completed"
            )
            write(f"delivery {delivery.code}: {state}")
        if order.delivered_at:
            write(f"delivered {selectors.iso(order.delivered_at)}")
        write("")
        header = f"{'id':>6}  {'at':<27} {'event':<22} {'status':<10} try"
        write(f"{header}  {'ms':>6}  detail")
        for event in selectors.order_timeline(order):
            duration = "" if event.duration_ms is None else str(event.duration_ms)
            write(
                f"{event.pk:>6}  {selectors.iso(event.at):<27} {event.type:<22} "
                f"{event.status:<10} {event.attempt:>3}  {duration:>6}  {event.detail}"
            )
        unresolved = FailureRecord.objects.filter(order=order, resolved=False).count()
        if unresolved:
            write("")
            write(
                f"{unresolved} unresolved failure record(s): "
                "manage.py failures --unresolved"
            )
