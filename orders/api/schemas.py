"""The documents the API sends, as pydantic models: the response schemas of the
OpenAPI document (orders/api/openapi.py), which tests hold every real response
to (tests/test_openapi.py)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from orders.gateways import STEPS
from orders.models import Order, OrderEvent

StatusName = Literal[tuple(Order.Status.values)]
EventType = Literal[tuple(OrderEvent.Type.values)]
Money = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$", examples=["25.00"])]
Link = Annotated[str, Field(pattern=r"^/")]


class Document(BaseModel):
    # extra="forbid": a field a view adds without describing it fails the tests.
    model_config = ConfigDict(extra="forbid")


class Error(Document):
    """Every refusal: a code to branch on, a sentence for a person, and for
    invalid input the problem with each field."""

    error: str = Field(examples=["validation_failed"])
    detail: str
    fields: dict[str, str] | None = Field(
        None,
        description='Each invalid field ("items[0].quantity") and what is wrong '
        "with it. Present only when fields are to blame.",
    )


class Links(Document):
    status_url: Link
    events_url: Link
    page_url: Link


class OrderPlaced(Links):
    order_id: str = Field(examples=["ord_3f2c0e9b7d1a4c5e8f6a2b1c0d9e8f7a"])
    status: StatusName
    amount: Money
    currency: str


class OrderRetried(Links):
    order_id: str
    status: StatusName


class Item(Document):
    sku: str
    quantity: int
    unit_price: Money


class StepState(Document):
    name: Literal[STEPS]
    state: Literal["done", "pending"]
    reference: str | None = Field(description="What the gateway returned (pay_…).")
    attempt: int | None
    completed_at: datetime | None


class Event(Document):
    """One entry of an order's timeline; also the `data` of an SSE event."""

    event_id: int = Field(description="Also the SSE `id:`; ids only grow.")
    order_id: str
    type: EventType
    status: StatusName
    attempt: int
    at: datetime
    detail: str = Field(
        description="In the status document and the per-order stream, which "
        "anyone with the order's id reads: the customer's sentence (as "
        "`message`). In the staff stream: the operators' precise text."
    )
    message: str = Field(
        description="What the event means for the customer, in the reader's "
        "language (Accept-Language or the pages' language cookie); empty for "
        "an event that means nothing to them."
    )
    next_attempt_at: datetime | None
    duration_ms: int | None
    step: str | None


class StreamReset(Document):
    """The `data` of a stream's `stream.reset` event: the events after the id
    the client resumed from are no longer kept."""

    type: Literal["stream.reset"]
    last_event_id: int
    detail: str


class StreamClosed(Document):
    """The `data` of the staff stream's last event when its session ended: why,
    in the error shape."""

    type: Literal["stream.closed"]
    error: str
    detail: str


class DeliveryState(Document):
    code: str
    completed_at: datetime | None


class OrderStatus(Links):
    """The status document; its ETag changes whenever any of it does."""

    order_id: str
    status: StatusName
    message: str = Field(
        description="Where the order is now, for the customer, in the reader's "
        "language (Accept-Language or the pages' language cookie).",
        examples=["We've received your order and will start on it in a moment."],
    )
    amount: Money
    currency: str
    customer_email: str
    items: list[Item]
    attempts: int
    max_attempts: int
    steps: list[StepState]
    next_attempt_at: datetime | None
    failure_reason: str | None = Field(
        description="Of a FAILED order: why, for the customer, in the reader's "
        "language (null otherwise). Operators find the precise reason in the "
        "admin and the dashboard."
    )
    created_at: datetime
    updated_at: datetime
    delivery: DeliveryState | None
    delivered_at: datetime | None
    version: int
    events: list[Event]


class DeliveryCompleted(Document):
    code: str
    completed_at: datetime
    completed_now: bool = Field(
        description="False when it was completed before: nothing changed this time."
    )
    order_id: str
    status_url: Link


class MinuteSeries(Document):
    start: datetime
    minutes: int
    completed: list[int]
    failed: list[int]
    retried: list[int]


class Rates(Document):
    finished: int
    retried: int
    retry_rate: float | None
    completed: int
    median_seconds_to_complete: float | None


class FailedOrder(Document):
    pk: int
    order_id: str
    customer_email: str
    amount: Money
    currency: str
    attempts: int
    failure_reason: str
    updated_at: datetime
    admin_url: Link
    page_url: Link


class DashboardStats(Document):
    generated_at: datetime
    counts: dict[StatusName, int]
    series: MinuteSeries
    rates: Rates
    failed_orders: list[FailedOrder]


class Health(Document):
    status: Literal["ok", "unavailable"]
    database: str
    queue: str
