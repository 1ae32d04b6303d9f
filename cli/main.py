"""The `loopllama` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from core.devserver import DevServerError
from core.settings import Settings, SettingsError
from core.temporal import TemporalSetupError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = argparse.ArgumentParser(
        prog="loopllama",
        description="Durable crews of LLM agents with humans in the loop, on Temporal.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser(
        "dev", help="Start embedded Temporal, a worker and the API on this machine."
    )
    dev.add_argument("--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    dev.add_argument("--temporal-port", type=int, default=7233,
                     help="Temporal gRPC port (default 7233)")
    dev.add_argument("--ui-port", type=int, default=8233,
                     help="Temporal UI port (default 8233)")

    api = commands.add_parser("api", help="Serve the API against an existing Temporal server.")
    api.add_argument("--host", default="127.0.0.1", help="API host (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="API port (default 8000)")

    commands.add_parser("worker", help="Run a worker against an existing Temporal server.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Keep per-request and per-connection noise out of the dev console.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    from cli import serve

    try:
        settings = Settings.from_env()
        if args.command == "dev":
            asyncio.run(serve.run_dev(settings, host=args.host, port=args.port,
                                      temporal_port=args.temporal_port, ui_port=args.ui_port))
        elif args.command == "api":
            asyncio.run(serve.run_api(settings, host=args.host, port=args.port))
        elif args.command == "worker":
            asyncio.run(serve.run_worker(settings))
    except (SettingsError, DevServerError, TemporalSetupError) as err:
        print(f"loopllama: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, SettingsError) else 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
