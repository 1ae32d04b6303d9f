"""The API's listening socket: accepted connections must have Nagle's algorithm off."""

from __future__ import annotations

import asyncio
import socket

from cli.serve import bind_api_socket
from tests.conftest import free_port


async def test_accepted_connections_have_tcp_nodelay() -> None:
    # With Nagle on, uvicorn's header and body writes wait for the client's delayed ACK:
    # every request cost ~44 ms instead of ~2 ms (found by bench/bench_runs.py).
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    listener = bind_api_socket("127.0.0.1", free_port())
    server = await asyncio.start_server(on_connect, sock=listener)
    async with server:
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(seen, 5) == 1
        writer.close()
