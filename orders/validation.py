"""Parsing and validating the body of POST /api/orders.

Everything is checked before anything is written, and every problem found is named
in the error's `fields`, so a client can fix all of them in one go.
"""

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .exceptions import OrderInputError
from .gateways import STEPS

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_SKU_LENGTH = 64
MAX_UNIT_PRICE = Decimal("1000000")
MAX_IDEMPOTENCY_KEY_LENGTH = 255
SIMULATE_DEFAULTS = {
    "fail_times": 0,
    "failure": "transient",
    "step": "payment",
    "delay_ms": 0,
    "delay_step": "payment",
    "delay_when": "before",
    "listener_fails": False,
}
DELAY_WHEN = ("before", "after")
MAX_FAIL_TIMES = 100
MAX_DELAY_MS = 60_000


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderInput:
    customer_email: str
    lines: list[LineInput]
    simulate: dict = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def amount(self) -> Decimal:
        return sum((line.unit_price * line.quantity for line in self.lines), Decimal(0))


def parse_order_request(body: bytes, *, simulation_enabled: bool) -> OrderInput:
    if len(body) > MAX_BODY_BYTES:
        raise body_too_large()
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OrderInputError(
            "invalid_json", f"The request body is not valid JSON: {exc}."
        ) from exc
    if not isinstance(payload, dict):
        raise OrderInputError("invalid_json", "The request body must be a JSON object.")

    problems: dict[str, str] = {}
    unknown = sorted(set(payload) - {"customer_email", "items", "simulate"})
    for name in unknown:
        problems[name] = "Unknown field."
    email = _email(payload.get("customer_email"), problems)
    lines = _lines(payload.get("items"), problems)
    simulate = _simulate(payload.get("simulate"), problems, simulation_enabled)
    if problems:
        if "simulate" in problems and problems["simulate"] == SIMULATION_DISABLED:
            raise OrderInputError(
                "simulation_disabled",
                SIMULATION_DISABLED,
                fields=problems,
            )
        raise OrderInputError(
            "validation_failed",
            "The order has invalid fields: " + ", ".join(sorted(problems)) + ".",
            fields=problems,
        )
    return OrderInput(
        customer_email=email,
        lines=lines,
        simulate=simulate,
        fingerprint=fingerprint(payload),
    )


def body_too_large() -> OrderInputError:
    return OrderInputError(
        "body_too_large",
        f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.",
        http_status=413,
    )


def fingerprint(payload: dict) -> str:
    """Same meaning, same fingerprint: key order and white space do not count."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise OrderInputError(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable characters.",
        )
    return key


def _email(value, problems: dict) -> str:
    if not isinstance(value, str) or not value.strip():
        problems["customer_email"] = "Required: the customer's email address."
        return ""
    value = value.strip()
    try:
        validate_email(value)
    except ValidationError:
        problems["customer_email"] = "Not a valid email address."
    return value


def _lines(value, problems: dict) -> list[LineInput]:
    if not isinstance(value, list):
        problems["items"] = "Required: a list of 1 to 100 items."
        return []
    if not 1 <= len(value) <= MAX_ITEMS:
        problems["items"] = f"An order has 1 to {MAX_ITEMS} items, not {len(value)}."
        return []
    lines = []
    for index, item in enumerate(value):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            problems[where] = "Each item is an object with sku, quantity, unit_price."
            continue
        extra = sorted(set(item) - {"sku", "quantity", "unit_price"})
        for name in extra:
            problems[f"{where}.{name}"] = "Unknown field."
        sku = item.get("sku")
        if not isinstance(sku, str) or not sku.strip():
            problems[f"{where}.sku"] = "Required: a non-empty string."
        elif len(sku) > MAX_SKU_LENGTH:
            problems[f"{where}.sku"] = f"At most {MAX_SKU_LENGTH} characters."
        quantity = item.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            problems[f"{where}.quantity"] = "Required: a whole number."
        elif not 1 <= quantity <= MAX_QUANTITY:
            problems[f"{where}.quantity"] = f"Must be from 1 to {MAX_QUANTITY:,}."
        price = _price(item.get("unit_price"), f"{where}.unit_price", problems)
        if not any(key.startswith(where) for key in problems):
            lines.append(
                LineInput(sku=sku.strip(), quantity=quantity, unit_price=price)
            )
    return lines


def _price(value, where: str, problems: dict) -> Decimal | None:
    if not isinstance(value, str):
        problems[where] = 'Required: a decimal string such as "19.99".'
        return None
    try:
        price = Decimal(value.strip())
    except InvalidOperation:
        problems[where] = 'Not a decimal number; write it as a string such as "19.99".'
        return None
    if not price.is_finite() or price <= 0:
        problems[where] = "Must be greater than 0."
    elif price.as_tuple().exponent < -2:
        problems[where] = "At most 2 decimal places."
    elif price >= MAX_UNIT_PRICE:
        problems[where] = f"Must be less than {MAX_UNIT_PRICE:,}."
    else:
        return price.quantize(Decimal("0.01"))
    return None


SIMULATION_DISABLED = (
    "Failure simulation is disabled on this server (ORDER_SIMULATION_ENABLED)."
)


def _simulate(value, problems: dict, enabled: bool) -> dict:
    if value is None:
        return {}
    if not enabled:
        problems["simulate"] = SIMULATION_DISABLED
        return {}
    if not isinstance(value, dict):
        problems["simulate"] = "Must be an object."
        return {}
    plan = dict(SIMULATE_DEFAULTS)
    for name, given in value.items():
        where = f"simulate.{name}"
        if name not in SIMULATE_DEFAULTS:
            problems[where] = "Unknown field."
        elif name in {"fail_times", "delay_ms"}:
            limit = MAX_FAIL_TIMES if name == "fail_times" else MAX_DELAY_MS
            if isinstance(given, bool) or not isinstance(given, int):
                problems[where] = "Must be a whole number."
            elif not 0 <= given <= limit:
                problems[where] = f"Must be from 0 to {limit:,}."
            else:
                plan[name] = given
        elif name == "failure":
            if given not in {"transient", "permanent"}:
                problems[where] = 'Must be "transient" or "permanent".'
            else:
                plan[name] = given
        elif name == "delay_when":
            if given not in DELAY_WHEN:
                problems[where] = 'Must be "before" or "after".'
            else:
                plan[name] = given
        elif name in {"step", "delay_step"}:
            if given not in STEPS:
                problems[where] = "Must be one of: " + ", ".join(STEPS) + "."
            else:
                plan[name] = given
        elif not isinstance(given, bool):
            problems[where] = "Must be true or false."
        else:
            plan[name] = given
    if "failure" in value and "fail_times" not in value:
        # Naming a failure kind asks to see it: fail the first attempt.
        plan["fail_times"] = 1
    return plan
