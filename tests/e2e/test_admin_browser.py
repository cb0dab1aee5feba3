"""The operations console in Chromium against a real stack: the admin's index and
an order's page on a phone and on a desktop, under the Content-Security-Policy,
the retry button of a FAILED order's page, and the page of a locked-out login."""

import pytest

from tests.e2e.test_browser import browser, page  # noqa: F401 - fixtures
from tests.e2e.test_csp_browser import RECORD_VIOLATIONS, log_in, violations
from tests.stack import wait_until

pytestmark = pytest.mark.e2e

VIEWPORTS = {
    "phone": {"width": 390, "height": 844},
    "desktop": {"width": 1366, "height": 900},
}


def open_in_the_admin(stack, page, order_id: str) -> None:  # noqa: F811
    """An order's admin page, found as an operator finds it: by searching."""
    page.goto(f"{stack.base_url}/admin/orders/order/?q={order_id}")
    page.click(f"#result_list a:text-is('{order_id}')")
    page.wait_for_selector("[data-role=steps]")


def fits_the_width(page, selector: str, width: int) -> bool:  # noqa: F811
    box = page.locator(selector).bounding_box()
    return box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_the_index_and_an_orders_page_render_for_staff(
    stack,
    page,  # noqa: F811
    viewport,
):
    size = VIEWPORTS[viewport]
    page.set_viewport_size(size)
    placed = stack.place(failure="permanent")
    stack.wait_for_terminal(placed["order_id"])
    log_in(stack, page)

    page.wait_for_selector("[data-role=status-counts]")
    failed = page.locator("[data-role=status-counts] [data-status=FAILED]")
    assert int(failed.locator("[data-role=count]").inner_text()) >= 1
    assert page.locator("#site-name").inner_text() == "orderproj operations"
    assert fits_the_width(page, "[data-role=status-counts]", size["width"])
    assert page.get_attribute("[data-role=dashboard-link]", "href") == "/dashboard/"

    open_in_the_admin(stack, page, placed["order_id"])
    assert page.get_attribute("[data-step=payment]", "data-state") == "pending"
    retry = page.locator("[data-action=retry]")
    assert retry.is_visible()
    assert fits_the_width(page, "[data-role=order-actions]", size["width"])
    assert violations(page) == []


def test_the_retry_button_on_a_failed_orders_page_retries_it(
    stack,
    page,  # noqa: F811
):
    # Every attempt takes 2.5 s (the most a stack's 5 s attempt allows), so the
    # retried order is seen on its way.
    placed = stack.place(failure="permanent", delay_ms=2500)
    stack.wait_for_terminal(placed["order_id"], timeout=30)
    log_in(stack, page)
    open_in_the_admin(stack, page, placed["order_id"])

    page.click("[data-action=retry]")

    page.wait_for_selector(".messagelist .success")
    assert f"Retried {placed['order_id']}" in page.inner_text(".messagelist")
    assert page.locator("[data-action=retry]").count() == 0
    document = stack.status(placed["order_id"])
    assert document["status"] in {"PENDING", "PROCESSING"}
    assert [event["type"] for event in document["events"]].count(
        "order.retry_requested"
    ) == 1
    # The retry's attempt runs: the worker took it again.
    wait_until(
        lambda: (
            stack.status(placed["order_id"])["attempts"] == 1
            and stack.status(placed["order_id"])["status"] != "PENDING"
        ),
        timeout=30,
        what="the retried order's first attempt",
    )
    assert violations(page) == []


def test_a_locked_out_login_says_why_in_the_console_s_look(
    stack,
    page,  # noqa: F811
):
    """Five wrong passwords for one username: the form that answered each of them
    gives way to the lockout page, under the policy."""
    page.problems.expect(r"status of 429")
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(stack.base_url + "/admin/login/?next=/admin/")
    for n in range(5):
        page.fill("#id_username", "someone-else")
        page.fill("#id_password", f"wrong-{n}")
        page.click("input[type=submit]")
        page.wait_for_load_state("load")

    locked = page.locator("[data-role=locked-out]")
    assert "Too many failed logins" in locked.inner_text()
    assert page.locator("#site-name").inner_text() == "orderproj operations"
    assert violations(page) == []
