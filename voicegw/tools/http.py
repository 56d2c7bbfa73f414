"""The `http` tool handler: one templated request per tool call, safely.

Every attempt is bounded in time, retries (with backoff) are only made for idempotent methods, the
host policy is checked before every request including each redirect hop, and the response is read
only up to `max_bytes`. A fresh client per call keeps calls isolated from each other and from the
event loop they were configured in.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from voicegw.tools.contract import ToolContext
from voicegw.tools import templates
from voicegw.tools.base import HandlerInfo, HandlerResult, ToolError
from voicegw.tools.hosts import HostPolicy, HostRefused
from voicegw.tools.paths import Segment, select
from voicegw.tools.schema import HttpSpec

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
RETRY_STATUS = frozenset({429, 502, 503, 504})
BACKOFF_BASE = 0.2  # seconds; doubles per attempt
ERROR_DETAIL_CHARS = 300


@dataclass(frozen=True)
class _Reply:
    status: int
    reason: str
    content_type: str
    body: bytes


@dataclass
class HttpHandler:
    spec: HttpSpec
    selection: tuple[Segment, ...] | None
    policy: HostPolicy
    timeout: float  # per attempt
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)

    @property
    def info(self) -> HandlerInfo:
        host = urlsplit(self.spec.url).hostname or ""
        return HandlerInfo("http", f"{self.spec.method} {host}", (host,))

    async def __call__(self, ctx: ToolContext, args: dict[str, Any]) -> HandlerResult:
        url = templates.render(self.spec.url, args, templates.url_quote)
        headers = {k: _header(k, templates.render(v, args)) for k, v in self.spec.headers.items()}
        params = {
            k: templates.render(v, args)
            for k, v in self.spec.query.items()
            if not _only_missing(v, args)
        }
        content: bytes | None = None
        if self.spec.body is not None:
            payload = args if self.spec.body == "arguments" else templates.render_value(self.spec.body, args)
            content = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Accept", "application/json")
        reply = await self._with_retries(url, headers, params, content)
        if reply.status >= 400:
            detail = reply.body[:ERROR_DETAIL_CHARS].decode("utf-8", "replace")
            raise ToolError(f"HTTP {reply.status} {reply.reason}".strip(), status=reply.status, detail=detail)
        return HandlerResult(self._result(reply))

    async def _with_retries(
        self, url: str, headers: dict[str, str], params: dict[str, str], content: bytes | None
    ) -> _Reply:
        attempts = 1 + self.spec.retries
        async with httpx.AsyncClient(
            transport=self.transport, follow_redirects=False, timeout=self.timeout, trust_env=False
        ) as client:
            for attempt in range(attempts):
                last = attempt + 1 == attempts
                try:
                    reply = await asyncio.wait_for(
                        self._send(client, url, headers, params, content), self.timeout
                    )
                except (TimeoutError, httpx.TransportError) as exc:
                    if last:
                        raise ToolError(f"request failed: {_describe(exc)}") from None
                else:
                    if last or reply.status not in RETRY_STATUS and reply.status < 500:
                        return reply
                await asyncio.sleep(BACKOFF_BASE * 2**attempt)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        params: dict[str, str] | None,
        content: bytes | None,
    ) -> _Reply:
        origin = urlsplit(url).hostname or ""
        method = self.spec.method
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host.lower() != origin.lower():
                raise HostRefused("the server redirected to another host; refusing to follow")
            await self.policy.check(host, parts.port or (443 if parts.scheme == "https" else 80), self.timeout)
            request = client.build_request(method, url, headers=headers, params=params, content=content)
            response = await client.send(request, stream=True)
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    url = urljoin(str(request.url), response.headers["location"])
                    params = None  # the Location already carries its own query
                    if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                        method, content = "GET", None
                    continue
                body = await self._read_capped(response)
                return _Reply(response.status_code, response.reason_phrase, response.headers.get("content-type", ""), body)
            finally:
                await response.aclose()
        raise ToolError(f"too many redirects (more than {MAX_REDIRECTS})")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.spec.max_bytes:
                raise ToolError(f"the response is larger than {self.spec.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _result(self, reply: _Reply) -> Any:
        text = reply.body.decode("utf-8", "replace")
        data: Any
        if not text.strip():
            data = {"status": reply.status}
        else:
            try:
                data = json.loads(text)
            except ValueError:
                if "json" in reply.content_type:
                    raise ToolError("the service returned malformed JSON") from None
                data = text
        if self.selection is None:
            return data
        found, value = select(data, self.selection)
        if not found:
            raise ToolError(f"the response has no {self.spec.select!r}")
        return value


def _only_missing(template: str, args: dict[str, Any]) -> bool:
    names = templates.arg_names(template)
    return bool(names) and all(args.get(n) is None for n in names)


def _header(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ToolError(f"argument for header {name!r} contains a line break")
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    return type(exc).__name__
