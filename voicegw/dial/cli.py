"""`voicegw dial`: have the gateway call a number, or every number of a CSV file.

    voicegw dial --to +15551230001 --from +15559870000 [--agent NAME] [--context name=Ada ...]
    voicegw dial --csv numbers.csv --from +15559870000 --concurrency 5 [--state FILE] [--out results.csv]

Both go through the gateway's operator API (`POST /api/calls`, then `GET /api/calls/{sid}` to
follow a campaign's calls), with the operator token from --token or VOICEGW_OPERATOR_TOKEN.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from voicegw.dial.campaign import Campaign, CampaignError, CampaignOptions, ResultWriter, StateFile, read_targets
from voicegw.dial.client import DialRefused, GatewayClient
from voicegw.telephony.grants import CONTEXT_KEY


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "dial", help="place outbound calls through the gateway (one number, or a CSV campaign)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--to", help="the number to call, E.164 (+15551234567)")
    what.add_argument("--csv", type=Path, help="a campaign: CSV with a 'to' column, optionally 'agent'; "
                                               "other columns become the call's context")
    p.add_argument("--from", dest="from_number", required=True,
                   help="the caller ID: a Twilio number of the account (its agent takes the call unless --agent)")
    p.add_argument("--agent", help="the agent that talks: its name, or its file relative to the routing file")
    p.add_argument("--context", action="append", default=[], metavar="NAME=VALUE",
                   help="fills {{NAME}} in the agent's instructions, greeting and voicemail message (repeatable); "
                        "with --csv it applies to every row, the row's columns win")
    p.add_argument("--no-machine-detection", dest="machine_detection", action="store_false",
                   help="greet as soon as the call is answered (default: wait for Twilio's answering-machine "
                        "verdict and apply the agent's voicemail: policy to machines)")
    p.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('VOICEGW_PORT') or 8080}",
                   help="gateway base URL (default: %(default)s)")
    p.add_argument("--token", default=os.environ.get("VOICEGW_OPERATOR_TOKEN") or None,
                   help="operator token (default: $VOICEGW_OPERATOR_TOKEN)")
    p.add_argument("--timeout", type=float, default=20.0, help="per-request timeout in seconds (default: 20)")
    c = p.add_argument_group("campaign (--csv)")
    c.add_argument("--concurrency", type=int, default=5, help="calls in flight at once (default: 5)")
    c.add_argument("--cps", type=float, default=1.0,
                   help="calls placed per second, retries included; Twilio queues an account's calls beyond "
                        "its limit, 1 a second unless raised (default: 1; 0: no limit)")
    c.add_argument("--until", choices=["ended", "created"], default="ended",
                   help="a call is in flight until its call record says it ended (default), or only until "
                        "Twilio accepted it (created)")
    c.add_argument("--state", type=Path,
                   help="progress file, rewritten atomically; re-running skips the numbers it lists as done "
                        "(default: the CSV's name + .state.json)")
    c.add_argument("--out", type=Path,
                   help="append one result per number to this file: CSV rows if it ends in .csv, else JSON "
                        "lines (default: JSON lines on stdout)")
    c.add_argument("--retry-failed", action="store_true", help="dial the numbers that failed in an earlier run again")
    c.add_argument("--answer-timeout", type=float, default=120.0,
                   help="seconds after which a call the gateway never heard of counts as not answered (default: 120)")
    c.add_argument("--call-timeout", type=float, default=3600.0,
                   help="stop watching a call after this many seconds (default: 3600)")
    return p


def _context(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not CONTEXT_KEY.match(name):
            raise ValueError(f"--context {pair!r}: expected NAME=VALUE, NAME of letters, digits and _")
        out[name] = value
    return out


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_sync(args: argparse.Namespace) -> int:
    """`voicegw dial`; Ctrl-C stops a campaign between steps (its state file is always current)."""
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to go on where it stopped", file=sys.stderr)
        return 130


async def run(args: argparse.Namespace) -> int:
    try:
        context = _context(args.context)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.csv is None:
        return await _dial_one(args, context)
    if args.cps < 0:
        print("error: --cps must be 0 (no limit) or more", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    return await _campaign(args, context)


async def _dial_one(args: argparse.Namespace, context: dict[str, str]) -> int:
    async with GatewayClient(args.url, args.token, args.timeout) as client:
        try:
            placed = await client.place(args.to, args.from_number, agent=args.agent, context=context,
                                        machine_detection=args.machine_detection)
        except DialRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if placed.missing_context:
        print(f"warning: the context lacks {', '.join(placed.missing_context)} (left empty)", file=sys.stderr)
    print(placed.call_sid)
    return 0


async def _campaign(args: argparse.Namespace, context: dict[str, str]) -> int:
    try:
        targets = [replace(t, agent=t.agent or args.agent, context={**context, **t.context})
                   for t in read_targets(args.csv)]
        state = StateFile(args.state or args.csv.with_name(args.csv.name + ".state.json"))
    except CampaignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = CampaignOptions(from_=args.from_number, concurrency=args.concurrency, cps=args.cps, until=args.until,
                              machine_detection=args.machine_detection, answer_timeout_s=args.answer_timeout,
                              call_timeout_s=args.call_timeout, retry_failed=args.retry_failed)
    with contextlib.ExitStack() as stack:
        out: TextIO = sys.stdout
        if args.out is not None:
            out = stack.enter_context(args.out.open("a", newline="", encoding="utf-8"))
        writer = ResultWriter(out, csv_rows=args.out is not None and args.out.suffix.lower() == ".csv")
        async with GatewayClient(args.url, args.token, args.timeout) as client:
            counts = await Campaign(client, targets, state, options, writer, _progress).run()
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to do"
    _progress(f"done: {summary}; state in {state.path}")
    return 1 if counts.get("failed") else 0
