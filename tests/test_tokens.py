"""Stream tokens name the process that owns the call's pre-warmed model session, under the MAC."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from voicegw.telephony.tokens import StreamTokenError, mint_stream_token, verify_stream_token

SECRET = b"k" * 32
CALL = "CA" + "a" * 32
OWNER = "http://10.0.0.7:8080|w1.3f9a"


def test_the_owner_travels_in_the_token_and_comes_back_verified() -> None:
    tok = mint_stream_token(SECRET, CALL, 60, now=1000.0, owner=OWNER)
    assert verify_stream_token(SECRET, tok, CALL, now=1001.0) == OWNER
    assert verify_stream_token(SECRET, mint_stream_token(SECRET, CALL, 60, now=1000.0), CALL, 1001.0) == ""


def test_a_changed_owner_is_a_forged_token() -> None:
    tok = mint_stream_token(SECRET, CALL, 60, now=1000.0, owner=OWNER)
    version, expiry, _owner, mac = tok.split(".")
    evil = base64.urlsafe_b64encode(b"http://169.254.169.254|w1").rstrip(b"=").decode()
    with pytest.raises(StreamTokenError, match="invalid"):
        verify_stream_token(SECRET, ".".join([version, expiry, evil, mac]), CALL, now=1001.0)


def test_tokens_of_the_previous_version_are_still_accepted_during_an_upgrade() -> None:
    expiry = 1060
    mac = base64.urlsafe_b64encode(hmac.new(SECRET, f"v1.{CALL}.{expiry}".encode(), hashlib.sha256).digest())
    tok = f"v1.{expiry}.{mac.rstrip(b'=').decode()}"
    assert verify_stream_token(SECRET, tok, CALL, now=1001.0) == ""
    with pytest.raises(StreamTokenError, match="invalid"):
        verify_stream_token(SECRET, tok, "CA" + "b" * 32, now=1001.0)
