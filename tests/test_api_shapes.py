"""The OpenAPI document and the validation, side by side: every input the
document allows is accepted and every input it forbids is refused, field by
field (orders/api/shapes.py is their one definition).

Each constrained field of the body, and each header with a shape, is given the
boundary values its schema names (a minimum and one below it, a longest string
and one longer, every enum value), a list of near misses, and values drawn at
random; the document's verdict (jsonschema-rs, formats asserted, as
schemathesis judges) must be the validator's.
"""

import copy
import json

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orders.api import shapes
from orders.api.openapi import openapi_document
from orders.api.validation import parse_order_request, validate_idempotency_key
from orders.exceptions import OrderInputError
from orders.live.opening import Refusal, parse_last_event_id

VALID = {
    "customer_email": "ana@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
    "simulate": {"fail_times": 0},
}
# Where each constrained field of the body lives, and its schema's name.
FIELDS = {
    "customer_email": ("OrderIn", ("customer_email",)),
    "items": ("OrderIn", ("items",)),
    "sku": ("LineIn", ("items", 0, "sku")),
    "quantity": ("LineIn", ("items", 0, "quantity")),
    "unit_price": ("LineIn", ("items", 0, "unit_price")),
    **{
        name: ("SimulateIn", ("simulate", name))
        for name in [
            "fail_times",
            "failure",
            "step",
            "delay_ms",
            "delay_step",
            "delay_when",
            "listener_fails",
        ]
    },
}
NEAR_MISSES = [
    "",
    " ",
    "0",
    "0.0",
    "0.00",
    "0.01",
    "0.1",
    "0.10",
    "00.5",
    "01",
    ".5",
    "1.",
    "1.001",
    "-1",
    "+1",
    "1e3",
    "999999.99",
    "1000000",
    "١٢",  # Arabic-Indic digits
    "１",  # a fullwidth digit
    "1\n",
    "\n1",
    " 1",
    "1 ",
    "12.50\x00",
    "MUG-1",
    " MUG-1",
    "MUG-1 ",
    "MUG 1",
    "MUG\u00a0",
    "\u00a0MUG",
    "MUG\x85",
    "\U0001f600",
    "ana@example.com",
    " ana@example.com",
    "ana@example.com\n",
    "ana@localhost",
    "ana@example.c",
    "ana@example.co1",
    "ana@-example.com",
    "ana@example-.com",
    "a..b@example.com",
    ".a@example.com",
    '"a b"@example.com',
    "ana@[127.0.0.1]",
    "anä@example.com",
    "ana@exämple.com",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + "b." * 124 + "co",
    "a@" + "b." * 125 + "co",
    "transient",
    "permanent",
    "payment",
    "stock",
    "before",
    "after",
]


@pytest.fixture
def document(settings):
    settings.ORDER_SIMULATION_ENABLED = True
    return openapi_document()


