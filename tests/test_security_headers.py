"""Every response carries a Content-Security-Policy without inline script or
style, a Referrer-Policy and X-Content-Type-Options."""

import pytest


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *sources = part.split()
        parsed[name] = sources
    return parsed


@pytest.fixture
def pages(admin_client, place_order):
    order = place_order()
    return {
        "storefront": "/",
        "order page": f"/orders/{order.order_id}",
        "dashboard": "/dashboard/",
        "admin": "/admin/",
        "admin change list": "/admin/orders/order/",
        "admin change page": f"/admin/orders/order/{order.pk}/change/",
        "status document": f"/api/orders/{order.order_id}",
        "error": "/api/orders/ord_missing",
        "health": "/healthz",
        "API docs": "/api/docs",
        "API description": "/api/openapi.json",
    }


@pytest.mark.django_db
def test_every_page_has_a_policy_without_unsafe_inline_and_the_other_headers(
    admin_client, pages
):
    for name, path in pages.items():
        response = admin_client.get(path)
        assert response.status_code in {200, 404}, name

        policy = response["Content-Security-Policy"]
        assert "unsafe-inline" not in policy, name
        assert "unsafe-eval" not in policy, name
        parsed = directives(policy)
        assert parsed["default-src"] == ["'self'"], name
        assert parsed["script-src"] == ["'self'"], name
        assert parsed["style-src"] == ["'self'"], name
        assert parsed["object-src"] == ["'none'"], name
        assert parsed["frame-ancestors"] == ["'none'"], name
        assert response["Referrer-Policy"] == "same-origin", name
        assert response["X-Content-Type-Options"] == "nosniff", name


@pytest.mark.django_db
def test_the_pages_have_no_inline_script_style_or_event_handler(admin_client, pages):
    import re

    inline = re.compile(
        r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>"
        r"|<style|\sstyle=|\son[a-z]+=",
        re.I,
    )
    for name, path in pages.items():
        response = admin_client.get(path)
        if not response["Content-Type"].startswith("text/html"):
            continue
        found = inline.findall(response.content.decode())
        assert found == [], f"{name}: {found}"
