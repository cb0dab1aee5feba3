"""The customers' mails on a real stack: the qcluster's customer mailer sends
one per final outcome, in the language the order was placed in, and the mails
land in files (EMAIL_URL file://) read here as the customer's mailbox would
show them."""

import email
import email.policy
from pathlib import Path

import pytest

from tests.expected import engineer_words
from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

SITE = "https://shop.example.com"


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mails")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mail_dir):
    running = make_stack(
        tmp_path_factory.mktemp("stack"),
        EMAIL_URL=f"file://{mail_dir}",
        ORDER_SITE_URL=SITE,
    ).start()
    yield running
    running.stop()


def mails_to(mail_dir: Path, order_id: str) -> list[email.message.EmailMessage]:
    """The mails Django's file backend wrote (each file: messages, each followed
    by a line of 79 dashes) about this order, oldest first."""
    found = []
    for path in sorted(mail_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        # As bytes: a text part in 8 bits (UTF-8, the Korean mails) read from
        # a str comes out as escapes.
        for chunk in path.read_bytes().split(b"-" * 79 + b"\n"):
            if chunk.strip():
                message = email.message_from_bytes(chunk, policy=email.policy.default)
                if order_id in message.get_body(("plain",)).get_content():
                    found.append(message)
    return found


def mailed(stack, order_id: str) -> bool:
    """The customer mailer sent the mail this order was owed, and owes none."""
    (due, sent) = stack.read_one(
        "SELECT customer_mail_due_at, customer_mailed_at FROM orders_order "
        "WHERE order_id = ?",
        (order_id,),
    )
    return due is None and sent is not None


def place(stack, language: str, **simulate) -> str:
    with stack.client() as client:
        client.headers["Accept-Language"] = language
        return stack.place(client, **simulate)["order_id"]


def test_a_retried_order_sends_one_mail_in_the_language_it_was_placed_in(
    stack, mail_dir
):
    korean = place(stack, "ko-KR,ko;q=0.9", fail_times=2)
    english = place(stack, "en-US,en;q=0.9", fail_times=9)
    for order_id in (korean, english):
        stack.wait_for_terminal(order_id, timeout=60)
        wait_until(
            lambda order_id=order_id: mailed(stack, order_id),
            timeout=30,
            what=f"the mail of {order_id} sent",
        )

    (completed,) = mails_to(mail_dir, korean)
    (failed,) = mails_to(mail_dir, english)

    assert completed["To"] == "buyer@example.com"
    assert completed["Content-Language"] == "ko"
    assert completed["Subject"] == "주문이 완료되었습니다"
    text = completed.get_body(("plain",)).get_content()
    assert "주문이 완료되었습니다. 결제가 끝났고 상품도 확보해 두었습니다." in text
    assert f"{SITE}/orders/{korean}" in text
    html = completed.get_body(("html",)).get_content()
    assert f'href="{SITE}/orders/{korean}"' in html
    assert '<html lang="ko">' in html

    assert failed["Content-Language"] == "en"
    assert failed["Subject"] == "We couldn't complete your order"
    text = failed.get_body(("plain",)).get_content()
    assert "We couldn't reach the payment provider after 3 tries" in text
    assert "You can place the same order again." in text
    for message in (completed, failed):
        assert engineer_words(message.get_body(("plain",)).get_content()) == []
