"""The recording protocol the behaviour tests share.

``Recorder`` records every callback in order (``events``), collects the data,
resolves ``made``/``eof``/``lost`` futures, and ``wait_bytes(n)`` waits until
n bytes arrived (or fails if the connection ended first). Test modules
subclass it for what they add (flow-control records, data types, ...).
"""
import asyncio


class Recorder(asyncio.Protocol):
    def __init__(self, loop, registry=None, eof_result=None, on_eof=None,
                 on_made=None):
        self.loop = loop
        self.transport = None
        self.events = []
        self.data = bytearray()
        self.eof_result = eof_result
        self.on_eof = on_eof
        self.on_made = on_made
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.lost_excs = []
        self._want = None
        if registry is not None:
            registry.append(self)

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)
        if self.on_made:
            self.on_made(self)

    def data_received(self, data):
        self.events.append("data")
        self.data += data
        self._check()

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        if self.on_eof:
            self.on_eof(self)
        self._check()
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost_excs.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)
        self._check()

    def _check(self):
        if self._want is None:
            return
        n, fut = self._want
        if fut.done():
            return
        if len(self.data) >= n:
            fut.set_result(None)
        elif self.eof.done() or self.lost.done():
            fut.set_exception(ConnectionError(
                "connection ended after %d of %d bytes" % (len(self.data), n)))

    async def wait_bytes(self, n):
        fut = self.loop.create_future()
        self._want = (n, fut)
        self._check()
        await fut
