"""Amounts and times as the customer's language writes them: {% load customer %},
then {{ amount|money:currency }} and {{ iso_instant|when }}."""

from decimal import Decimal

from babel.numbers import format_currency
from django import template
from django.utils import formats, translation
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def money(amount, currency: str) -> str:
    """12.5, "USD" -> "$12.50" in English, "US$12.50" in Korean (CLDR's
    way, through Babel)."""
    locale = translation.to_locale(translation.get_language() or "en")
    return format_currency(Decimal(str(amount)), currency, locale=locale)


@register.filter
def when(value) -> str:
    """An instant (a datetime, or ISO 8601 text as the documents carry it) in
    the active language's date and time format; the pages' scripts rewrite it
    in the reader's time zone."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is None:
        return ""
    return formats.date_format(value, "DATETIME_FORMAT")
