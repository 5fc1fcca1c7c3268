"""The ``luna-sender`` command: serve (default), check-config, version, listen, publish."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from luna_sender import __version__
from luna_sender.runtime import signals

if TYPE_CHECKING:
    from luna_sender.config import Settings

# Heavy modules (aiohttp, pydantic) are imported inside the functions: until they are loaded a
# stop signal can only be recorded (luna_sender/runtime/signals.py), so the sooner main() runs
# the better.
EXIT_CONFIG = 2


def _add_settings_flags(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    if sub:  # values given before the subcommand must survive the subparser's defaults
        parser.argument_default = argparse.SUPPRESS
    parser.add_argument(
        "--config", metavar="PATH", help="YAML settings file (default ./config.yaml)"
    )
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default 5080)")
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="event bus: memory:// (default), redis://host:port/db, rediss://...",
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument("--workers", type=int, help="serving processes sharing the port")


def build_parser() -> argparse.ArgumentParser:
    from luna_sender.cli.client import add_filter_flags

    parser = argparse.ArgumentParser(prog="luna-sender", description=__doc__)
    _add_settings_flags(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (the default)")
    _add_settings_flags(serve, sub=True)
    check = sub.add_parser("check-config", help="validate and print settings, secrets masked")
    _add_settings_flags(check, sub=True)
    sub.add_parser("version", help="print the version")

    listen = sub.add_parser("listen", help="print matching events as JSON lines")
    listen.add_argument("--url", default="ws://127.0.0.1:5080", help="service websocket origin")
    listen.add_argument("--general", action="store_true", help="general events (/ws/general)")
    listen.add_argument("--account-id", help="Luna-Account-Id (required for face/body events)")
    listen.add_argument("--token", help="auth.mode jwt: the token (sent as Authorization: Bearer)")
    listen.add_argument("--pretty", action="store_true", help="indented JSON")
    listen.add_argument("--count", type=int, default=0, help="exit after N events")
    listen.add_argument("--recover", action="store_true", help="resume after reconnects (since=)")
    add_filter_flags(listen)

    pub = sub.add_parser("publish", help="publish a test event from a file or stdin")
    pub.add_argument("--url", default="http://127.0.0.1:5080", help="service HTTP origin")
    pub.add_argument("--general", action="store_true", help="a general event")
    pub.add_argument("--account-id", help="Luna-Account-Id (face) or account_id (general)")
    pub.add_argument("--token", help="auth.mode jwt: the token (sent as Authorization: Bearer)")
    pub.add_argument("--event-type", help="general event type for a bare event")
    pub.add_argument("--handler-id", help="handler_id for bare face events")
    pub.add_argument("--file", default="-", help="JSON file, or - for stdin (default)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "workers": args.workers,
    }


def load(args: argparse.Namespace) -> Settings:
    from luna_sender.config import ConfigError, load_settings

    try:
        return load_settings(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"luna-sender: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _install_event_loop(choice: str) -> None:
    """uvloop's transports make the per-socket write of the fan-out cheaper (docs/performance)."""
    if choice == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit(
                "luna-sender: event_loop 'uvloop' but uvloop is not installed"
            ) from None
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def serve_one(settings: Settings, reuse_port: bool = False) -> int:
    """Run one serving process (module level so --workers can spawn it); its exit status."""
    signals.record_early()  # a spawned worker starts here, not in main()
    from luna_sender.runtime import lifecycle
    from luna_sender.runtime.fdlimit import no_room, raise_soft_limit
    from luna_sender.runtime.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    raise_soft_limit()  # per process: each --workers process holds its own sockets
    refused = no_room(settings.ws)
    if refused is not None:
        print(f"luna-sender: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    _install_event_loop(settings.event_loop)
    return lifecycle.run(settings, reuse_port)


def serve(settings: Settings) -> None:
    import logging

    from luna_sender.config import config_warnings, ignored_env_warning
    from luna_sender.runtime.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    logger = logging.getLogger("luna_sender.config")
    warning = ignored_env_warning(settings)
    if warning:  # once, in the parent, before any worker starts
        logger.warning(warning, extra={"ignored_env": settings.ignored_env})
    for line in config_warnings(settings):
        logger.warning(line)
    try:
        if settings.workers > 1:
            from luna_sender.cli.workers import run_workers

            code = run_workers(settings, serve_one)
        else:
            code = serve_one(settings)
    finally:
        signals.ignore_stops()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    signals.record_early()
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    if command == "version":
        print(__version__)
        return
    if command in ("listen", "publish"):
        signals.restore_defaults()
        early = signals.early()
        if early is not None:
            raise SystemExit(128 + early)
        import asyncio

        from luna_sender.cli import client

        runner = client.listen if command == "listen" else client.publish
        try:
            raise SystemExit(asyncio.run(runner(args)))
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    settings = load(args)
    if command == "check-config":
        from luna_sender.config import config_warnings, ignored_env_warning

        for warning in [ignored_env_warning(settings), *config_warnings(settings)]:
            if warning:
                print(f"luna-sender: warning: {warning}", file=sys.stderr)
        print(json.dumps(settings.masked(), indent=2, ensure_ascii=False))
        return
    serve(settings)


if __name__ == "__main__":
    main()
