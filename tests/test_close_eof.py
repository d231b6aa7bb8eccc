"""After connection_lost the socket is closed: the peer sees EOF even if the
loop never runs another round (asyncio closes it in _call_connection_lost;
npaio's inline mode must not wait for its next poller round)."""
import asyncio
import socket


def test_peer_sees_eof_when_loop_stops_in_connection_lost(loop, run):
    lsock = socket.create_server(("127.0.0.1", 0))

    class P(asyncio.Protocol):
        def connection_lost(self, exc):
            loop.stop()           # no further loop round after this one

    try:
        async def connect():
            tr, _ = await loop.create_connection(P, *lsock.getsockname())
            peer, _ = lsock.accept()     # already in the backlog: no blocking
            return tr, peer

        tr, peer = run(loop, connect())
        with peer:
            loop.call_soon(tr.close)
            loop.run_forever()
            peer.settimeout(5)
            assert peer.recv(10) == b""
    finally:
        lsock.close()
