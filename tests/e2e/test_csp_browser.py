"""The admin and the pages under the Content-Security-Policy, in Chromium: no
violation, no console error, and the admin's own scripts run.

Django 5.2's admin has one inline piece, a <style> in change_list.html that is
rendered only for a change list with actions neither on top nor at the bottom;
no ModelAdmin here does that, so the admin needs no exception to the policy."""

import pytest

from tests.e2e.test_browser import browser, page  # noqa: F401 - fixtures
from tests.stack import STAFF_PASSWORD, STAFF_USER

pytestmark = pytest.mark.e2e

# Records every violation of the page's policy (the init script runs through
# the DevTools protocol, outside the policy).
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

ADMIN_PAGES = [
    "/admin/",
    "/admin/orders/order/",
    "/admin/orders/failurerecord/",
    "/admin/orders/delivery/",
    "/admin/auth/user/",
    "/admin/auth/user/add/",
    "/admin/auth/group/add/",
    "/admin/django_q/schedule/add/",
    "/admin/django_q/failure/",
    "/admin/axes/accessattempt/",
    "/admin/password_change/",
]


def violations(page) -> list[str]:  # noqa: F811 - the fixture's name
    return page.evaluate("window.cspViolations")


def log_in(stack, page):  # noqa: F811
    page.add_init_script(RECORD_VIOLATIONS)
    page.goto(stack.base_url + "/admin/login/?next=/admin/")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def test_every_admin_page_works_under_the_policy(stack, page):  # noqa: F811
    stack.place()
    log_in(stack, page)
    for path in ADMIN_PAGES:
        response = page.goto(stack.base_url + path)
        assert response.status == 200, path
        assert "unsafe-inline" not in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
        assert violations(page) == [], path
    assert page.problems.unexpected() == []


def test_the_admins_scripts_run_under_the_policy(stack, page):  # noqa: F811
    stack.place()
    log_in(stack, page)
    page.goto(stack.base_url + "/admin/orders/order/")
    # actions.js: the header checkbox selects every row and counts them.
    page.click("#action-toggle")
    assert page.is_checked("input.action-select")
    page.wait_for_selector(".action-counter:has-text('selected')")
    # The change page of an order, through its link.
    page.click("#result_list tbody tr th a")
    page.wait_for_selector("#content h1")
    # DateTimeShortcuts.js adds "Today"/"Now" links to the schedule's date field.
    page.goto(stack.base_url + "/admin/django_q/schedule/add/")
    page.wait_for_selector(".datetimeshortcuts a", state="attached")
    assert violations(page) == []
    assert page.problems.unexpected() == []
