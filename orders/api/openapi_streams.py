"""The streams' events as the OpenAPI document describes them: each SSE event
(orders/live/asgi.py, `frame`, `reset_frame`, `closed_frame`) read as a client
reads it, an object of its fields, `id`, `event` and `data`, whose `data` is
JSON (`contentMediaType`) with the document it carries (`contentSchema`).

In OpenAPI 3.1 the schema of a text/event-stream response is read as that of
each event: it is what schemathesis and the code generators do. OpenAPI 3.2
says so with `itemSchema`; the document stays 3.1 while few tools read 3.2.
"""

from orders.api.schemas import Event, StreamClosed, StreamReset
from orders.models import OrderEvent


def _data(document: str) -> dict:
    return {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": f"#/components/schemas/{document}"},
    }


def _frame(description: str, event: dict, data: str, *, id_required: bool) -> dict:
    return {
        "type": "object",
        "description": description,
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "event": event,
            "data": _data(data),
            "retry": {"type": "integer", "minimum": 0},
        },
        "required": ["id", "event", "data"] if id_required else ["event", "data"],
    }


def stream_schemas() -> dict:
    """The components: one schema per kind of event, one per stream."""
    kinds = {
        "EventFrame": _frame(
            "An event of an order's timeline; `id` is its `event_id`, `event` "
            "its `type`.",
            {"type": "string", "enum": list(OrderEvent.Type.values)},
            Event.__name__,
            id_required=True,
        ),
        "ResetFrame": _frame(
            "The client resumed from an event no longer kept: refetch the status.",
            {"const": "stream.reset"},
            StreamReset.__name__,
            id_required=False,
        ),
        "ClosedFrame": _frame(
            "The staff stream's last event when its session ended.",
            {"const": "stream.closed"},
            StreamClosed.__name__,
            id_required=False,
        ),
    }
    frames = {name: {"$ref": f"#/components/schemas/{name}"} for name in kinds}
    return {
        **kinds,
        "OrderStreamEvent": {
            "description": "One event of an order's stream.",
            "oneOf": [frames["EventFrame"], frames["ResetFrame"]],
        },
        "StaffStreamEvent": {
            "description": "One event of the staff stream.",
            "oneOf": [
                frames["EventFrame"],
                frames["ResetFrame"],
                frames["ClosedFrame"],
            ],
        },
    }
