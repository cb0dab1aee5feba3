"""The steps an order goes through, behind small interfaces.

The default implementations are simulated: they succeed, fail at random with
ORDER_FAILURE_RATE, or follow the order's `simulate` plan, so demos and tests can
make each failure strategy play out deterministically.
"""

import random
import time
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from .exceptions import PermanentStepError, TransientStepError
from .models import Order

STEPS = ("payment", "stock")

FAILURE_MESSAGES = {
    ("payment", "transient"): "payment gateway timed out",
    ("payment", "permanent"): "card declined",
    ("stock", "transient"): "stock service unavailable",
    ("stock", "permanent"): "item out of stock",
}


class Step(Protocol):
    name: str

    def run(self, order: Order, *, attempt: int) -> None:
        """Do the step's work or raise a StepError saying how it failed."""


@dataclass(frozen=True)
class SimulationPlan:
    fail_times: int = 0
    failure: str = "transient"
    step: str = "payment"
    delay_ms: int = 0
    listener_fails: bool = False

    @classmethod
    def for_order(cls, order: Order) -> "SimulationPlan":
        return cls(**(order.simulate or {}))

    def fails(self, step: str, attempt: int) -> bool:
        return step == self.step and attempt <= self.fail_times


def step_error(step: str, kind: str):
    error_class = PermanentStepError if kind == "permanent" else TransientStepError
    return error_class(step, FAILURE_MESSAGES[(step, kind)])


@dataclass(frozen=True)
class SimulatedStep:
    name: str

    def run(self, order: Order, *, attempt: int) -> None:
        plan = SimulationPlan.for_order(order)
        if self.name == STEPS[0] and plan.delay_ms:
            # The delay applies to every attempt, failing or not, so a test can
            # hold an order in PROCESSING (to kill its worker, say).
            time.sleep(plan.delay_ms / 1000)
        if plan.fails(self.name, attempt):
            raise step_error(self.name, plan.failure)
        random_failure = (
            not order.simulate
            and self.name == STEPS[0]
            and random.random() < settings.ORDER_FAILURE_RATE
        )
        if random_failure:
            raise step_error(self.name, "transient")


def order_steps() -> list[Step]:
    return [SimulatedStep(name) for name in STEPS]
