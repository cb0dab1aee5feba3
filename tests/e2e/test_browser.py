"""The pages in a real Chromium against a real stack: what a customer and an
operator see. Skipped, with the reason, where Chromium or Playwright is missing,
unless REQUIRE_BROWSER=1 (as .ci/run sets after installing Debian's chromium)."""

import os
import shutil

import pytest

from tests.stack import STAFF_PASSWORD, STAFF_USER

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright is not installed"
    if CHROMIUM is None:
        missing = "Chromium is not installed (apt-get install chromium)"
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    opened = context.new_page()
    problems = []
    opened.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error"
            else None
        ),
    )
    opened.problems = problems
    yield opened
    context.close()


def test_customer_places_an_order_and_watches_it_retry_and_complete_live(stack, page):
    page.goto(stack.base_url + "/")
    page.fill("input[name=sku]", "MUG-<img src=x onerror=alert(1)>")
    page.fill("input[name=fail_times]", "2")
    page.click("button[type=submit]")
    page.wait_for_url("**/orders/ord_*")
    page.wait_for_selector("[data-connection=live]")
    assert page.get_attribute("[data-step=payment]", "data-state") == "pending"
    page.wait_for_selector("[data-status=RETRYING]", timeout=15_000)
    page.wait_for_selector("[data-status=COMPLETED]", timeout=30_000)
    timeline = page.query_selector_all("[data-role=timeline] [data-event-id]")
    assert [item.get_attribute("data-type") for item in timeline][-1] == (
        "order.completed"
    )
    assert len(timeline) == 11
    steps = page.query_selector_all("[data-role=steps] [data-step]")
    assert [step.get_attribute("data-state") for step in steps] == ["done", "done"]
    page.wait_for_selector("[data-step=payment] code")
    assert page.inner_text("[data-step=payment] code").startswith("pay_")
    assert "MUG-<img src=x onerror=alert(1)>" in page.inner_text("body")
    assert page.problems == []


def test_order_page_falls_back_to_polling_while_the_stream_fails_then_resumes(
    stack, page
):
    placed = stack.place(fail_times=1, delay_ms=300)
    # The stream answers 502, as a proxy does during a deploy.
    page.route("**/events*", lambda route: route.fulfill(status=502, body="down"))
    page.goto(stack.base_url + placed["page_url"])
    page.wait_for_selector("[data-connection=polling]")
    assert "every 3 s" in page.inner_text("[data-role=connection]")
    page.wait_for_selector("[data-status=COMPLETED]", timeout=30_000)
    page.unroute("**/events*")
    page.wait_for_selector("[data-connection=live]", timeout=45_000)


def test_operator_retries_a_failed_order_from_the_dashboard(stack, page):
    placed = stack.place(failure="permanent")
    stack.wait_for_terminal(placed["order_id"])
    page.goto(stack.base_url + "/dashboard/")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/dashboard/")
    button = page.locator(f"[data-role=retry][data-order-id='{placed['order_id']}']")
    button.click()
    page.wait_for_selector("[data-role=action-message][data-outcome=ok]")
    page.wait_for_selector(
        "[data-role=feed] [data-type='order.retry_requested']", timeout=10_000
    )
    types = [event["type"] for event in stack.status(placed["order_id"])["events"]]
    assert types.count("order.retry_requested") == 1


def test_a_new_failure_appears_live_in_the_dashboards_failed_orders_table(stack, page):
    page.goto(stack.base_url + "/dashboard/")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/dashboard/")
    page.wait_for_selector("[data-connection=live]")
    placed = stack.place(failure="permanent")
    row = f"[data-role=retry][data-order-id='{placed['order_id']}']"
    page.wait_for_selector(row, timeout=15_000)
    page.wait_for_timeout(500)  # a later refresh must not fail either
    assert page.problems == []
