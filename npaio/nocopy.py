"""npaio.NocopyProtocol: netpoll's OnRequest(connection) model for asyncio.

A protocol whose handler reads the connection's input LinkBuffer itself and
writes replies into an output LinkBuffer, with no bytes object in between::

    class Frames(npaio.NocopyProtocol):
        def on_request(self, reader, writer):
            while len(reader) >= 4:
                size = int.from_bytes(reader.peek(4), 'big')
                if len(reader) < 4 + size:
                    return 4 + size          # call me again at this many bytes
                frame = reader.next(4 + size)  # a view of the reactor's nodes
                writer.write_bytes(frame)      # linked, not copied (>= 4 KiB)
            writer.flush()                     # sends
            return 0

On npaio's native transports ``reader`` IS the connection's input LinkBuffer
(the poller reads into it; the drain copies nothing) and ``writer.flush()``
hands its nodes to the connection, which sends straight from them. Anywhere
else (the stock asyncio loop, TLS) the same class works through
``data_received``: the bytes are linked into a LinkBuffer first.

Rules:
- ``on_request(reader, writer)`` is called when new input arrived. It should
  consume every complete message; it may return the number of bytes the
  buffer must hold before the next call (a frame's full size), or 0/None for
  "any new input". npaio raises the connection's input high-water mark to
  fit such a frame (otherwise reading pauses at 256 KiB unread).
- Views from ``reader`` stay valid as long as they live (they hold their
  node); ``reader`` itself is closed when the connection is lost.
- ``idle_timeout`` (seconds, class or instance attribute; None: off) is
  netpoll's idle timeout: a connection with no input for that long gets
  ``idle_timed_out()``, which closes it by default. (netpoll's read timeout
  bounds a blocking read; reads here never block.)
- Override ``connection_made``/``connection_lost`` only with a call to
  ``super()``.
"""

import asyncio
import time

from .linkbuffer import LinkBuffer

__all__ = ['NocopyProtocol']


class _TransportWriter(LinkBuffer):
    """An output LinkBuffer whose flush() writes to any asyncio transport."""

    __slots__ = ('_transport',)

    def __init__(self, transport):
        super().__init__()
        self._transport = transport

    def flush(self):
        super().flush()
        n = len(self)
        if n:
            self._transport.write(self.next(n))


class NocopyProtocol(asyncio.Protocol):
    """Base class of no-copy protocols (see the module doc)."""

    transport = None
    idle_timeout = None
    _nc_reader = None
    _nc_writer = None
    _nc_need = 0
    _nc_polling = False
    _nc_idle = None
    _nc_active = 0.0

    def connection_made(self, transport):
        self.transport = transport
        if self.idle_timeout:
            self._nc_active = time.monotonic()
            self._nc_idle = asyncio.get_running_loop().call_later(
                self.idle_timeout, self._nc_idle_check)

    def idle_timed_out(self):
        """No input for idle_timeout seconds: close the connection."""
        self.transport.close()

    def _nc_idle_check(self):
        self._nc_idle = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        idle = time.monotonic() - self._nc_active
        if idle >= self.idle_timeout:
            self.idle_timed_out()
        else:
            self._nc_idle = asyncio.get_running_loop().call_later(
                self.idle_timeout - idle, self._nc_idle_check)

    def on_request(self, reader, writer):
        """New input in `reader` (an npaio.LinkBuffer). Returns the bytes
        needed before the next call, or 0/None. The default reads nothing."""
        return 0

    # -- any other transport: bytes arrive through data_received ---------

    def data_received(self, data):
        reader = self._nc_reader
        if reader is None:
            if self.transport is None:
                raise RuntimeError('NocopyProtocol.connection_made() was not '
                                   'called (call super().connection_made())')
            reader = self._nc_reader = LinkBuffer()
            self._nc_writer = _TransportWriter(self.transport)
        reader.write_bytes(data)
        reader.flush()
        self._nc_fallback_run()

    def _nc_fallback_run(self, polled=False):
        if polled:
            self._nc_polling = False
        reader, transport = self._nc_reader, self.transport
        if reader.closed or transport.is_closing():
            return
        if transport.is_reading() and len(reader) >= self._nc_need:
            self._nc_need = run_on_request(self, reader, self._nc_writer)
        if (not transport.is_reading() and len(reader) and not self._nc_polling
                and not transport.is_closing()):
            # Paused inside on_request with input left: a stock transport
            # has no hook for resume_reading(), so look again shortly.
            self._nc_polling = True
            asyncio.get_running_loop().call_later(
                0.005, self._nc_fallback_run, True)

    def connection_lost(self, exc):
        if self._nc_idle is not None:
            self._nc_idle.cancel()
            self._nc_idle = None
        for buf in (self._nc_reader, self._nc_writer):
            if buf is not None:
                buf.close()


def run_on_request(protocol, reader, writer):
    """Call on_request until it has what it needs; returns the bytes it
    needs before the next call (0: any new input)."""
    if protocol.idle_timeout:
        protocol._nc_active = time.monotonic()
    before = len(reader)
    while True:
        need = protocol.on_request(reader, writer)
        if not need:
            return 0
        if type(need) is not int or need < 0:
            raise TypeError(f'on_request() must return a byte count or None, '
                            f'not {need!r}')
        left = len(reader)
        # Called again only if it asked for bytes that are already there and
        # made progress (else it would spin).
        if left < need:
            return need
        if left == before:
            return 0
        before = left
