"""The floor: a bare Temporal workflow (3 no-op activities) and a worker process for it.

It runs on the same dev server as LoopLlama, in its own worker process (like LoopLlama's
worker), with the SDK defaults: the sandboxed workflow runner and the default data
converter. Whatever LoopLlama costs above this is LoopLlama's own overhead.

This module is kept tiny on purpose: the workflow sandbox re-imports it for every run.

Run a floor worker by hand with::

    python -m bench.floor --address 127.0.0.1:7233 --task-queue bench-floor
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow

FLOOR_TYPE = "BenchFloor"
ENTITY_TYPE = "BenchFloorEntity"
FLOOR_ACTIVITIES = 3
READY_LINE = "floor worker ready"


@activity.defn(name="bench_noop")
async def noop(step: int) -> int:
    """Does nothing; stands in for a model call that answers instantly."""
    return step


@workflow.defn(name=FLOOR_TYPE)
class FloorWorkflow:
    """`steps` no-op activities in sequence (3 unless told); with `hold`, then waits
    for `release`."""

    def __init__(self) -> None:
        self._done = 0
        self._released = False

    @workflow.run
    async def run(self, hold: bool, steps: int = FLOOR_ACTIVITIES) -> int:
        """Run the activities, optionally stay open until released; return the count."""
        for step in range(steps):
            await workflow.execute_activity(
                noop, step, start_to_close_timeout=timedelta(seconds=60)
            )
            self._done += 1
        if hold:
            await workflow.wait_condition(lambda: self._released)
        return self._done

    @workflow.signal
    def release(self) -> None:
        """Let a held run finish."""
        self._released = True

    @workflow.query
    def progress(self) -> int:
        """Activities finished so far."""
        return self._done


@workflow.defn(name=ENTITY_TYPE)
class FloorEntityWorkflow:
    """Starts, then waits for `release`: the floor for creating a long-lived entity."""

    def __init__(self) -> None:
        self._released = False

    @workflow.run
    async def run(self) -> None:
        """Wait until released."""
        await workflow.wait_condition(lambda: self._released)

    @workflow.signal
    def release(self) -> None:
        """Let it complete."""
        self._released = True


async def _serve(address: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await Client.connect(address)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow, FloorEntityWorkflow],
        activities=[noop],
        graceful_shutdown_timeout=timedelta(seconds=2),
    ):
        print(READY_LINE, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve the floor workflow on `--task-queue` until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.address, args.task_queue))
    return 0


if __name__ == "__main__":
    sys.exit(main())
