"""The users' API page (docs/users/api.md) lists exactly the operations of the
OpenAPI document, so neither can gain or lose an endpoint without the other."""

import re
from pathlib import Path

from orders.api.openapi import openapi_document

API_PAGE = Path(__file__).resolve().parent.parent / "docs" / "users" / "api.md"

# An operation as the page writes it, in a code span: `POST /api/orders`. A path
# parameter may be written as in the document ({order_id}) or as a URL pattern
# (<order_id>).
OPERATION = re.compile(r"`(GET|HEAD|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for method, path in (
            (method.lower(), re.sub(r"<([^>]+)>", r"{\1}", path))
            for method, path in OPERATION.findall(API_PAGE.read_text())
        )
    }


def published_operations() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }


def test_every_operation_of_the_openapi_document_is_on_the_api_page():
    missing = published_operations() - documented_operations()
    assert not missing, (
        f"in /api/openapi.json but not in {API_PAGE.name}: {sorted(missing)}"
    )


def test_the_api_page_names_no_operation_the_openapi_document_lacks():
    unknown = documented_operations() - published_operations()
    assert not unknown, (
        f"in {API_PAGE.name} but not in /api/openapi.json: {sorted(unknown)}"
    )
