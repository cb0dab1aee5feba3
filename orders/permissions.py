"""What each operator action needs: the model permission the Django admin asks
for the same action, so a role set up in the admin means the same on the JSON
staff endpoints, the staff stream and /metrics.

Reads of the operations views (the dashboard, the staff stream, /metrics) need
the view permission of orders; each write needs the change permission of what
it changes. docs/operators/roles.md lists which group holds which.
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
