"""Model-call CPU per call, by provider, with hundreds of calls in flight at once.

    python -m bench.bench_providers                 # 200 and 600 in flight, 3 rounds each
    python -m bench.bench_providers --in-flight 400 --rounds 5

Each provider object of the worker (activities/models/) with its real SDK client (the
aiohttp transport, one connection per call in flight) calls a fake API served by a child
process on 127.0.0.1 (FakeAnthropic for Claude, FakeOpenAI for `openai/…` and a named
endpoint). A round sends that many calls at once and measures this process's CPU time
across it; the table gives the median CPU per call over the rounds and the wall time of
the median round. The fakes' CPU is their own process's, not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from activities.models.base import ModelProvider
from activities.models.offline import OfflineProvider
from activities.models.providers import configured_providers
from core.settings import ProviderEndpoint, Secret, Settings
from core.types import ModelRequest

# The child: both fakes, their URLs on stdout, alive until its stdin closes.
_FAKES = """
import sys
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
with FakeAnthropic() as claude, FakeOpenAI() as openai:
    print(claude.url, openai.url, flush=True)
    sys.stdin.read()
"""


def providers(claude_url: str, openai_url: str, slots: int) -> dict[str, ModelProvider]:
    """The providers under test, built as a worker builds them."""
    settings = Settings(anthropic_api_key=Secret("sk-ant-bench"), anthropic_base_url=claude_url,
                        openai_api_key=Secret("sk-openai-bench"), openai_base_url=openai_url,
                        providers=(ProviderEndpoint("local", openai_url),),
                        worker_max_activities=slots)
    built = configured_providers(settings)
    return {"claude-sonnet-4-6": built["anthropic"], "openai/gpt-4.1": built["openai"],
            "local/llama3.2": built["local"], "loopllama-offline": OfflineProvider()}


def request(model: str, number: int) -> ModelRequest:
    """A short request, different for every call (so nothing can be served twice)."""
    return ModelRequest(model=model, system="You are the writer. Answer in one line.",
                        messages=[{"role": "user", "content": f"Write line {number}."}],
                        max_tokens=64)


async def one_round(provider: ModelProvider, model: str, calls: int) -> tuple[float, float]:
    """CPU seconds and wall seconds of `calls` calls sent at once."""
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(provider.call(request(model, n)) for n in range(calls)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def bench(claude_url: str, openai_url: str, in_flight: Sequence[int],
                rounds: int) -> None:
    built = providers(claude_url, openai_url, max(in_flight))
    print(f"{'model':<22}{'in flight':>10}{'CPU ms/call':>13}{'wall s':>9}")
    for model, provider in built.items():
        await one_round(provider, model, 20)  # warm the connections and the SDK
        for calls in in_flight:
            measured = [await one_round(provider, model, calls) for _ in range(rounds)]
            cpu = statistics.median(c for c, _ in measured) / calls * 1000
            wall = statistics.median(w for _, w in measured)
            print(f"{model:<22}{calls:>10}{cpu:>13.2f}{wall:>9.2f}")
    for provider in built.values():
        await provider.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[200, 600])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    child = subprocess.Popen([sys.executable, "-c", _FAKES], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        claude_url, openai_url = child.stdout.readline().split()
        asyncio.run(bench(claude_url, openai_url, args.in_flight, args.rounds))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
