import json
import re

import jsonschema_rs
import pytest
from django.urls import URLPattern, get_resolver
from httpx_sse._decoders import SSEDecoder

from orders.api import openapi, schemas
from orders.live import asgi as stream_asgi
from orders.live.events import read_after
from orders.live.opening import Refusal
from orders.models import Order
from tests import factories

VALID = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}


def place(client, body=VALID, **headers):
    return client.post(
        "/api/orders", json.dumps(body), content_type="application/json", **headers
    )


@pytest.mark.django_db
def test_the_openapi_document_is_served_as_json_and_is_version_3_1(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/api/orders"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"] == {"$ref": "#/components/schemas/OrderIn"}


def test_every_reference_in_the_document_resolves():
    document = openapi.openapi_document()
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in document["components"]["schemas"], ref


def test_every_json_api_route_is_in_the_document():
    documented = {
        re.sub(r"\{[^}]+\}", "<>", path) for path in openapi.openapi_document()["paths"]
    }
    routed = {
        "/" + re.sub(r"<[^>]+>", "<>", str(entry.pattern))
        for entry in get_resolver().url_patterns[1].url_patterns
        if isinstance(entry, URLPattern)
        and str(entry.pattern).startswith("api/")
        and entry.name != "api-not-found"
    }
    undocumented = routed - documented - {"/api/openapi.json", "/api/docs"}
    assert not undocumented


def test_the_request_schema_states_the_input_limits():
    schemas = openapi.openapi_document()["components"]["schemas"]
    assert schemas["OrderIn"]["properties"]["items"]["maxItems"] == 100
    assert schemas["OrderIn"]["additionalProperties"] is False
    line = schemas["LineIn"]["properties"]
    assert line["sku"]["maxLength"] == 64
    assert line["quantity"]["maximum"] == 10_000
    assert "pattern" in line["unit_price"]


def test_the_request_schema_states_this_servers_longest_simulated_delay(settings):
    """Half of what an attempt may run: 22.5 s of the 45 s a 60 s lease gives,
    2.5 s of the 5 s a 10 s lease gives."""

    def delay_ms() -> dict:
        schemas = openapi.openapi_document()["components"]["schemas"]
        return schemas["SimulateIn"]["properties"]["delay_ms"]

    assert delay_ms()["maximum"] == 22_500
    settings.ORDER_LEASE_SECONDS = 10
    assert delay_ms()["maximum"] == 2_500


@pytest.mark.django_db
def test_real_responses_match_their_documented_models(
    client, staff_client, immediate_retries, django_capture_on_commit_callbacks
):
    placed = place(client)
    schemas.OrderPlaced.model_validate(placed.json())
    order_id = placed.json()["order_id"]
    schemas.OrderStatus.model_validate(client.get(f"/api/orders/{order_id}").json())

    failed = factories.processed(failure="permanent", fail_times=1)
    completed = factories.process_until_terminal(factories.place())
    stats = staff_client.get("/api/dashboard/stats").json()
    assert stats["failed_orders"], "a failed order makes the table non-empty"
    schemas.DashboardStats.model_validate(stats)
    document = client.get(f"/api/orders/{completed.order_id}").json()
    assert document["delivery"] and document["steps"][0]["reference"]
    schemas.OrderStatus.model_validate(document)

    retried = staff_client.post(f"/api/orders/{failed.order_id}/retry")
    schemas.OrderRetried.model_validate(retried.json())
    code = Order.objects.get(pk=completed.pk).delivery.code
    with django_capture_on_commit_callbacks(execute=False):
        done = staff_client.post(f"/api/deliveries/{code}/complete")
    schemas.DeliveryCompleted.model_validate(done.json())

    refused = place(client, {**VALID, "items": []})
    schemas.Error.model_validate(refused.json())
    schemas.Health.model_validate(client.get("/healthz").json())


def test_a_response_with_an_undocumented_field_fails_its_model():
    with pytest.raises(ValueError):
        schemas.Error.model_validate({"error": "x", "detail": "y", "stack": "..."})


@pytest.mark.django_db
def test_the_docs_page_lists_every_operation_and_loads_no_script(client):
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.content.decode()
    for path, item in openapi.openapi_document()["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in page
    assert 'id="schema-OrderIn"' in page
    # Only the pages' JSON data block: nothing to execute, so a strict
    # script-src cannot break the page.
    scripts = re.findall(r"<script[^>]*>", page)
    assert all('type="application/json"' in tag for tag in scripts), scripts
    assert "style=" not in page


def sse_events(raw: bytes) -> list[dict]:
    """Each event of a stream as a client reads it (httpx-sse's decoder, the
    WHATWG rules): its fields as an object, as OpenAPI tools validate it."""
    decoder, events = SSEDecoder(), []
    for line in raw.decode().split("\n")[:-1]:  # after the last \n: no line
        event = decoder.decode(line)
        if event is not None:
            read = {"event": event.event, "data": event.data}
            if event.id:
                read["id"] = event.id
            events.append(read)
    return events


def assert_described(document: dict, stream: str, event: dict) -> None:
    """The event matches the stream's schema, and its `data` the document its
    kind carries (contentSchema, which jsonschema-rs leaves to the caller)."""
    components = {"components": document["components"]}
    ref = "#/components/schemas/"
    envelope = jsonschema_rs.Draft202012Validator({"$ref": ref + stream, **components})
    envelope.validate(event)
    kinds = [
        item["$ref"] for item in document["components"]["schemas"][stream]["oneOf"]
    ]
    matching = [
        kind
        for kind in kinds
        if jsonschema_rs.Draft202012Validator({"$ref": kind, **components}).is_valid(
            event
        )
    ]
    assert len(matching) == 1, (event, matching)
    kind = document["components"]["schemas"][matching[0].removeprefix(ref)]
    assert kind["properties"]["data"]["contentMediaType"] == "application/json"
    content = {**kind["properties"]["data"]["contentSchema"], **components}
    jsonschema_rs.Draft202012Validator(content, validate_formats=True).validate(
        json.loads(event["data"])
    )


@pytest.mark.django_db
def test_every_kind_of_stream_event_is_described_as_an_event(place_order):
    """An order's events, a reset and the staff stream's closing event, as the
    streams write them (orders/live/asgi.py), read as a client reads them."""
    document = openapi.openapi_document()
    place_order()
    real = [stream_asgi.frame(event) for event in read_after(0)]
    reset = stream_asgi.reset_frame(7)
    closed = stream_asgi.closed_frame(Refusal(403, "forbidden", "Gone."))
    for stream, frames in [
        ("OrderStreamEvent", [*real, reset]),
        ("StaffStreamEvent", [*real, reset, closed]),
    ]:
        events = sse_events(b"".join(frames))
        assert len(events) == len(frames)
        for event in events:
            assert_described(document, stream, event)
    for path, stream in [
        ("/api/orders/{order_id}/events", "OrderStreamEvent"),
        ("/api/events", "StaffStreamEvent"),
    ]:
        response = document["paths"][path]["get"]["responses"]["200"]
        schema = response["content"]["text/event-stream"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{stream}"}
