"""`voicegw serve | call | dial | check-config | calls ... | localmodel | twilio attach`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from voicegw import __version__, logs
from voicegw.config import Settings
from voicegw.yamlsrc import ConfigError


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    overrides: dict[str, object] = dict(extra)
    for name in ("host", "port"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if getattr(args, "agent", None):
        overrides["agent_path"] = Path(args.agent)
    if getattr(args, "routing", None):
        overrides["routing_path"] = Path(args.routing)
    if getattr(args, "dev", False):
        overrides["dev_mode"] = True
    return Settings.from_env(os.environ, **overrides)


def _cmd_serve(args: argparse.Namespace) -> int:
    from voicegw import server

    settings = _settings(args)
    from voicegw.tools.routing import AgentRegistry

    AgentRegistry.load(settings)  # validate before anything listens: errors name file:line:field
    workers = args.workers if args.workers is not None else settings.workers
    if workers < 1:
        raise ConfigError("command line", None, "--workers", f"must be at least 1, got {workers}")
    if workers > 1:
        from voicegw.workers import run_workers

        return run_workers(settings, workers, log_level=args.log_level, log_format=getattr(args, "log_format", None))
    logging.getLogger("voicegw").info("voicegw listening on http://%s:%d", settings.host, settings.port)
    server.run(settings, log_level=args.log_level)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from voicegw.tools.check import check_config

    return check_config(Path(args.file), Settings.from_env(os.environ))


def _cmd_localmodel(args: argparse.Namespace) -> int:
    from voicegw.localmodel.server import serve

    try:
        asyncio.run(serve(args.host, args.port, args.api_key or os.environ.get("VOICEGW_LOCALMODEL_KEY") or None))
    except KeyboardInterrupt:
        pass
    return 0


def _cmd_attach(args: argparse.Namespace) -> int:
    from voicegw.telephony.rest import attach_command

    return attach_command(args.number, Settings.from_env(os.environ))


def _cmd_call(args: argparse.Namespace) -> int:
    from voicegw.sim.cli import run_call

    return asyncio.run(run_call(args))


def _cmd_dial(args: argparse.Namespace) -> int:
    from voicegw.dial.cli import run_sync

    return run_sync(args)


def _cmd_calls(args: argparse.Namespace) -> int:
    from voicegw.calllog.cli import run

    return asyncio.run(run(args, Settings.from_env(os.environ)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegw", description="Phone calls to Realtime voice agents.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the version and exit")
    parser.add_argument("--log-level", default=os.environ.get("VOICEGW_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"],
                        help="least severe log lines shown (env VOICEGW_LOG_LEVEL, default: %(default)s)")
    parser.add_argument("--log-format", default=os.environ.get("VOICEGW_LOG_FORMAT") or None, choices=logs.FORMATS,
                        help="json: one JSON object per line; text: for people (env VOICEGW_LOG_FORMAT; "
                             "default text when stderr is a terminal, json otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--agent", help="agent YAML file (env VOICEGW_AGENT)")
    p.add_argument("--routing", help="routing YAML file mapping dialed numbers to agents (env VOICEGW_ROUTING)")
    p.add_argument("--host", help="listen address (env VOICEGW_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (env VOICEGW_PORT, default 8080)")
    p.add_argument("--dev", action="store_true", help="dev mode: unsigned webhooks, localhost console (env VOICEGW_DEV_MODE)")
    p.add_argument("--workers", type=int, help="worker processes (env VOICEGW_WORKERS, default: the CPUs this process may use)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("check-config", help="validate a routing or agent file and print a summary")
    p.add_argument("file", help="the agent or routing YAML file (files it references are checked too)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("localmodel", help="run the local Realtime-protocol model server")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="listen port (default: %(default)s)")
    p.add_argument("--api-key", help="require this key (api-key header or Bearer); env VOICEGW_LOCALMODEL_KEY")
    p.set_defaults(func=_cmd_localmodel)

    tw = sub.add_parser("twilio", help="Twilio account helpers").add_subparsers(dest="twilio_command", required=True)
    p = tw.add_parser("attach", help="point a Twilio number's voice webhook at VOICEGW_PUBLIC_URL/twilio/voice")
    p.add_argument("--number", required=True, help="the phone number, E.164 (+15551234567)")
    p.set_defaults(func=_cmd_attach)

    from voicegw.sim.cli import add_parser as add_call_parser

    add_call_parser(sub).set_defaults(func=_cmd_call)

    from voicegw.dial.cli import add_parser as add_dial_parser

    add_dial_parser(sub).set_defaults(func=_cmd_dial)

    from voicegw.calllog.cli import add_parser as add_calls_parser

    add_calls_parser(sub).set_defaults(func=_cmd_calls)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    """One log format for every subcommand; the secrets the settings hold never reach a line."""
    logs.configure(level=args.log_level, fmt=args.log_format)
    logs.register_environment(os.environ)
    if getattr(args, "api_key", None):
        logs.register_secret(args.api_key)
    try:
        logs.register_settings(Settings.from_env(os.environ))
    except ConfigError:
        pass  # the command loads the settings again and reports the error


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _setup_logging(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below
        return code
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"voicegw: configuration error: {problem.location()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`voicegw calls list | head -1`): not an error worth a traceback;
        # stdout is pointed at /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141  # what a shell reports for a process ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