def document_judge(document: dict, schema: dict):
    """A validator for `schema` that resolves the document's references."""
    root = {**schema, "components": document["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def body_judge(document: dict):
    return document_judge(document, {"$ref": "#/components/schemas/OrderIn"})


def server_accepts(body: dict, *, simulation_enabled: bool = True) -> bool:
    try:
        parse_order_request(
            json.dumps(body).encode(), simulation_enabled=simulation_enabled
        )
    except OrderInputError:
        return False
    return True


def with_value(path: tuple, value) -> dict:
    body = copy.deepcopy(VALID)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


def field_schema(document: dict, field: str) -> dict:
    model, path = FIELDS[field]
    return document["components"]["schemas"][model]["properties"][path[-1]]


def boundary_values(schema: dict) -> list:
    """The values at and past each limit the schema states."""
    values = []
    for minimum in [schema.get("minimum")]:
        if minimum is not None:
            values += [minimum - 1, minimum]
    for maximum in [schema.get("maximum")]:
        if maximum is not None:
            values += [maximum, maximum + 1]
    for name in ["enum"]:
        for value in schema.get(name, []):
            values += [value, value.upper() if isinstance(value, str) else value]
    if "minItems" in schema:
        line = VALID["items"][0]
        values += [[line] * (schema["minItems"] - 1), [line] * schema["minItems"]]
        values += [[line] * schema["maxItems"], [line] * (schema["maxItems"] + 1)]
    for length in [schema.get("minLength"), schema.get("maxLength")]:
        if length is not None:
            values += ["x" * (length - 1), "x" * length, "x" * (length + 1)]
    return values


def assert_agree(document, field: str, value) -> None:
    body = with_value(FIELDS[field][1], value)
    allowed = body_judge(document).is_valid(body)
    accepted = server_accepts(body)
    assert allowed == accepted, (
        f"{field}={value!r}: the document "
        f"{'allows' if allowed else 'forbids'} it, the server "
        f"{'accepts' if accepted else 'refuses'} it"
    )


@pytest.mark.parametrize("field", list(FIELDS))
def test_each_boundary_the_document_states_is_the_validations(document, field):
    for value in boundary_values(field_schema(document, field)):
        assert_agree(document, field, value)


@pytest.mark.parametrize("field", list(FIELDS))
def test_near_misses_are_judged_alike_by_the_document_and_the_validation(
    document, field
):
    for value in [*NEAR_MISSES, None, True, 0, 1, -1, 2.0, 2.5, 1e1, -0.0, [], {}]:
        assert_agree(document, field, value)


STRING_FIELDS = ["customer_email", "sku", "unit_price"]


@pytest.mark.parametrize("field", STRING_FIELDS)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_strings_are_judged_alike_by_the_document_and_the_validation(
    document, field, data
):
    pattern = field_schema(document, field)["pattern"]
    value = data.draw(
        st.one_of(
            st.from_regex(pattern, fullmatch=True),
            st.text(max_size=80),
            st.from_regex(pattern, fullmatch=True).map(lambda text: text + " "),
        )
    )
    assert_agree(document, field, value)


def test_without_the_simulation_the_document_allows_simulate_only_null(settings):
    settings.ORDER_SIMULATION_ENABLED = False
    document = openapi_document()
    judge = body_judge(document)
    for value in [None, {}, {"fail_times": 1}, 0, "x"]:
        body = with_value(("simulate",), value)
        assert judge.is_valid(body) == server_accepts(body, simulation_enabled=False), (
            value
        )


def parameter_schema(document: dict, path: str, method: str, name: str) -> dict:
    operation = document["paths"][path][method]
    return next(p for p in operation["parameters"] if p["name"] == name)["schema"]


def key_accepted(value: str) -> bool:
    try:
        validate_idempotency_key(value)
    except OrderInputError:
        return False
    return True


def resume_id_accepted(value: str) -> bool:
    scope = {"headers": [(b"last-event-id", value.encode("latin-1"))]}
    try:
        parse_last_event_id(scope)
    except Refusal:
        return False
    return True


HEADER_VALUES = [
    *(value for value in NEAR_MISSES if value.isascii()),
    "k" * 255,
    "k" * 256,
    "café",
    "a\xa0b",
    "a\xadb",
    "\xa0",
    "a\tb",
    "a\x7fb",
    "9" * 18,
    "9" * 19,
    "0",
    "00",
]


@pytest.mark.parametrize(
    ("path", "name", "accepted"),
    [
        ("/api/orders", "Idempotency-Key", key_accepted),
        ("/api/orders/{order_id}/events", "Last-Event-ID", resume_id_accepted),
        ("/api/orders/{order_id}/events", "lastEventId", resume_id_accepted),
        ("/api/events", "Last-Event-ID", resume_id_accepted),
    ],
)
def test_each_header_is_judged_alike_by_the_document_and_the_validation(
    document, path, name, accepted
):
    method = "post" if path == "/api/orders" else "get"
    judge = document_judge(document, parameter_schema(document, path, method, name))
    for value in HEADER_VALUES:
        assert judge.is_valid(value) == accepted(value), (name, value)


@pytest.mark.parametrize(
    ("header", "query"), [("", "x"), ("12", "x"), ("x", "12"), ("", "-1")]
)
def test_a_resume_id_out_of_shape_is_refused_even_beside_a_good_one(header, query):
    """The document gives the header and the query each a shape; the header
    wins when both say an id, but neither may be malformed."""
    scope = {
        "headers": [(b"last-event-id", header.encode())],
        "query_string": f"lastEventId={query}".encode(),
    }
    with pytest.raises(Refusal):
        parse_last_event_id(scope)


def test_the_largest_valid_order_fits_the_body_limit_however_it_is_written(
    document,
):
    """Every character escaped (an emoji is 12 bytes as \\ud83d\\ude00) and
    pretty-printed: a client's encoder is free to write it so."""
    line = {"sku": "\U0001f600" * shapes.MAX_SKU_LENGTH, "quantity": 10_000}
    line["unit_price"] = "999999.99"
    body = {
        "customer_email": "a" * 64 + "@" + "b." * 93 + "com",
        "items": [line] * shapes.MAX_ITEMS,
        "simulate": {
            "fail_times": 100,
            "failure": "permanent",
            "step": "payment",
            "delay_ms": 1,
            "delay_step": "payment",
            "delay_when": "before",
            "listener_fails": False,
        },
    }
    assert len(body["customer_email"]) == shapes.MAX_EMAIL_LENGTH
    assert body_judge(document).is_valid(body)
    for written in [json.dumps(body), json.dumps(body, indent=4)]:
        assert len(written.encode()) < shapes.MAX_BODY_BYTES
        assert server_accepts(json.loads(written))
