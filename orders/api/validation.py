"""Reading and validating the body of POST /api/orders.

Two stages, and nothing is written before both pass:

1. `parse_json_body` (orders/api/json_body.py) reads the bytes under limits
   checked before any parser runs.
2. The pydantic models below validate the object. They are also the schemas of
   the OpenAPI document (orders/api/openapi.py), so what the document says is what
   is enforced. Every problem is named in the error's `fields`, so a client can
   fix all of them in one go.
"""

import hashlib
import json
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from orders.api.json_body import invalid_json, parse_json_body
from orders.api.shapes import (
    EMAIL_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_DELAY_MS,
    MAX_EMAIL_LENGTH,
    MAX_EMAIL_LOCAL_LENGTH,
    MAX_FAIL_TIMES,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_ITEMS,
    MAX_QUANTITY,
    MAX_SKU_LENGTH,
    PRICE_PATTERN,
    SKU_PATTERN,
    matches,
)
from orders.exceptions import OrderInputError
from orders.gateways import STEPS
from orders.services.inputs import LineInput, OrderInput
from orders.workers.timeouts import simulated_delay_limit


# Stage 2: the order -------------------------------------------------------------
# Each field is its shape (orders/api/shapes.py) and nothing else, so the
# document, which shows these constraints, says all that is checked. The one
# check beside a pattern, the email's local part, is what the document's
# `format: email` means too.
def _local_part_fits(value: str) -> str:
    if len(value.rpartition("@")[0]) > MAX_EMAIL_LOCAL_LENGTH:
        raise PydanticCustomError(
            "email",
            f"Not a valid email address: more than {MAX_EMAIL_LOCAL_LENGTH} "
            "characters before the @.",
        )
    return value


Email = Annotated[
    str,
    StringConstraints(max_length=MAX_EMAIL_LENGTH, pattern=EMAIL_PATTERN),
    AfterValidator(_local_part_fits),
    Field(
        json_schema_extra={"format": "email"},
        description="An address name@example.com: letters, digits and "
        "!#$%&'*+/=?^_`{|}~- before the @ (at most 64, dots between), a domain "
        "name after it.",
        examples=["ana@example.com"],
    ),
]
Sku = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_SKU_LENGTH, pattern=SKU_PATTERN),
    Field(
        description="No control characters, no space at either end.",
        examples=["MUG-1"],
    ),
]
Price = Annotated[
    str,
    StringConstraints(pattern=PRICE_PATTERN),
    Field(
        description="A decimal string greater than 0 and less than 1,000,000, "
        "with at most 2 decimal places and no leading zero.",
        examples=["12.50"],
    ),
]
Step = Literal[STEPS]

# What a problem's `fields` entry says, where pydantic's own sentence would quote
# a regular expression.
PATTERN_HINTS = {
    "unit_price": "Write it as a decimal string greater than 0, less than "
    '1,000,000, with at most 2 decimal places, such as "19.99".',
    "sku": "No control characters, and no space at either end.",
    "customer_email": "Not a valid email address.",
}
MESSAGES = {"missing": "Required.", "extra_forbidden": "Unknown field."}


class StrictInput(BaseModel):
    # Strict: 2 is not "2", true is not 1 (2.0 is 2: the parser, _float).
    model_config = ConfigDict(extra="forbid", strict=True)


class SimulateIn(StrictInput):
    """Failure injection (accepted while ORDER_SIMULATION_ENABLED is on)."""

    fail_times: int = Field(
        0,
        ge=0,
        le=MAX_FAIL_TIMES,
        description="Fail the first N attempts (1 when only `failure` is given).",
    )
    failure: Literal["transient", "permanent"] = "transient"
    step: Step = Field("payment", description="The step that fails.")
    delay_ms: int = Field(
        0,
        ge=0,
        le=MAX_DELAY_MS,
        description="Every attempt takes this long; at most half of the time an "
        "attempt may run on this server.",
    )
    delay_step: Step = Field("payment", description="The step that is slow.")
    delay_when: Literal["before", "after"] = Field(
        "before", description="Whether the delay comes before or after the gateway."
    )
    listener_fails: bool = Field(
        False, description="The delivery listener raises on its first run."
    )


class LineIn(StrictInput):
    sku: Sku
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    unit_price: Price


class OrderIn(StrictInput):
    """The body of POST /api/orders."""

    customer_email: Email
    items: list[LineIn] = Field(min_length=1, max_length=MAX_ITEMS)
    simulate: SimulateIn | None = None


