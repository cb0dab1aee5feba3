"""GET /api/openapi.json and /api/docs: the API's description, as data and as a
page rendered on the server from the same document (no script to load, so it
works under any Content-Security-Policy)."""

import re

from django.http import HttpRequest, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from orders.api.methods import allow_methods
from orders.api.openapi import openapi_document
from orders.api.views import json_errors

METHODS = ("get", "head", "post", "put", "patch", "delete")


@json_errors
@allow_methods("GET", "HEAD")
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_document())


@allow_methods("GET", "HEAD")
def api_docs(request: HttpRequest):
    document = openapi_document()
    schemas = document["components"]["schemas"]
    operations = [
        {
            "method": method.upper(),
            "path": path,
            "anchor": operation["operationId"],
            "summary": operation["summary"],
            "description": prose(operation.get("description", "")),
            "staff": "security" in operation,
            "parameters": [
                {
                    "name": parameter["name"],
                    "in": parameter["in"],
                    "required": parameter.get("required", False),
                    "type": describe(parameter["schema"]),
                    "description": prose(parameter.get("description", "")),
                }
                for parameter in operation.get("parameters", [])
            ],
            "body": _body_schema(operation.get("requestBody")),
            "responses": [
                {
                    "status": status,
                    "description": prose(response["description"]),
                    "schema": _body_schema(response),
                }
                for status, response in operation["responses"].items()
            ],
        }
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]
    return render(
        request,
        "orders/api_docs.html",
        {
            "title": document["info"]["title"],
            "description": prose(document["info"]["description"]),
            "operations": operations,
            "schemas": [
                {
                    "name": name,
                    "description": prose(schema.get("description", "")),
                    "fields": _fields(schema),
                    "type": "" if "properties" in schema else describe(schema),
                }
                for name, schema in schemas.items()
            ],
        },
    )


def prose(text: str) -> SafeString:
    """The document's descriptions are Markdown-ish: `code` spans become <code>,
    everything else is escaped."""
    return mark_safe(re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text)))


def _body_schema(part: dict | None) -> dict | None:
    if not part or "content" not in part:
        return None
    (media_type, content), *_ = part["content"].items()
    return {
        "type": describe(content["schema"]),
        "media_type": media_type,
        "schema_anchor": "$ref" in content["schema"],
    }


def _fields(schema: dict) -> list[dict]:
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "type": describe(prop),
            "required": name in required,
            "description": prose(prop.get("description", "")),
            "default": repr(prop["default"]).replace("'", '"')
            if "default" in prop and prop["default"] is not None
            else "",
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def describe(schema: dict) -> str:
    """A JSON Schema as a short phrase: "integer, 1 to 10000", "list of LineIn"."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(describe(option) for option in schema["anyOf"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    if "enum" in schema:
        return "one of " + ", ".join(f'"{value}"' for value in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        phrase = f"list of {describe(schema.get('items', {}))}"
    elif kind == "object" and "additionalProperties" in schema:
        keys = describe(schema.get("propertyNames", {"type": "string"}))
        values = describe(schema["additionalProperties"])
        phrase = f"object of {keys} to {values}"
    else:
        phrase = kind
    details = []
    if "format" in schema:
        details.append(schema["format"])
    if "pattern" in schema:
        details.append(f"matching {schema['pattern']}")
    low = schema.get("minimum", schema.get("minLength", schema.get("minItems")))
    high = schema.get("maximum", schema.get("maxLength", schema.get("maxItems")))
    unit = {"string": " characters", "array": " items"}.get(kind, "")
    if low is not None and high is not None:
        details.append(f"{low} to {high}{unit}")
    elif high is not None:
        details.append(f"at most {high}{unit}")
    elif low is not None:
        details.append(f"at least {low}{unit}")
    return f"{phrase} ({', '.join(details)})" if details else phrase
