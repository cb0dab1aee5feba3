"""How orders are worked: attempts, retries, leases, batches, dispatch, and the
simulated gateways."""

from pathlib import Path

from orderproj.settings.base import BASE_DIR
from orderproj.settings.environment import env

ORDER_MAX_ATTEMPTS = env.int("ORDER_MAX_ATTEMPTS", default=3, minimum=1)
ORDER_RETRY_BASE_SECONDS = env.float("ORDER_RETRY_BASE_SECONDS", default=1.0, minimum=0)
ORDER_RETRY_MULTIPLIER = env.float("ORDER_RETRY_MULTIPLIER", default=2.0, minimum=1)
ORDER_RETRY_MAX_SECONDS = env.float("ORDER_RETRY_MAX_SECONDS", default=60.0, minimum=0)
# Fraction of each delay that is randomised (0.2: a delay lands in [80%, 100%]).
ORDER_RETRY_JITTER = env.float("ORDER_RETRY_JITTER", default=0.2, minimum=0, maximum=1)
# How long a worker may hold an order before it is presumed dead. The queue's
# task timeout is derived from it (queue.py, orders/workers/timeouts.py).
ORDER_LEASE_SECONDS = env.float("ORDER_LEASE_SECONDS", default=60.0, minimum=1)
# How long after an order was handed to the queue the dispatcher first checks on
# it: a task still waiting in the broker is left alone; one that left the broker
# without a worker claiming the order is taken for lost and handed over again.
ORDER_REDISPATCH_SECONDS = env.float(
    "ORDER_REDISPATCH_SECONDS", default=15.0, minimum=1
)
# A worker whose task's order has others waiting behind it takes up to
# ORDER_BATCH_SIZE orders in all (its own included) and runs them as one batch,
# sharing the claim, checkpoint and completion writes; as many as it runs in about
# ORDER_BATCH_SECONDS, judged by the orders it ran last (orders/services/orders.py,
# BatchSizer). 1 turns batches off.
ORDER_BATCH_SIZE = env.int("ORDER_BATCH_SIZE", default=50, minimum=1)
ORDER_BATCH_SECONDS = env.float("ORDER_BATCH_SECONDS", default=0.1, minimum=0)
# How often the dispatcher inside each qcluster looks for due work.
ORDER_DISPATCH_INTERVAL_SECONDS = env.float(
    "ORDER_DISPATCH_INTERVAL_SECONDS", default=0.2, minimum=0.01
)
ORDER_FAILURE_RATE = env.float("ORDER_FAILURE_RATE", default=0.0, minimum=0, maximum=1)
# The `simulate` field lets any client make its order fail or hold a worker:
# off unless turned on, whatever DEBUG says (`make run` and the tests turn it on).
ORDER_SIMULATION_ENABLED = env.bool("ORDER_SIMULATION_ENABLED", default=False)
ORDER_CURRENCY = env.str("ORDER_CURRENCY", default="USD")
# Where the simulated payment and stock gateways keep what they did, by
# idempotency key (orders/gateways.py). Workers on several machines share it only
# if it is a shared directory.
ORDER_SIMULATED_GATEWAY_DIR = Path(
    env.str(
        "ORDER_SIMULATED_GATEWAY_DIR",
        default=str(BASE_DIR / "var" / "simulated-gateway"),
    )
)
