"""The shape of each input the API takes, defined once: the validation enforces
these (orders/api/validation.py, the streams' opening) and the OpenAPI document
states them (orders/api/openapi.py), so nothing the document allows is refused
for its shape and nothing it forbids is accepted (tests/test_api_shapes.py
walks both side by side).

The regular expressions mean the same to the three engines that read them:
Python's re, pydantic's Rust regex and ECMA-262, the document's dialect. So
each is anchored at both ends, uses no lookaround (Rust has none) and no \\s,
\\d or \\w (each engine has its own white space and digits): characters are
named as ranges of \\xNN.
"""

import re

# The input limits (docs/users/api.md, "Input limits"): each is checked before
# the step that a bigger input could hurt.
MAX_JSON_DEPTH = 8  # a valid order nests 3 deep
MAX_NUMBER_CHARS = 20  # characters of one JSON number literal
MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_SKU_LENGTH = 64
MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64  # RFC 5321 4.5.3.1.1, and the document's format: email
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_FAIL_TIMES = 100
# The most any server accepts; each accepts at most half of what an attempt may
# run there (validation.delay_limit_ms).
MAX_DELAY_MS = 60_000
# A resume id is a non-negative integer; anything longer is not an id of ours.
MAX_EVENT_ID_DIGITS = 18
# Room for any valid order however it is written: the largest one, every
# character escaped as \uXXXX and pretty-printed, takes about 90 KB
# (tests/test_api_shapes.py), so no body the document allows is a 413.
MAX_BODY_BYTES = 128 * 1024

# Greater than 0, below 1,000,000, at most 2 decimal places, no leading zero:
# "12.50", "0.99", "7". Written so that 0 ("0", "0.0", "0.00") never matches,
# which is why there is no "greater than 0" check beside it.
PRICE_PATTERN = r"^(?:[1-9][0-9]{0,5}(?:\.[0-9]{1,2})?|0\.(?:0[1-9]|[1-9][0-9]?))$"
# A dot-atom address at a domain name (RFC 5321's common form): no quoted local
# part, no address literal, ASCII only. The local part's 64 characters are
# checked beside it (no engine-neutral pattern can count them).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}$"
# No control character (NUL among them, which PostgreSQL refuses in text), and
# no space at either end: what is sent is what is stored.
_SKU_END = r"[^\x00-\x20\x7f-\x9f]"
SKU_PATTERN = rf"^{_SKU_END}(?:[^\x00-\x1f\x7f-\x9f]*{_SKU_END})?$"
# Printable Latin-1 (what an HTTP header carries) without a space at either end
# (HTTP drops it): U+00A0 and U+00AD are not printable.
_KEY_END = r"[!-~\xa1-\xac\xae-\xff]"
_KEY_MIDDLE = r"[ -~\xa1-\xac\xae-\xff]"
IDEMPOTENCY_KEY_PATTERN = (
    rf"^{_KEY_END}(?:{_KEY_MIDDLE}{{0,{MAX_IDEMPOTENCY_KEY_LENGTH - 2}}}{_KEY_END})?$"
)
# Empty is no id, as if none were sent.
LAST_EVENT_ID_PATTERN = rf"^[0-9]{{0,{MAX_EVENT_ID_DIGITS}}}$"


def matches(pattern: str, value: str) -> bool:
    """Whether the whole of `value` has the shape (a fullmatch: Python's `$`
    alone would also match before a final newline, ECMA-262's does not)."""
    return re.fullmatch(pattern, value) is not None
