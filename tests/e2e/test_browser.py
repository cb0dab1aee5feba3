"""The pages in a real Chromium against a real stack: what a customer and an
operator see. Skipped, with the reason, where Chromium or Playwright is missing,
unless REQUIRE_BROWSER=1 (as .ci/run sets after installing Debian's chromium)."""

import os
import re
import shutil

import pytest

from orders.customer_texts import STATUS_LABELS
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


class PageProblems:
    """Every uncaught page error and every console error (a script's
    console.error, a failed resource, a CSP violation: Chromium reports them
    all to the console) of every page a test opens, checked when it ends."""

    def __init__(self):
        self.seen: list[str] = []
        self.expected: list[re.Pattern] = []

    def watch(self, page) -> None:
        page.on("pageerror", lambda error: self.seen.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type == "error":
            self.seen.append(f"console error: {message.text} ({message.location})")

    def expect(self, pattern: str) -> None:
        """A problem this test provokes on purpose (a 502 it routes, say)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [
            problem
            for problem in self.seen
            if not any(pattern.search(problem) for pattern in self.expected)
        ]


@pytest.fixture
def page(browser):
    context = browser.new_context()
    problems = PageProblems()
    context.on("page", problems.watch)  # every page of the test, popups included
    opened = context.new_page()
    opened.problems = problems
    yield opened
    # Whatever a page still had to say (a refresh under way) comes in first.
    for each in context.pages:
        each.wait_for_timeout(300)
    context.close()
    assert problems.unexpected() == [], "the pages reported errors"


def status_badge(status: str) -> str:
    """The order page's status badge showing `status` (the page root and the
    timeline items carry data-status too; only the badge is what a person reads)."""
    return f"[data-role=status][data-status={status}]"


def wait_for_badge(page, status: str, *, timeout: float) -> None:
    page.wait_for_selector(status_badge(status), timeout=timeout)
    badge = page.locator("[data-role=status]")
    assert badge.inner_text() == STATUS_LABELS[status]
    assert badge.get_attribute("class") == f"badge badge-{status.lower()}"


def test_customer_places_an_order_and_watches_it_retry_and_complete_live(stack, page):
    page.goto(stack.base_url + "/")
    page.fill("input[name=sku]", "MUG-<img src=x onerror=alert(1)>")
    page.fill("input[name=fail_times]", "2")
    page.click("[data-role=submit]")
    page.wait_for_url("**/orders/ord_*")
    page.wait_for_selector("[data-connection=live]")
    assert page.get_attribute("[data-step=payment]", "data-state") == "pending"
    wait_for_badge(page, "RETRYING", timeout=15_000)
    wait_for_badge(page, "COMPLETED", timeout=30_000)
    timeline = page.query_selector_all("[data-role=timeline] [data-event-id]")
    # The two retries are one line; the failed attempts and the retries'
    # starts are told by it.
    assert [item.get_attribute("data-type") for item in timeline] == [
        "order.created",
        "order.processing",
        "order.retry_scheduled",
        "order.step_completed",
        "order.step_completed",
        "order.completed",
    ]
    assert (
        timeline[2]
        .inner_text()
        .endswith(
            "Having trouble reaching the payment provider — trying again (3 of 3)."
        )
    )
    steps = page.query_selector_all("[data-role=steps] [data-step]")
    assert [step.get_attribute("data-state") for step in steps] == ["done", "done"]
    assert page.inner_text("[data-step=payment] [data-role=step-state]") == "done"
    assert "MUG-<img src=x onerror=alert(1)>" in page.inner_text("body")


def test_order_page_falls_back_to_polling_while_the_stream_fails_then_resumes(
    stack, page
):
    placed = stack.place(fail_times=1, delay_ms=300)
    # The stream answers 502, as a proxy does during a deploy (Chromium logs each).
    page.problems.expect(r"status of 502 .*/events")
    page.route("**/events*", lambda route: route.fulfill(status=502, body="down"))
    page.goto(stack.base_url + placed["page_url"])
    page.wait_for_selector("[data-connection=polling]")
    assert "every 3 s" in page.inner_text("[data-role=connection]")
    wait_for_badge(page, "COMPLETED", timeout=30_000)
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
    log_in_to_the_dashboard(stack, page)
    placed = stack.place(failure="permanent")
    row = f"[data-role=retry][data-order-id='{placed['order_id']}']"
    page.wait_for_selector(row, timeout=15_000)
    page.wait_for_timeout(500)  # a later refresh must not fail either


def log_in_to_the_dashboard(stack, page) -> None:
    page.goto(stack.base_url + "/dashboard/")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/dashboard/")
    page.wait_for_selector("[data-connection=live]")


def test_a_retry_that_gets_no_answer_or_a_proxy_error_says_so_on_the_dashboard(
    stack, page
):
    placed = stack.place(failure="permanent")
    stack.wait_for_terminal(placed["order_id"])
    log_in_to_the_dashboard(stack, page)
    button = page.locator(f"[data-role=retry][data-order-id='{placed['order_id']}']")
    page.problems.expect(r"(net::ERR_FAILED|status of 502) .*/retry'")
    page.route("**/retry", lambda route: route.abort())
    button.click()
    message = page.locator("[data-role=action-message][data-outcome=error]")
    message.wait_for()
    assert message.inner_text() == (
        f"Could not reach the server to retry {placed['order_id']}."
    )
    page.wait_for_selector(
        f"[data-role=retry][data-order-id='{placed['order_id']}']:enabled"
    )
    page.unroute("**/retry")
    page.route(
        "**/retry",
        lambda route: route.fulfill(
            status=502, content_type="text/html", body="<h1>Bad gateway</h1>"
        ),
    )
    button.click()
    # A locator, not wait_for_function: the page's CSP forbids eval, and
    # Playwright evaluates a function given as text with it whenever the first
    # check fails (seen under load: EvalError, 'unsafe-eval').
    page.locator(
        "[data-role=action-message]", has_text="the server answered 502"
    ).wait_for()
    assert stack.status(placed["order_id"])["status"] == "FAILED"


def test_the_dashboard_says_when_its_numbers_could_not_be_refreshed(stack, page):
    log_in_to_the_dashboard(stack, page)
    page.problems.expect(r"status of 503 .*/api/dashboard/stats'")
    page.route(
        "**/api/dashboard/stats*",
        lambda route: route.fulfill(status=503, content_type="text/plain", body="x"),
    )
    stack.place()  # its events make the dashboard refresh
    problem = page.locator("[data-role=stats-problem]")
    problem.wait_for(timeout=15_000)
    assert "the server answered 503" in problem.inner_text()
    page.unroute("**/api/dashboard/stats*")
    stack.place()
    problem.wait_for(state="hidden", timeout=15_000)


def test_placing_an_order_without_an_answer_says_so_and_keeps_the_form(stack, page):
    page.goto(stack.base_url + "/")
    page.problems.expect(r"net::ERR_FAILED .*/api/orders'")
    page.route("**/api/orders", lambda route: route.abort())
    page.click("[data-role=submit]")
    errors = page.locator("[data-role=form-errors]")
    errors.wait_for()
    assert "Could not reach the server" in errors.inner_text()
    assert page.locator("[data-role=submit]").is_enabled()
    assert page.url == stack.base_url + "/"


def test_a_malformed_event_surfaces_as_a_page_error_rather_than_being_dropped(
    stack, page
):
    """The page's event handling hides no error: data that is not JSON (a
    server bug) is an uncaught error the page reports."""
    placed = stack.place()
    stack.wait_for_terminal(placed["order_id"])
    page.route(
        "**/events*",
        lambda route: route.fulfill(
            status=200,
            content_type="text/event-stream",
            body="id: 999999\nevent: order.created\ndata: not json\n\n",
        ),
    )
    page.problems.expect(r"page error: .*JSON")
    with page.expect_event("pageerror", timeout=10_000) as raised:
        page.goto(stack.base_url + placed["page_url"])
    assert "JSON" in str(raised.value)
