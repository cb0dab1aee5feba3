"""English and Korean on the customer side: every string marked for
translation has its Korean (locale/ko/LC_MESSAGES/django.po), no customer
page or mail shows an English word in Korean (a string not marked), the
language comes from the switch or Accept-Language, and an order keeps the one
it was placed in."""

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract
from babel.messages.pofile import read_po
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.utils import translation
from django.utils.translation.template import templatize

from orders.catalogs import catalogs, compile_catalog, compiled, is_stale
from orders.checks import translations_compiled
from orders.live.opening import stream_language
from orders.models import Order
from orders.services import customer_mail
from tests.factories import process, process_until_terminal

ROOT = Path(settings.BASE_DIR)
KOREAN = ROOT / "locale" / "ko" / "LC_MESSAGES" / "django.po"
# Django's translation functions, as Babel's extractor names their arguments.
KEYWORDS = {
    "gettext": None,
    "gettext_lazy": None,
    "gettext_noop": None,
    "ngettext": (1, 2),
    "ngettext_lazy": (1, 2),
    "pgettext": ((1, "c"), 2),
    "pgettext_lazy": ((1, "c"), 2),
    "npgettext": ((1, "c"), 2, 3),
    "npgettext_lazy": ((1, "c"), 2, 3),
    "_": None,
}
# What Korean pages may show in Latin letters: names, codes and units.
LATIN_ALLOWED = {"orderproj", "English", "JavaScript", "US", "UTC", "ms"}


def marked_strings() -> set[tuple[str | None, str]]:
    """(context, msgid) of every string marked for translation in the
    project's Python and templates, found as `makemessages` finds them
    (templates through Django's templatize), in pure Python."""
    found = set()
    sources = [
        *(("python", path.read_bytes()) for path in (ROOT / "orders").rglob("*.py")),
        *(
            ("python", templatize(path.read_text()).encode())
            for path in (ROOT / "templates").rglob("*")
            if path.suffix in {".html", ".txt"}
        ),
    ]
    for method, source in sources:
        for _line, message, _comments, context in extract(
            method, io.BytesIO(source), keywords=KEYWORDS
        ):
            msgid = message[0] if isinstance(message, tuple) else message
            if msgid:
                found.add((context, msgid))
    return found


def korean_catalog():
    with KOREAN.open("rb") as source:
        return read_po(source, locale="ko")


def test_every_marked_string_has_a_korean_translation_and_none_is_stale():
    catalog = korean_catalog()
    translated = {
        (message.context, message.id[0] if message.pluralizable else message.id)
        for message in catalog
        if message.id
        and not message.fuzzy
        and all(message.string if message.pluralizable else [message.string])
    }
    in_catalog = {
        (message.context, message.id[0] if message.pluralizable else message.id)
        for message in catalog
        if message.id
    }
    marked = marked_strings()
    assert sorted(marked - translated, key=str) == [], (
        "marked for translation with no Korean in locale/ko/LC_MESSAGES/django.po "
        "(docs/developers/translations.md)"
    )
    assert sorted(in_catalog - marked, key=str) == [], "in the catalog, used nowhere"


class VisibleText(HTMLParser):
    """What a person reads of a page: its text, the labels in attributes, and
    the sentences its scripts write (the page's script-texts JSON)."""

    ATTRIBUTES = {"aria-label", "title", "placeholder", "alt"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in {"script", "style"}:
            self._script = attrs.get("id") or tag
        self.parts += [v for k, v in attrs.items() if k in self.ATTRIBUTES and v]

    def handle_endtag(self, tag):
        if tag in {"script", "style"}:
            self._script = None

    def handle_data(self, data):
        if self._script is None:
            self.parts.append(data)
        elif self._script == "script-texts":
            self.parts += strings_in(json.loads(data))


def strings_in(value) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    return [value] if isinstance(value, str) else []


def english_words(text: str, *known: str) -> list[str]:
    """Latin words in `text`, leaving out the order's own values (its id,
    email, product codes) and LATIN_ALLOWED."""
    for value in known:
        text = text.replace(value, " ")
    # A script's placeholder (%(seconds)s) is filled with a number; a link is
    # no prose.
    text = re.sub(r"%\(\w+\)s|https?://\S+", " ", text)
    return [
        word for word in re.findall(r"[A-Za-z]{2,}", text) if word not in LATIN_ALLOWED
    ]


def read_in_korean(client, url: str, *known: str) -> list[str]:
    response = client.get(url, HTTP_ACCEPT_LANGUAGE="ko")
    assert response.status_code == 200
    assert response["Content-Language"] == "ko"
    parser = VisibleText()
    parser.feed(response.content.decode())
    return english_words("\n".join(parser.parts), *known)


@pytest.mark.django_db
def test_the_storefront_in_korean_shows_no_english_word(client, settings):
    settings.ORDER_SIMULATION_ENABLED = True
    assert read_in_korean(client, "/", "buyer@example.com", "MUG-1") == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "plan",
    [
        None,  # PENDING
        {"fail_times": 1},  # RETRYING
        {"fail_times": 9},  # FAILED after every attempt
        {"failure": "permanent", "step": "stock"},  # FAILED, paid
    ],
    ids=["pending", "retrying", "failed", "failed-after-payment"],
)
def test_the_order_page_in_korean_shows_no_english_word(
    client, place_order, immediate_retries, plan
):
    order = place_order(simulate=plan) if plan else place_order()
    if plan:
        order = process(order.order_id)
    if plan and plan.get("fail_times") == 9:
        order = process_until_terminal(order)
    known = (order.order_id, order.customer_email, "MUG-1")
    assert read_in_korean(client, f"/orders/{order.order_id}", *known) == []


