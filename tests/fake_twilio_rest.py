"""A fake of the Twilio REST API as a twilio SDK HttpClient: records requests, answers like Twilio.

Only the resources voicegw uses: Calls create and update, IncomingPhoneNumbers list and update.
A created call is recorded with every form field Twilio got (Url or Twiml, MachineDetection,
AsyncAmd, AsyncAmdStatusCallback, ...) under `created`, in order; nothing is dialed.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twilio.http import HttpClient
from twilio.http.response import Response

API = "https://api.twilio.com/2010-04-01"
_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Calls\.json$")
_CALL = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/Calls/(CA\w+)\.json$")
_NUMBERS = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/IncomingPhoneNumbers\.json$")
_NUMBER = re.compile(r"^/2010-04-01/Accounts/(AC\w+)/IncomingPhoneNumbers/(PN\w+)\.json$")


@dataclass
class Recorded:
    method: str
    url: str
    params: dict[str, Any]
    data: dict[str, Any]
    auth: tuple[str, str] | None


@dataclass
class FakeTwilioRest(HttpClient):
    account_sid: str
    auth_token: str
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)  # form fields of each Calls create
    refuse_create: tuple[int, int, str] | None = None  # (status, code, message) to answer a create with
    # called with each created call's fields (from the SDK's worker thread): a test playing Twilio
    # hands it to its event loop to have the call answered
    on_create: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        HttpClient.__init__(self, logging.getLogger("fake_twilio_rest"), False, 5)

    def add_call(self, call_sid: str, status: str = "in-progress") -> None:
        self.calls[call_sid] = {"sid": call_sid, "account_sid": self.account_sid, "status": status}

    def add_number(self, sid: str, phone_number: str) -> None:
        self.numbers[sid] = {"sid": sid, "account_sid": self.account_sid, "phone_number": phone_number,
                             "voice_url": "", "voice_method": "POST"}

    def request(self, method: str, uri: str, params: dict[str, object] | None = None,
                data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        self.requests.append(Recorded(method, uri, dict(params or {}), dict(data or {}), auth))
        if auth != (self.account_sid, self.auth_token):
            return self._error(401, 20003, "Authenticate")
        if not uri.startswith(API):
            return self._error(404, 20404, "The requested resource was not found")
        path = uri[len("https://api.twilio.com"):]
        if _CALLS.match(path) and method == "POST":
            return self._create_call(data or {})
        if (m := _CALL.match(path)) and method == "POST":
            return self._update(self.calls, m.group(2), data or {}, {"Status": "status", "Twiml": "twiml"})
        if (m := _NUMBERS.match(path)) and method == "GET":
            return self._list_numbers(params or {})
        if (m := _NUMBER.match(path)) and method == "POST":
            return self._update(self.numbers, m.group(2), data or {},
                                {"VoiceUrl": "voice_url", "VoiceMethod": "voice_method"})
        return self._error(404, 20404, "The requested resource was not found")

    def _create_call(self, data: dict[str, object]) -> Response:
        if self.refuse_create is not None:
            return self._error(*self.refuse_create)
        missing = [name for name in ("To", "From") if not data.get(name)]
        if missing:
            return self._error(400, 21201, f"Missing required parameter {missing[0]}")
        if ("Url" in data) == ("Twiml" in data) and "ApplicationSid" not in data:
            return self._error(400, 21205, "Either Url, Twiml or ApplicationSid is required")
        sid = "CA" + secrets.token_hex(16)
        self.created.append({"Sid": sid, **data})
        if self.on_create is not None:
            self.on_create(self.created[-1])
        row = {"sid": sid, "account_sid": self.account_sid, "status": "queued", "to": data["To"],
               "from": data["From"], "direction": "outbound-api"}
        self.calls[sid] = row
        return Response(201, json.dumps(row))

    def _update(self, table: dict[str, dict[str, Any]], sid: str, data: dict[str, object],
                fields: dict[str, str]) -> Response:
        row = table.get(sid)
        if row is None:
            return self._error(404, 20404, f"The requested resource {sid} was not found")
        for form_name, key in fields.items():
            if form_name in data:
                row[key] = data[form_name]
        return Response(200, json.dumps(row))

    def _list_numbers(self, params: dict[str, object]) -> Response:
        wanted = re.sub(r"\D", "", str(params.get("PhoneNumber", "")))
        rows = [n for n in self.numbers.values() if wanted in re.sub(r"\D", "", n["phone_number"])]
        size = int(str(params.get("PageSize", 50)))
        body = {"incoming_phone_numbers": rows[:size], "page": 0, "page_size": size,
                "next_page_uri": None, "uri": "/2010-04-01/Accounts/x/IncomingPhoneNumbers.json"}
        return Response(200, json.dumps(body))

    @staticmethod
    def _error(status: int, code: int, message: str) -> Response:
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status}
        return Response(status, json.dumps(body))
