"""The Standard Webhooks signer (orders/outbound.py), checked against the
`standardwebhooks` library that receivers verify with."""

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from orders.outbound import new_secret, signature, signed_headers

BODY = json.dumps({"type": "order.completed", "data": {"order_id": "ord_1"}}).encode()


def test_a_new_secret_is_whsec_and_base64_of_24_random_bytes():
    secret = new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret


def test_signed_headers_verify_with_the_standardwebhooks_library():
    secret = new_secret()
    headers = signed_headers(
        secrets=[secret], msg_id="msg_abc", timestamp=int(time.time()), body=BODY
    )

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-id"] == "msg_abc"


def test_the_signature_matches_the_librarys_own():
    secret = new_secret()
    now = int(time.time())

    ours = signature(secrets=[secret], msg_id="msg_1", timestamp=now, body=BODY)

    theirs = Webhook(secret).sign(
        "msg_1", datetime.fromtimestamp(now, UTC), BODY.decode()
    )
    assert ours == theirs


def test_during_a_rotation_either_secret_verifies():
    old, new = new_secret(), new_secret()
    headers = signed_headers(
        secrets=[new, old], msg_id="msg_2", timestamp=int(time.time()), body=BODY
    )

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)


def test_another_secret_or_a_changed_body_does_not_verify():
    secret = new_secret()
    headers = signed_headers(
        secrets=[secret], msg_id="msg_3", timestamp=int(time.time()), body=BODY
    )

    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
