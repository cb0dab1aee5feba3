class InvalidTransition(Exception):
    """A status change that the order state machine does not allow."""

    def __init__(self, from_status: str, to_status: str):
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(f"an order cannot move from {from_status} to {to_status}")


class StepError(Exception):
    """A gateway step (payment, stock) reported that it did not succeed."""

    kind = "error"

    def __init__(self, step: str, message: str):
        self.step = step
        self.message = message
        super().__init__(f"{step}: {message} ({self.kind})")


class TransientStepError(StepError):
    """Worth another attempt: a timeout, an unavailable gateway."""

    kind = "transient"


class PermanentStepError(StepError):
    """Retrying cannot help: a declined card, an unknown SKU."""

    kind = "permanent"


class OrderInputError(Exception):
    """Input that the API refuses; carries the JSON error contract's fields."""

    def __init__(
        self,
        error: str,
        detail: str,
        *,
        http_status: int = 400,
        fields: dict | None = None,
    ):
        self.error = error
        self.detail = detail
        self.http_status = http_status
        self.fields = fields
        super().__init__(detail)


class IdempotencyConflict(OrderInputError):
    def __init__(self, key: str):
        super().__init__(
            "idempotency_conflict",
            f"Idempotency-Key {key!r} was already used with a different request body.",
            http_status=409,
        )


class DeliveryNotFound(LookupError):
    def __init__(self, code: str):
        self.code = code
        super().__init__(f"No delivery with code {code!r}.")


class ListenerFailed(RuntimeError):
    """The delivery listener's simulated failure (`simulate.listener_fails`)."""


class FailureNotRerunnable(Exception):
    """A failure record whose task is not one of this project's to run again."""


class FailureHasNoOrder(Exception):
    """An order action on a failure record that is not about an order."""


class WebhookTargetRefused(ValueError):
    """A webhook URL that may not be called: not http(s), or an address in a
    private, loopback, link-local or other non-public range."""


class WebhookEndpointNotFound(LookupError):
    def __init__(self, endpoint_id):
        super().__init__(f"there is no webhook endpoint {endpoint_id}")


class WebhookInputError(ValueError):
    """A webhook endpoint's settings that cannot be taken (an unknown event
    type, an empty list)."""
