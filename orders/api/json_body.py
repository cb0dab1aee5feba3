"""Stage 1 of reading the body of POST /api/orders (orders/api/validation.py):
the bytes, read under limits checked before any parser runs (size, nesting
depth), and with hooks that refuse what Python's json module would otherwise
turn into a crash or a silent surprise: numbers past int's digit limit, NaN
and Infinity, duplicate keys, bytes that are not UTF-8, lone surrogates."""

import json
import re
from decimal import Decimal

from orders.api.shapes import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_NUMBER_CHARS
from orders.exceptions import OrderInputError


class _Refused(ValueError):
    """Raised from the json module's hooks; becomes a 400 invalid_json."""


def parse_json_body(body: bytes) -> object:
    if len(body) > MAX_BODY_BYTES:
        raise body_too_large()
    try:
        text = body.decode("utf-8")  # strict: encoded surrogates are refused too
    except UnicodeDecodeError as exc:
        reason = f"it is not UTF-8 ({exc.reason} at byte {exc.start})"
        raise invalid_json(reason) from None
    # RFC 8259 section 8.1: a parser MAY ignore a byte order mark.
    text = text.removeprefix("\ufeff")
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise invalid_json(f"it nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(
            text,
            object_pairs_hook=_object_without_duplicate_keys,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_refuse_constant,
        )
    except _Refused as exc:
        raise invalid_json(str(exc)) from None
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} (line {exc.lineno} column {exc.colno})"
        raise invalid_json(reason) from None
    try:
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_json("it contains a lone surrogate (\\ud800-\\udfff)") from None
    return payload


# A string (to its closing quote, or to the end when it has none) or a bracket.
# The optional closing quote matters: a pattern that required it would be tried
# again from every later quote of an unterminated string, quadratic in the body
# (60 KB of \" took 26 s); this one reads each character once.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[][{}]', re.DOTALL)


def _nesting_depth(text: str) -> int:
    """How deep arrays and objects nest, counted without parsing (json's C parser
    recurses once per level). Brackets inside strings do not count."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def _object_without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _Refused(f"the key {duplicate!r} appears twice in one object")
    return result


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number has more than {MAX_NUMBER_CHARS} characters")
    return int(literal)


def _float(literal: str) -> float | int:
    """A number written with a fraction or an exponent. One that is a whole
    number (2.0, 1e3) is that integer, as JSON Schema's `integer` (and so the
    document) counts it; the check is on the exact decimal, not the float."""
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number has more than {MAX_NUMBER_CHARS} characters")
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"the number {literal} is out of range")
    exact = Decimal(literal)
    if exact == exact.to_integral_value():
        return int(exact)
    return value


def _refuse_constant(name: str):
    raise _Refused(f"{name} is not JSON")


def invalid_json(reason: str) -> OrderInputError:
    return OrderInputError(
        "invalid_json", f"The request body is not valid JSON: {reason}."
    )


def body_too_large() -> OrderInputError:
    return OrderInputError(
        "body_too_large",
        f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.",
        http_status=413,
    )
