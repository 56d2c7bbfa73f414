"""Read the TwiML a voice webhook answered, the way Twilio does for <Connect><Stream>."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


class SimCallError(Exception):
    """The simulated call could not go on; the message says which step failed and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamTarget:
    url: str
    parameters: dict[str, str] = field(default_factory=dict)


def parse_stream_twiml(xml: str) -> StreamTarget:
    """The <Connect><Stream url> and its <Parameter>s, or SimCallError saying what came instead."""
    try:
        root = ET.fromstring(xml.strip())
    except ET.ParseError as exc:
        raise SimCallError(f"webhook did not answer TwiML ({exc}): {xml[:200]!r}") from None
    if root.tag != "Response":
        raise SimCallError(f"TwiML root is <{root.tag}>, expected <Response>")
    stream = root.find("Connect/Stream")
    if stream is None:
        verbs = ", ".join(f"<{child.tag}>" for child in root) or "nothing"
        raise SimCallError(f"TwiML has no <Connect><Stream> (it has {verbs})")
    url = stream.get("url", "")
    if not url.startswith(("ws://", "wss://")):
        raise SimCallError(f"<Stream url> must be a ws:// or wss:// URL, got {url!r}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return StreamTarget(url, params)
