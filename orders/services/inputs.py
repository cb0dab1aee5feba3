"""What order_place is given: plain values, already validated.

The API builds these from a request body (orders/api/validation.py), commands
and tests build them directly.
"""

from dataclasses import dataclass, field
from decimal import Decimal


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
