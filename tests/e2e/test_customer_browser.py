"""The customer's side in a real Chromium, in English and in Korean, on a phone
and on a laptop: the pages speak the browser's language (Accept-Language),
with no engineer's word; a failed order's public document, page and stream
name no setting, exception or path; the switch changes the language; a failed
order can be placed again."""

import json
import re

import pytest

from tests.e2e import test_browser
from tests.e2e.test_browser import PageProblems
from tests.expected import engineer_words
from tests.sse import read_sse

pytestmark = pytest.mark.e2e

browser = test_browser.browser

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}
LANGUAGES = {"en": "en-US", "ko": "ko-KR"}
# What a Korean page may show in Latin letters: names, codes, units.
LATIN_ALLOWED = {"orderproj", "English", "US", "UTC", "ms"}


@pytest.fixture(
    params=[(lang, size) for lang in LANGUAGES for size in ("phone", "laptop")],
    ids=lambda param: f"{param[0]}-{param[1]}",
)
def customer(browser, request):
    """A page in a browser set to a language (its Accept-Language), on a
    phone or a laptop; it fails the test on any console error."""
    language, size = request.param
    context = browser.new_context(
        locale=LANGUAGES[language],
        viewport=PHONE if size == "phone" else LAPTOP,
        is_mobile=size == "phone",
    )
    problems = PageProblems()
    context.on("page", problems.watch)
    page = context.new_page()
    page.language = language
    yield page
    for each in context.pages:
        each.wait_for_timeout(300)
    context.close()
    assert problems.unexpected() == [], "the pages reported errors"


def read(page) -> str:
    return page.inner_text("body")


def latin_words(text: str, *known: str) -> list[str]:
    for value in known:
        text = text.replace(value, " ")
    words = re.findall(r"[A-Za-z]{2,}", text)
    return [word for word in words if word not in LATIN_ALLOWED]


def assert_for_customers(page, *known: str) -> None:
    """No engineer's word; in Korean, no English one either (a string left
    untranslated); nothing wider than the screen."""
    text = read(page)
    assert engineer_words(text) == []
    if page.language == "ko":
        assert latin_words(text, *known) == []
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_a_customer_places_an_order_and_reads_it_retry_and_complete(stack, customer):
    customer.goto(stack.base_url + "/")
    assert customer.get_attribute("html", "lang") == customer.language
    assert_for_customers(customer, "buyer@example.com", "MUG-1")
    customer.fill("input[name=fail_times]", "1")
    customer.click("[data-role=submit]")
    customer.wait_for_url("**/orders/ord_*")
    order_id = customer.url.rsplit("/", 1)[-1]
    customer.wait_for_selector(
        "[data-role=status][data-status=COMPLETED]", timeout=30_000
    )
    customer.wait_for_selector("[data-connection=live]")

    assert customer.get_attribute("html", "lang") == customer.language
    retry = customer.locator("[data-role=timeline] [data-type='order.retry_scheduled']")
    assert retry.count() == 1
    if customer.language == "ko":
        assert "결제 대행사와 연결이 원활하지 않아" in retry.inner_text()
        assert "주문이 완료되었습니다" in customer.inner_text("[data-role=message]")
    else:
        assert "Having trouble reaching the payment provider" in retry.inner_text()
    assert customer.locator("[data-role=failure-box]").is_hidden()
    assert_for_customers(customer, order_id, "buyer@example.com", "MUG-1")


@pytest.fixture(scope="module")
def broken_stack(tmp_path_factory):
    """A stack whose steps fail with an unexpected error that names a path (the
    simulated gateways' directory lies under a file): an engineer's message."""
    from tests.stack import make_stack

    workdir = tmp_path_factory.mktemp("broken")
    (workdir / "a-file").write_text("")
    running = make_stack(
        workdir, ORDER_SIMULATED_GATEWAY_DIR=str(workdir / "a-file" / "gateway")
    ).start()
    yield running
    running.stop()


def public_texts(document: dict) -> str:
    texts = [document["message"], document["failure_reason"]]
    for event in document["events"]:
        texts += [event["detail"], event["message"]]
    return "\n".join(texts)


def stream_texts(stack, order_id: str, language: str) -> str:
    """The per-order stream's replay, as a browser in `language` reads it."""
    texts = []
    with (
        stack.client() as client,
        read_sse(
            client,
            f"/api/orders/{order_id}/events",
            headers={"Accept-Language": language},
            within=15,
            what="the failed order's history",
        ) as source,
    ):
        for sse in source.named_events():
            data = json.loads(sse.data)
            texts += [data["detail"], data["message"]]
            if sse.event == "order.failed":
                break
    return "\n".join(texts)


def test_a_failed_orders_document_page_and_stream_name_no_setting_exception_or_path(
    broken_stack, customer
):
    order_id = broken_stack.place()["order_id"]
    broken_stack.wait_for_terminal(order_id, timeout=60)
    reason = broken_stack.operator_failure_reason(order_id)
    # What the operators read, and the customers must not.
    assert "NotADirectoryError" in reason and "ORDER_MAX_ATTEMPTS" in reason
    with broken_stack.client() as client:
        document = client.get(
            f"/api/orders/{order_id}", headers={"Accept-Language": customer.language}
        ).json()

    assert document["status"] == "FAILED"
    assert engineer_words(public_texts(document)) == []
    assert "a-file" not in public_texts(document)
    streamed = stream_texts(broken_stack, order_id, customer.language)
    assert engineer_words(streamed) == []
    assert "a-file" not in streamed

    customer.goto(broken_stack.base_url + document["page_url"])
    customer.wait_for_selector("[data-connection=live]")
    assert customer.locator("[data-role=failure-box]").is_visible()
    assert customer.inner_text("[data-role=message]") == document["failure_reason"]
    assert_for_customers(customer, order_id, "buyer@example.com", "MUG-1")

    customer.click("[data-role=place-again]")
    # A new order, with a page of its own.
    customer.wait_for_url(re.compile(rf".*/orders/(?!{order_id})ord_\w+$"))
    assert customer.get_attribute("html", "lang") == customer.language


def test_the_language_switch_changes_the_pages_and_keeps_the_choice(stack, customer):
    other = "en" if customer.language == "ko" else "ko"
    placed = stack.place()
    customer.goto(stack.base_url + placed["page_url"])

    customer.click(f"[data-role=language-switch] button[value={other}]")

    # A selector, not wait_for_function: the page's CSP forbids eval.
    customer.wait_for_selector(f"html[lang={other}]")
    assert customer.url.endswith(placed["page_url"])
    customer.goto(stack.base_url + "/")
    assert customer.get_attribute("html", "lang") == other
