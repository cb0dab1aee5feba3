from django.core.management.base import BaseCommand, CommandError

from orders.models import FailureGroup, FailureRecord
from orders.services.failure_actions import failure_group_resolve, failure_resolve
from orders.services.failures import failures_trim


class Command(BaseCommand):
    help = (
        "List the failures recorded by the global failure handler, most recent "
        "first, or their groups (--groups), or mark one resolved, or delete the "
        "old resolved ones now (--trim)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--unresolved", action="store_true", help="Only failures not resolved."
        )
        parser.add_argument(
            "--resolve", type=int, metavar="ID", help="Mark failure ID resolved."
        )
        parser.add_argument(
            "--groups",
            action="store_true",
            help="List failure groups (most recently seen first) instead of records.",
        )
        parser.add_argument(
            "--resolve-group",
            type=int,
            metavar="ID",
            help="Mark group ID resolved, with its open records.",
        )
        parser.add_argument(
            "--limit", type=int, default=50, help="Show at most this many (50)."
        )
        parser.add_argument(
            "--trim",
            action="store_true",
            help="Delete the resolved records past FAILURE_RETENTION_DAYS and "
            "FAILURE_RETENTION_COUNT now, as each qcluster does once an hour.",
        )

    def handle(self, *args, **options):
        if options["trim"]:
            deleted = failures_trim()
            self.stdout.write(f"Deleted {deleted} resolved failure record(s).")
            return
        if options["resolve"] is not None:
            self._resolve(options["resolve"])
            return
        if options["resolve_group"] is not None:
            self._resolve_group(options["resolve_group"])
            return
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        if options["groups"]:
            self._list_groups(unresolved=options["unresolved"], limit=options["limit"])
            return
        records = FailureRecord.objects.select_related("order")
        if options["unresolved"]:
            records = records.filter(resolved=False)
        total = records.count()
        if not total:
            self.stdout.write("No failures recorded.")
            return
        self.stdout.write(
            f"{'id':>5}  {'occurred':<20} {'task':<38} {'order':<36} state      "
            "exception"
        )
        for record in records[: options["limit"]]:
            state = "resolved" if record.resolved else "open"
            self.stdout.write(
                f"{record.pk:>5}  {record.occurred_at:%Y-%m-%d %H:%M:%S}  "
                f"{record.task:<38} "
                f"{record.order.order_id if record.order else '-':<36} {state:<10} "
                f"{record.exception_type}: {record.message[:100]}"
            )
        if total > options["limit"]:
            self.stdout.write(f"… and {total - options['limit']} more (--limit).")

    def _resolve(self, pk: int) -> None:
        failure = FailureRecord.objects.filter(pk=pk).first()
        if failure is None:
            raise CommandError(f"No failure record #{pk}.")
        if failure_resolve(failure=failure):
            self.stdout.write(f"Failure #{pk} marked resolved.")
        else:
            self.stdout.write(
                f"Failure #{pk} was already resolved at "
                f"{failure.resolved_at:%Y-%m-%d %H:%M:%S}; nothing changed."
            )

    def _list_groups(self, *, unresolved: bool, limit: int) -> None:
        groups = FailureGroup.objects.all()
        if unresolved:
            groups = groups.filter(resolved=False)
        total = groups.count()
        if not total:
            self.stdout.write("No failure groups.")
            return
        self.stdout.write(
            f"{'id':>5}  {'last seen':<20} {'count':>7}  {'state':<10} "
            f"{'task':<38} exception (where)"
        )
        for group in groups[:limit]:
            if group.resolved:
                state = "resolved"
            else:
                state = "regression" if group.is_regression else "open"
            self.stdout.write(
                f"{group.pk:>5}  {group.last_seen:%Y-%m-%d %H:%M:%S}  "
                f"{group.count:>7}  {state:<10} {group.task:<38} "
                f"{group.exception_type} ({group.location or '-'})"
            )
        if total > limit:
            self.stdout.write(f"… and {total - limit} more (--limit).")

    def _resolve_group(self, pk: int) -> None:
        group = FailureGroup.objects.filter(pk=pk).first()
        if group is None:
            raise CommandError(f"No failure group #{pk}.")
        if failure_group_resolve(group=group):
            self.stdout.write(f"Group #{pk} marked resolved, with its open records.")
        else:
            self.stdout.write(
                f"Group #{pk} was already resolved at "
                f"{group.resolved_at:%Y-%m-%d %H:%M:%S}; nothing changed."
            )
