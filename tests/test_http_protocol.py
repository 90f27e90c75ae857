"""The server's HTTP protocol turns Nagle's algorithm off on connections accepted from a listening socket
created the way uvicorn's multi-worker supervisor creates it (``proto`` 0), where asyncio's loop does not
(see service/http_protocol.py: ~44 ms per small response at 2 workers otherwise)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.http_protocol import NoDelayHttpToolsProtocol


async def _hello(scope, receive, send):  # type: ignore[no-untyped-def]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _nodelay_of_accepted(protocol_class: type[HttpToolsProtocol]) -> int:
    seen: list[int] = []

    class Probe(protocol_class):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def main() -> None:
        config = uvicorn.Config(_hello, loop="asyncio")
        config.load()
        state = ServerState()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn's bind_socket
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Probe(config, state, {}), sock=listener)
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        writer.close()
        server.close()

    asyncio.run(main())
    return seen[0]


def test_connections_get_tcp_nodelay_where_asyncio_leaves_it_off():
    assert _nodelay_of_accepted(HttpToolsProtocol) == 0  # the premise: asyncio alone leaves Nagle on
    assert _nodelay_of_accepted(NoDelayHttpToolsProtocol) != 0
