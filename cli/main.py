"""The `loopllama` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from temporalio.service import RPCError

from cli.client_commands import add_client_commands, run_client_command
from cli.replay import (
    EMBEDDED_ADDRESS,
    export_history,
    fetch_history,
    history_from_file,
    replay,
)
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

    add_client_commands(commands)

    replay = commands.add_parser(
        "replay", help="Replay a run's Temporal history against the current workflow code."
    )
    replay.add_argument("run_id", nargs="?", metavar="RUN_ID",
                        help="the run to fetch from Temporal (TEMPORAL_ADDRESS, default "
                        f"{EMBEDDED_ADDRESS})")
    replay.add_argument("--file", type=Path, help="replay an exported history JSON instead")
    replay.add_argument("--export", type=Path, help="also write the history to this file")
    return parser


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.run_id is None and args.file is None:
        print("loopllama replay: give a RUN_ID or --file history.json", file=sys.stderr)
        return EXIT_USAGE
    if args.file is not None:
        history = history_from_file(args.file, args.run_id)
    else:
        history = await fetch_history(settings, args.run_id)
    if args.export:
        export_history(history, args.export)
    deterministic, line = await replay(history)
    print(line)
    return 0 if deterministic else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("workflows", "runs"):
        # Client commands print their own results; no logging setup, no server imports.
        return run_client_command(args)
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
        elif args.command == "replay":
            return asyncio.run(_replay(settings, args))
    except RPCError as err:
        print(f"loopllama: Temporal answered: {err.message}", file=sys.stderr)
        return 1
    except (SettingsError, DevServerError, TemporalSetupError) as err:
        print(f"loopllama: {err}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, SettingsError) else 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
