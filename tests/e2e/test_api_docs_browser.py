"""/api/docs in a real Chromium: it reads as a page, its links work, and nothing
fails in the console (it loads no script of its own)."""

import json

import pytest

from tests.e2e.test_browser import browser, page  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e


def test_the_api_docs_page_describes_every_operation_and_links_the_document(
    stack,
    page,  # noqa: F811
):
    page.goto(stack.base_url + "/api/docs")
    assert page.inner_text("h1") == "orderproj API"
    operations = page.query_selector_all("[data-role=operation]")
    assert len(operations) >= 6
    page.click("text=POST /api/orders >> nth=0")
    assert page.url.endswith("#placeOrder")
    page.click("#placeOrder a[href='#schema-OrderIn']")
    assert "customer_email" in page.inner_text("#schema-OrderIn")
    assert page.inner_text("#placeOrder").count("invalid_json") == 1
    response = page.goto(stack.base_url + "/api/openapi.json")
    assert json.loads(response.text())["openapi"] == "3.1.0"
    assert page.problems.unexpected() == []
