"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Every request carries `webhook-id` (the same on every retry of one event), `webhook-timestamp`
(epoch seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` of
`"{id}.{timestamp}.{body}"`, keyed with the bytes the `whsec_<base64>` secret encodes. The
signature itself is computed by the spec's own library (`standardwebhooks`); this module adds the
strict secret check the gateway refuses to start without, and the events' message ids.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
# the spec's recommended key size: 24 to 64 bytes (192 to 512 bits)
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def parse_secret(text: str) -> bytes:
    """The key a `whsec_<base64>` secret encodes; ValueError saying what is wrong (never echoing
    the secret)."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError("must be whsec_ followed by base64 (e.g. whsec_$(openssl rand -base64 32))")
    raw = text[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64 after whsec_") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes of key, "
                         f"it encodes {len(key)}")
    return key


def message_id(event_type: str, call_sid: str, ref: str = "") -> str:
    """The `webhook-id` of an event: derived from what it is about, so an event created twice (a
    replayed batch) is one row and one message, and receivers can deduplicate on it."""
    digest = hashlib.sha256(f"{event_type}\0{call_sid}\0{ref}".encode()).digest()
    return "msg_" + base64.b32encode(digest[:20]).decode("ascii").lower()


class Signer:
    """Signs request bodies with one secret (checked with `parse_secret` first)."""

    def __init__(self, secret: str) -> None:
        parse_secret(secret)
        self._webhook = Webhook(secret)

    def headers(self, msg_id: str, body: str, at: float) -> dict[str, str]:
        """The three Standard Webhooks headers for one attempt at epoch time `at`."""
        timestamp = int(at)
        signature = self._webhook.sign(msg_id, datetime.fromtimestamp(timestamp, timezone.utc), body)
        return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