SIMULATE_DEFAULTS = {
    name: info.default for name, info in SimulateIn.model_fields.items()
}


SIMULATION_DISABLED = (
    "Failure simulation is disabled on this server (ORDER_SIMULATION_ENABLED)."
)


def delay_limit_ms() -> int:
    """The longest `simulate.delay_ms` this server accepts (the OpenAPI
    document states it): orders/workers/timeouts.py, simulated_delay_limit."""
    from django.conf import settings

    limit = simulated_delay_limit(settings.ORDER_LEASE_SECONDS)
    return min(MAX_DELAY_MS, int(limit * 1000))


def parse_order_request(body: bytes, *, simulation_enabled: bool) -> OrderInput:
    payload = parse_json_body(body)
    if not isinstance(payload, dict):
        raise invalid_json("the body must be a JSON object")
    try:
        order = OrderIn.model_validate(payload)
        problems = {}
    except ValidationError as exc:
        order, problems = None, problems_of(exc)
    delay_problem = _delay_problem(payload)
    if delay_problem:
        problems["simulate.delay_ms"] = delay_problem
    if payload.get("simulate") is not None and not simulation_enabled:
        problems = {k: v for k, v in problems.items() if not k.startswith("simulate")}
        problems["simulate"] = SIMULATION_DISABLED
        raise OrderInputError(
            "simulation_disabled", SIMULATION_DISABLED, fields=problems
        )
    if problems:
        raise OrderInputError(
            "validation_failed",
            "The order has invalid fields: " + ", ".join(sorted(problems)) + ".",
            fields=problems,
        )
    return OrderInput(
        customer_email=order.customer_email,
        lines=[
            LineInput(
                sku=line.sku,
                quantity=line.quantity,
                unit_price=Decimal(line.unit_price).quantize(Decimal("0.01")),
            )
            for line in order.items
        ],
        simulate=_simulation_plan(order.simulate),
        fingerprint=fingerprint(payload),
    )


def _delay_problem(payload: dict) -> str | None:
    """A whole-number delay past this server's limit, named with the limit
    (with the other problems, whether or not the rest of the body is valid)."""
    simulate = payload.get("simulate")
    delay = simulate.get("delay_ms") if isinstance(simulate, dict) else None
    limit = delay_limit_ms()
    if type(delay) is int and delay > limit:
        return (
            f"Input should be less than or equal to {limit} on this server (half "
            "of the time an attempt may run)."
        )
    return None


def _simulation_plan(simulate: SimulateIn | None) -> dict:
    if simulate is None:
        return {}
    plan = simulate.model_dump()
    if "failure" in simulate.model_fields_set and (
        "fail_times" not in simulate.model_fields_set
    ):
        # Naming a failure kind asks to see it: fail the first attempt.
        plan["fail_times"] = 1
    return plan


def problems_of(exc: ValidationError) -> dict[str, str]:
    """pydantic's errors as `fields`: "items[0].quantity" -> a sentence; the first
    problem of each field."""
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        where = field_path(error["loc"])
        if error["type"] == "string_pattern_mismatch":
            message = PATTERN_HINTS.get(str(error["loc"][-1]), error["msg"])
        else:
            message = MESSAGES.get(error["type"], error["msg"])
        problems.setdefault(where or "body", _sentence(message))
    return problems


def field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _sentence(message: str) -> str:
    message = message[:1].upper() + message[1:]
    return message if message.endswith(".") else message + "."


def fingerprint(payload: dict) -> str:
    """Same meaning, same fingerprint: key order and white space do not count."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    # White space around it never arrives: HTTP drops it before Django sees
    # the header.
    if not matches(IDEMPOTENCY_KEY_PATTERN, key):
        raise OrderInputError(
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
            "characters, without a space at either end.",
        )
    return key


JSON_CONTENT_TYPE = "application/json"


def validate_content_type(content_type: str, params: dict) -> None:
    charset = params.get("charset", "utf-8").lower()
    if content_type != JSON_CONTENT_TYPE or charset not in {"utf-8", "utf8"}:
        raise OrderInputError(
            "unsupported_media_type",
            f"Send the body as {JSON_CONTENT_TYPE} (UTF-8), not "
            f"{content_type or 'without a Content-Type'}"
            + (f"; charset={charset}" if charset not in {"utf-8", "utf8"} else "")
            + ".",
            http_status=415,
        )
