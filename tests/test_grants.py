"""Outbound grants: what an outbound call's webhook URLs carry, signed, stateless, bounded."""
from __future__ import annotations

import base64
import json

import pytest

from voicegw.telephony.grants import (
    GRANT_TTL_S,
    MAX_CONTEXT_BYTES,
    GrantError,
    check_context,
    mint_grant,
    new_grant,
    verify_grant,
)

SECRET = b"s" * 32
OWNER = "http://10.0.0.7:8080|w1.3f9a"


def test_a_grant_comes_back_with_agent_context_flag_and_owner() -> None:
    grant = new_grant("voice", 1000.0, OWNER, "sales.yaml", {"customer_name": "Ada Lovelace"}, await_answer=True)
    token = mint_grant(SECRET, grant)
    assert verify_grant(SECRET, token, "voice", now=1000.0 + GRANT_TTL_S - 1) == grant
    bare = new_grant("amd", 1000.0, OWNER)
    assert verify_grant(SECRET, mint_grant(SECRET, bare), "amd", now=1001.0) == bare


def test_an_altered_grant_is_refused_whatever_part_changed() -> None:
    token = mint_grant(SECRET, new_grant("voice", 1000.0, OWNER, "sales.yaml"))
    version, part, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    body["o"] = "http://169.254.169.254|w1"
    evil = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(GrantError, match="invalid"):
        verify_grant(SECRET, f"{version}.{evil}.{mac}", "voice", now=1001.0)
    with pytest.raises(GrantError, match="invalid"):
        verify_grant(b"other" * 8, token, "voice", now=1001.0)
    for bad in (None, "", "o1.x", token + "x", "v2.1.2.3"):
        with pytest.raises(GrantError):
            verify_grant(SECRET, bad, "voice", now=1001.0)


def test_a_grant_is_for_one_url_and_expires() -> None:
    token = mint_grant(SECRET, new_grant("amd", 1000.0, OWNER))
    with pytest.raises(GrantError, match="not voice"):
        verify_grant(SECRET, token, "voice", now=1001.0)
    with pytest.raises(GrantError, match="expired"):
        verify_grant(SECRET, token, "amd", now=1000.0 + GRANT_TTL_S + 1)


@pytest.mark.parametrize("context, why", [
    ([("a", "b")], "must be an object"),
    ({"1st": "x"}, "letters, digits"),
    ({"name with space": "x"}, "letters, digits"),
    ({"n": 5}, "must be a string"),
    ({"n": "é" * MAX_CONTEXT_BYTES}, "bytes of JSON"),
])
def test_context_is_names_to_short_strings(context: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_context(context)


def test_the_largest_context_still_fits_in_a_url() -> None:
    context = {f"k{i}": "x" * 90 for i in range(20)}
    assert len(json.dumps(context, separators=(",", ":"))) <= MAX_CONTEXT_BYTES
    token = mint_grant(SECRET, new_grant("voice", 1000.0, OWNER, "a" * 200, context, True))
    assert verify_grant(SECRET, token, "voice", 1001.0).context == context
