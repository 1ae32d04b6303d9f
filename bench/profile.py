"""Sampling profiles of the bench's child processes with py-spy, summarised as tables.

py-spy attaches to a running process from outside (no code change, no restart) and
records its Python stacks. `Profiler` records the `loopllama worker` and `loopllama api`
processes while a load runs; `top_entries` turns the collapsed stacks into "where the
CPU went": each function's share of the samples, counted once per stack (inclusive), for
LoopLlama's own code, the Temporal SDK, pydantic, the anthropic SDK and so on.

py-spy comes with `pip install -e ".[bench]"`; without it, profiling is skipped and the
bench says so.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# A frame in py-spy's raw output: "function (path/to/file.py:line)".
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Frames that say nothing about where work goes: the event loop and thread plumbing.
_PLUMBING = ("asyncio/", "threading.py", "concurrent/futures", "<module>", "runpy",
             "selectors.py", "cli/main.py", "cli/server_commands.py", "cli/serve.py")
# Samples where the process waits (the idle event loop or thread) are not CPU.
_IDLE = ("select (selectors.py", "epoll", "wait (threading.py", "_worker (concurrent",
         "poll (selectors.py")


def py_spy() -> str | None:
    """The py-spy executable next to this Python (or on PATH), if installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """One process's samples: collapsed stacks and their counts."""

    name: str
    stacks: Counter[tuple[str, ...]]

    @property
    def busy(self) -> int:
        """Samples in which the process was running Python, not waiting."""
        return sum(n for stack, n in self.stacks.items() if not _is_idle(stack))


def _is_idle(stack: tuple[str, ...]) -> bool:
    return not stack or any(marker in stack[-1] for marker in _IDLE)


def short(frame: str) -> str:
    """`module.function` from a py-spy frame, with the path cut to what matters."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"] or ""
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/", "/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return f"{module}.{match['func']}"


def load(name: str, path: Path) -> Profile:
    """Read py-spy's `--format raw` file (one "frame;frame;... count" line per stack)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if not head or not count.isdigit():
            continue
        frames = tuple(f for f in head.split(";") if f and not f.startswith("process "))
        # py-spy puts the thread first when asked for thread ids; drop it.
        frames = tuple(f for f in frames if not f.startswith("thread "))
        stacks[frames] += int(count)
    return Profile(name, stacks)


def top_entries(profile: Profile, count: int = 5, *, own_only: bool = False) -> list[
        tuple[str, float]]:
    """The functions most often on the stack while busy (inclusive), as shares of busy
    samples. With `own_only`, only LoopLlama's modules (api, core, workflows, activities).
    """
    busy = profile.busy
    if not busy:
        return []
    inclusive: Counter[str] = Counter()
    for stack, n in profile.stacks.items():
        if _is_idle(stack):
            continue
        seen: set[str] = set()
        for frame in stack:
            if any(p in frame for p in _PLUMBING):
                continue
            name = short(frame)
            if own_only and not name.startswith(("api.", "core.", "workflows.", "activities.",
                                                 "worker.")):
                continue
            if name not in seen:
                seen.add(name)
                inclusive[name] += n
    # An entry that is on every stack (a process's main loop) says nothing: keep entries
    # that cover less than nearly all busy samples.
    ranked = [(name, n / busy) for name, n in inclusive.most_common() if n < 0.98 * busy]
    return ranked[:count]


def self_entries(profile: Profile, count: int = 5) -> list[tuple[str, float]]:
    """The functions most often at the top of the stack while busy (self time)."""
    busy = profile.busy
    leaves: Counter[str] = Counter()
    for stack, n in profile.stacks.items():
        if not _is_idle(stack):
            leaves[short(stack[-1])] += n
    return [(name, n / busy) for name, n in leaves.most_common(count)] if busy else []


class Profiler:
    """Records several processes at once while a block of load runs."""

    def __init__(self, directory: Path, pids: dict[str, int], rate: int = 250) -> None:
        self._directory = directory
        self._pids = pids
        self._rate = rate
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.missing: str | None = None if py_spy() else (
            'py-spy is not installed (pip install -e ".[bench]"); no profile taken')

    async def start(self) -> None:
        """Attach py-spy to every process (nonblocking: the target is never paused)."""
        exe = py_spy()
        if exe is None:
            return
        for name, pid in self._pids.items():
            self._procs[name] = await asyncio.create_subprocess_exec(
                exe, "record", "--pid", str(pid), "--rate", str(self._rate), "--nonblocking",
                "--format", "raw", "--output", str(self._directory / f"{name}.txt"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
        # py-spy needs a moment to attach before the load starts.
        await asyncio.sleep(1.0)

    async def stop(self) -> dict[str, Profile]:
        """Detach (py-spy writes its file on SIGINT) and load what each recorded."""
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(2)
        profiles = {}
        for name, proc in self._procs.items():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                continue
            path = self._directory / f"{name}.txt"
            if path.exists():
                profiles[name] = load(name, path)
        return profiles


def report(profiles: dict[str, Profile], count: int = 5) -> list[str]:
    """Markdown lines: per process, the top inclusive entries (own code and all) and the
    top self-time entries."""
    lines: list[str] = []
    for name, profile in profiles.items():
        lines.append(f"- **{name}** ({profile.busy} busy samples):")
        for title, entries in (
            ("LoopLlama code, inclusive", top_entries(profile, count, own_only=True)),
            ("all code, inclusive", top_entries(profile, count)),
            ("self time", self_entries(profile, count)),
        ):
            text = "; ".join(f"`{entry}` {share:.0%}" for entry, share in entries) or "—"
            lines.append(f"  - {title}: {text}")
    return lines
