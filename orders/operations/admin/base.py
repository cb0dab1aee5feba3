"""What every page of the console shares: records are shown, never edited, added
or deleted by hand, and the actions report what they did in the same words."""

from django.contrib import admin, messages

from orders.permissions import CHANGE_ORDER


class ViewOnlyRecordAdmin(admin.ModelAdmin):
    """A record's page shows it and offers no form: every field is read-only and
    posting the page is refused (403) before anything is saved.

    The admin's save writes back every column as that request read it, so a
    change committed in between (a worker's transition, a delivery's completion,
    a failure's mail being sent) would be undone without an event. Changes are
    the list's actions, which call services. The change permission itself stays:
    the actions need it.

    Nothing is added by hand either (orders come through the API, the rest from
    what happens to them), and nothing is deleted: orders carry money and
    history and leave the system by no admin page (README, "Retention"); the
    history of what failed is kept, and resolving is how a failure is closed.
    """

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RetriesOrders:
    """For a list with an action that retries orders
    (`permissions=["retry_orders"]`): a retry changes orders, so it needs the
    orders' change permission as well as the list's own. One name for both,
    as the admin offers an action when *any* of its permissions is held."""

    def has_retry_orders_permission(self, request):
        return self.has_change_permission(request) and request.user.has_perm(
            CHANGE_ORDER
        )


class ViewOnlyInline:
    """An inline of a view-only record: its rows as they are, none added or
    removed (mixed into a TabularInline or StackedInline)."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


def count(number: int, noun: str, plural: str = "") -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def report_retries(model_admin, request, retried: int, skipped: list, outcome: str):
    model_admin.message_user(request, f"{count(retried, 'order')} {outcome}.")
    if skipped:
        model_admin.message_user(
            request,
            "Only FAILED orders can be retried; skipped: " + ", ".join(skipped),
            messages.WARNING,
        )


def report_reruns(model_admin, request, rerun: int, refused: list, what_stays: str):
    model_admin.message_user(
        request, f"{count(rerun, 'task')} handed to the queue again; {what_stays}."
    )
    for reason in refused:
        model_admin.message_user(request, reason, messages.WARNING)
