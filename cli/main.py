"""The `loopllama` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cli.client_commands import add_client_commands, run_client_command
from core.settings import EMBEDDED_ADDRESS


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
                        help="the run to fetch from Temporal: TEMPORAL_ADDRESS, else the "
                        "address `loopllama dev` recorded in the data directory, else "
                        f"{EMBEDDED_ADDRESS}")
    replay.add_argument("--file", type=Path, help="replay an exported history JSON instead")
    replay.add_argument("--export", type=Path, help="also write the history to this file")
    replay.add_argument("--debug", action="store_true",
                        help="no deadlock detection, for stepping through under a debugger")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("workflows", "runs"):
        return run_client_command(args)
    # Server-side commands import Temporal and the workflows: only when needed.
    from cli.server_commands import run_server_command

    code = run_server_command(args)
    # Everything is stopped and said; leave without interpreter finalization, during which
    # the Temporal SDK's native threads can still call into Python and abort the process
    # ("PyGILState_Release ... finalizing"), turning a clean exit 0 into SIGABRT.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
