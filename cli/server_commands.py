"""`loopllama dev`, `api`, `worker` and `replay`: the commands that talk to Temporal.

Imported only when one of them runs, so the client commands start fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from temporalio.service import RPCError

from cli import serve
from cli.replay import (
    ReplayError,
    export_history,
    fetch_history,
    history_from_file,
    replay,
)
from core.devserver import DevServerError
from core.logs import configure_logging
from core.settings import Settings, SettingsError
from core.temporal import TemporalSetupError

EXIT_USAGE = 2


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
    deterministic, line = await replay(history, settings, debug=args.debug)
    print(line)
    return 0 if deterministic else 1


def run_server_command(args: argparse.Namespace) -> int:
    """Execute `dev`, `api`, `worker` or `replay`; returns the exit code."""
    try:
        settings = Settings.from_env()
        # Format, level, secrets redacted; also quiets per-request noise (core/logs.py).
        configure_logging(settings)
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
        print(f"loopllama: Temporal answered: {serve.one_line(err)}", file=sys.stderr)
        return 1
    except (SettingsError, DevServerError, TemporalSetupError, serve.StartupError,
            ReplayError) as err:
        print(f"loopllama: {serve.one_line(err)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(err, SettingsError) else 1
    except serve.Stopped:
        print("loopllama: stopped before it started.", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        return 130
    return 0
