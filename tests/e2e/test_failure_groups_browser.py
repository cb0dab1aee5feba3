"""The failure groups' admin pages in a real Chromium, as staff see them on a
phone and on a laptop, and the failure records list on a 1280 px screen. The
`page` fixture fails a test on any console error, a CSP violation included."""

import pytest

from tests.e2e import test_browser
from tests.e2e.test_failure_groups_e2e import LISTENER, enqueue, groups
from tests.stack import STAFF_PASSWORD, STAFF_USER, wait_until

pytestmark = pytest.mark.e2e

# The browser pages of tests/e2e/test_browser.py: Chromium, and a page that
# fails the test on any console error.
browser = test_browser.browser
page = test_browser.page

KIND = "orders.models.Delivery.DoesNotExist"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def group(stack) -> dict:
    """A group of three failures of the delivery listener about one order (the
    longest row a list has), made by real workers."""
    order_id = stack.place()["order_id"]
    stack.wait_for_terminal(order_id)
    enqueue(stack, [[order_id, f"dlv_wrong{n}"] for n in range(3)])
    found = wait_until(
        lambda: [g for g in groups(stack, KIND) if g["count"] == 3],
        timeout=30,
        what="three failures in one group",
    )[0]
    return {**found, "order_id": order_id}


def assert_the_list_fits(page) -> None:
    """No column of the list is scrolled out of sight: the admin shows the table
    in a box that scrolls sideways (div.results), so that box must not need to."""
    results = page.locator("#changelist .results")
    overflow = results.evaluate("box => box.scrollWidth - box.clientWidth")
    widths = [
        (header.inner_text().strip(), round(header.bounding_box()["width"]))
        for header in page.locator("#result_list thead th").all()
    ]
    assert overflow <= 0, f"the list is {overflow} px too wide: {widths}"
    right_edge = results.bounding_box()
    for header in page.locator("#result_list thead th").all():
        box = header.bounding_box()
        assert box["x"] + box["width"] <= right_edge["x"] + right_edge["width"] + 1
    assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]


def log_in_to_the_admin(stack, page, path: str) -> None:
    page.goto(f"{stack.base_url}/admin/login/?next={path}")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")


@pytest.mark.parametrize("viewport", [PHONE, LAPTOP], ids=["phone", "laptop"])
def test_staff_see_the_groups_list_and_a_groups_page(stack, page, group, viewport):
    page.set_viewport_size(viewport)
    log_in_to_the_admin(stack, page, "/admin/orders/failuregroup/")

    if viewport == LAPTOP:
        assert_the_list_fits(page)
    row = page.locator("#result_list tbody tr", has_text="order_delivery_completed")
    assert row.locator("td.field-count").inner_text() == "3"
    sparkline = row.locator("svg.failure-sparkline")
    assert sparkline.is_visible()
    assert sparkline.locator("rect").count() == 24
    assert "3 in the last 24 h" in sparkline.get_attribute("aria-label")

    row.locator("th a").click()
    page.wait_for_url(f"**/admin/orders/failuregroup/{group['id']}/change/")
    content = page.locator("#content").inner_text()
    assert "orders/services/deliveries.py in order_delivery_completed" in content
    assert LISTENER in content
    assert "its records (3 failures in all)" in content
    assert group["order_id"] in content
    assert page.locator("pre.failure-traceback").is_visible()
    # The traceback wraps inside the screen (the stylesheet, not a style
    # attribute, which the CSP would refuse).
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]


def test_the_records_list_fits_a_laptop_with_its_exception_and_message(
    stack, page, group
):
    page.set_viewport_size(LAPTOP)
    log_in_to_the_admin(stack, page, "/admin/orders/failurerecord/")

    assert page.locator("#nav-sidebar").is_visible()
    assert page.locator("#changelist-filter").is_visible()
    assert_the_list_fits(page)
    first_message = page.locator("#result_list td.field-short_message").first
    assert "Delivery matching query does not exist" in first_message.inner_text()
    assert first_message.is_visible()
    assert page.locator("#result_list td.field-short_exception").first.inner_text() == (
        "DoesNotExist"
    )
    order_cell = page.locator("#result_list td.field-short_order a").first
    assert order_cell.get_attribute("title") == group["order_id"]