@pytest.mark.django_db
@pytest.mark.parametrize("plan", [{}, {"fail_times": 9}], ids=["completed", "failed"])
def test_an_order_placed_in_korean_gets_its_mail_in_korean(
    client, immediate_retries, plan, settings
):
    settings.ORDER_SIMULATION_ENABLED = True
    body = {
        "customer_email": "buyer@example.com",
        "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
    }
    if plan:
        body["simulate"] = plan
    placed = client.post(
        "/api/orders",
        body,
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9,en;q=0.5",
    ).json()
    order = process_until_terminal(Order.objects.get(order_id=placed["order_id"]))
    assert order.language == "ko"

    # Read in English meanwhile: the mail keeps the order's language.
    with translation.override("en"):
        message = customer_mail.order_outcome_mail(order=order)

    assert message.extra_headers["Content-Language"] == "ko"
    known = (order.order_id, "buyer@example.com", "MUG-1")
    assert english_words(message.subject + message.body, *known) == []
    html = VisibleText()
    html.feed(message.alternatives[0][0])
    assert english_words("\n".join(html.parts), *known) == []
    message.send()
    assert mail.outbox[0].to == ["buyer@example.com"]


@pytest.mark.django_db
def test_accept_language_chooses_the_pages_language(client):
    korean = client.get("/", HTTP_ACCEPT_LANGUAGE="ko-KR,ko;q=0.9").content.decode()
    english = client.get("/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()

    assert '<html lang="ko">' in korean and "주문하기" in korean
    assert '<html lang="en">' in english and "Place an order" in english


@pytest.mark.django_db
def test_the_language_switch_keeps_the_choice_over_accept_language(client):
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'name="language" value="ko"' in page

    switched = client.post(
        "/i18n/setlang/", {"language": "ko", "next": "/"}, HTTP_ACCEPT_LANGUAGE="en"
    )

    assert switched.status_code == 302 and switched["Location"] == "/"
    again = client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="ko">' in again


@pytest.mark.django_db
def test_the_status_document_speaks_the_readers_language_under_its_own_etag(
    client, place_order, immediate_retries
):
    order = process_until_terminal(place_order(simulate={"fail_times": 9}))
    url = f"/api/orders/{order.order_id}"

    english = client.get(url, HTTP_ACCEPT_LANGUAGE="en")
    korean = client.get(url, HTTP_ACCEPT_LANGUAGE="ko")

    assert korean.json()["failure_reason"] == (
        "결제 대행사에 3번 시도했지만 연결되지 않아 주문을 완료하지 못했습니다. "
        "요금은 청구되지 않았습니다."
    )
    assert english.json()["failure_reason"].startswith("We couldn't reach")
    assert english["ETag"] != korean["ETag"]
    stale = client.get(
        url, HTTP_ACCEPT_LANGUAGE="ko", HTTP_IF_NONE_MATCH=english["ETag"]
    )
    assert stale.status_code == 200


def test_a_stream_speaks_the_language_of_the_readers_pages():
    def scope(*headers):
        return {"headers": [(name.encode(), value.encode()) for name, value in headers]}

    assert stream_language(scope(("accept-language", "ko-KR,ko;q=0.9"))) == "ko"
    assert stream_language(scope(("accept-language", "fr-FR"))) == "en"
    switched = scope(("accept-language", "ko"), ("cookie", "django_language=en"))
    assert stream_language(switched) == "en"


def test_compilemessages_compiles_in_pure_python_when_stale(tmp_path, settings):
    po = tmp_path / "ko" / "LC_MESSAGES" / "django.po"
    po.parent.mkdir(parents=True)
    po.write_bytes(KOREAN.read_bytes())
    settings.LOCALE_PATHS = [tmp_path]
    assert is_stale(po)
    assert [w.id for w in translations_compiled(None)] == ["orders.W002"]

    call_command("compilemessages", "--if-stale", verbosity=0)

    assert not is_stale(po)
    assert translations_compiled(None) == []
    assert catalogs([tmp_path]) == [po]
    assert compiled(po).read_bytes() == compile_catalog(KOREAN).read_bytes()
