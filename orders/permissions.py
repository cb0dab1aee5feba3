"""What each operator action needs: the model permission the Django admin asks
for the same action, so a role set up in the admin means the same on the JSON
staff endpoints, the staff stream and /metrics.

Reads of the operations views (the dashboard, the staff stream, /metrics) need
the view permission of orders; each write needs the change permission of what
it changes. ROLES are the two groups `manage.py roles` keeps
(docs/operators/roles.md, docs/decisions/0010-operator-roles-by-a-command.md).
"""

# The dashboard's figures, the staff stream, /metrics.
VIEW_OPERATIONS = "orders.view_order"
# Retry, re-run or fail an order.
CHANGE_ORDER = "orders.change_order"
# Mark a delivery delivered.
CHANGE_DELIVERY = "orders.change_delivery"
# Resolve or re-run a failure record or group.
CHANGE_FAILURE_RECORD = "orders.change_failurerecord"
CHANGE_FAILURE_GROUP = "orders.change_failuregroup"

# What the console shows: an order's page (with its lines, events, delivery and
# failures inline), the deliveries, the failure groups and records. EventTally
# is the metrics' bookkeeping and no page shows it.
_VIEWS = (
    "orders.view_order",
    "orders.view_orderline",
    "orders.view_orderevent",
    "orders.view_delivery",
    "orders.view_failuregroup",
    "orders.view_failurerecord",
)

# Group name -> exactly the permissions it holds. Nobody adds or deletes
# records by hand (orders/operations/admin/base.py), so no role may.
ROLES = {
    # Answers customers: reads everything an operator reads, changes nothing.
    "Support": frozenset(_VIEWS),
    # Runs the pipeline: retries orders, completes deliveries, resolves and
    # re-runs failures.
    "Operators": frozenset(
        (
            *_VIEWS,
            CHANGE_ORDER,
            CHANGE_DELIVERY,
            CHANGE_FAILURE_GROUP,
            CHANGE_FAILURE_RECORD,
        )
    ),
}


def roles_holding(permission: str) -> list[str]:
    """The groups of ROLES that hold `permission`, to name in a refusal."""
    return [name for name, held in ROLES.items() if permission in held]
