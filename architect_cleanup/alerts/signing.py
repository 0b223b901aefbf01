"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A message is signed as ``base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>"))``
with the key the base64 text after ``whsec_`` in the secret; the header is ``webhook-signature:
v1,<signature>``. A receiver recomputes it, compares in constant time, and refuses a timestamp
more than a few minutes away from its clock and a ``webhook-id`` it has seen (replays).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"


class BadSecret(ValueError):
    """A webhook secret that is not ``whsec_`` followed by base64."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret."""
    if not secret.startswith(PREFIX):
        raise BadSecret("a webhook secret must start with whsec_ (then base64)")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise BadSecret("a webhook secret must be whsec_ followed by base64") from None
    if len(key) < 16:
        raise BadSecret("a webhook secret must hold at least 16 bytes (24 base64 characters)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}
