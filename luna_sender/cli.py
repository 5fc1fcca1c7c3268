"""The ``luna-sender`` command: serve (default), check-config, version."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__
from .config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2


def _add_settings_flags(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    if sub:  # values given before the subcommand must survive the subparser's defaults
        parser.argument_default = argparse.SUPPRESS
    parser.add_argument("--config", metavar="PATH",
                        help="YAML settings file (default ./config.yaml)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="TCP port (default 5080)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="event bus: memory:// (default), redis://host:port/db, rediss://...")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luna-sender", description=__doc__)
    _add_settings_flags(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the service (the default)")
    _add_settings_flags(serve, sub=True)
    check = sub.add_parser("check-config", help="validate and print settings, secrets masked")
    _add_settings_flags(check, sub=True)
    sub.add_parser("version", help="print the version")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "redis_url": args.redis_url,
        "log_level": args.log_level,
        "log_format": args.log_format,
    }


def load(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"luna-sender: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def serve(settings: Settings) -> None:
    from aiohttp import web

    from .app import build_app
    from .logs import setup_logging

    setup_logging(settings.log_level, settings.log_format)
    app = build_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=settings.ws.shutdown_timeout + 1,
        handle_signals=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "serve"
    if command == "version":
        print(__version__)
        return
    settings = load(args)
    if command == "check-config":
        print(json.dumps(settings.masked(), indent=2, ensure_ascii=False))
        return
    serve(settings)


if __name__ == "__main__":
    main()
