"""Socket transports on npaio's native reactor.

Read this next to ``asyncio/selector_events.py``: ``_NativeSocketTransport``
does the job of ``_SelectorSocketTransport`` with the same method names
(``_read_ready`` becomes ``_data_received``/``_buffer_received``, fed by the
reactor's drain instead of a selector callback), the same flow control
(``_FlowControlMixin``) and the same error paths (``_fatal_error``,
``_force_close``, ``_call_connection_lost``).

What it must not know: the C core. It calls the ``np_conn_*`` functions of
``_reactor.lib`` and nothing else; the loop's dispatch calls the ``_on_*``
methods with what a completion record says.

Rules it keeps (asyncio's):
- connection_made comes first; connection_lost exactly once, last, via
  call_soon, after which the socket is gone.
- The read path is chosen once per protocol in ``set_protocol``.
- After ``close()`` no more data is delivered; buffered output is flushed and
  then the connection closes. ``abort()`` drops buffered output.
- While paused, data that was already drained is held here and handed over
  (before any newer data) when reading resumes.

One that differs, as on uvloop: while the loop runs, write() queues and the
C core sends once per iteration (conn.c np_conn_write), so
get_write_buffer_size() counts the current iteration's bytes until then.

Ownership of the fd: the C core closes it when it frees the connection; on
connection_lost the Python socket object is only detached.
"""

import asyncio
import collections
import errno
import logging
import os
import warnings

from asyncio import base_events, constants, protocols, transports, trsock

from ._reactor import ffi, lib
from ._speedups import TransportBase, setup_transport
from . import linkbuffer
from .linkbuffer import _PINS, LinkBuffer, _lb_flush, _lb_len
from .nocopy import NocopyProtocol, run_on_request

logger = logging.getLogger("asyncio")

_BUFFERED = 1
_SIMPLE = 0
_NOCOPY = 2         # npaio.NocopyProtocol: reads the connection's LinkBuffer
# Transport._direct per read mode: what speedups.c's dispatch delivers itself.
_DIRECT_MODES = {_SIMPLE: 1, _BUFFERED: 2}


class _ConnWriter(LinkBuffer):
    """A no-copy protocol's output LinkBuffer: flush() hands its nodes to the
    connection (np_conn_write_lb), which sends straight from them."""

    __slots__ = ('_transport',)

    def __init__(self, transport):
        super().__init__()
        self._transport = transport

    def flush(self):
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        _lb_flush(b)
        if _lb_len(b):
            self._transport._write_linkbuffer(self)
        if _PINS and lib.np_pins_pending():
            linkbuffer.collect_pins()


def _server_attach_takes_transport():
    import inspect
    from asyncio import base_events
    return len(inspect.signature(base_events.Server._attach).parameters) > 1


_ATTACH_WITH_TRANSPORT = _server_attach_takes_transport()


class _NativeSocketTransport(TransportBase, transports._FlowControlMixin,
                             transports.Transport):
    """A TCP or Unix stream transport whose I/O runs on a poller thread.

    write() is TransportBase's, in C (npaio/_native/speedups.c): for
    bytes, bytearray or a contiguous memoryview while ``_wconn`` holds the
    connection's address it calls np_conn_write itself; everything else comes to ``_write_slow`` and any
    non-zero result to ``_write_done``. ``_wconn`` is 0 whenever the
    connection is gone, lost (``_conn_lost``) or shut for writing (``_eof``):
    every place that sets one of those clears it, before the connection is
    released."""

    # The attributes speedups.c reads per request live in slots, at fixed
    # offsets it reads directly (setup_transport below): a lookup in the
    # instance dict costs it ~190 instructions. _wconn: the np_conn's
    # address while the fast write() may run; _direct: see _update_direct.
    __slots__ = ('_wconn', '_direct', '_closing', '__dict__', '__weakref__')

    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, sock, protocol, waiter=None, extra=None,
                 server=None):
        self._wconn = 0
        self._direct = 0
        self._closing = False
        super().__init__(extra, loop)
        self._extra['socket'] = trsock.TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except OSError:
                self._extra['peername'] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._conn = None
        self._nc_reader = self._nc_writer = None
        self._nc_need = 0
        self._server = server
        self._conn_lost = 0
        self._paused = False
        self._eof = False
        self._held = collections.deque()   # drained while paused
        self._held_eof = False
        self._lost_exc = None
        self.set_protocol(protocol)
        if self._server is not None:
            if _ATTACH_WITH_TRANSPORT:
                self._server._attach(self)
            else:
                self._server._attach()
        loop._transports[self._sock_fd] = self
        # Hand the fd to a poller, reading paused until connection_made ran.
        base_events._set_nodelay(sock)
        err = ffi.new("int *")
        conn = lib.np_conn_open(loop._reactor.r, self._sock_fd, err)
        if conn == ffi.NULL:
            raise OSError(err[0], os.strerror(err[0]))
        self._conn = conn
        self._wconn = int(ffi.cast('uintptr_t', conn))
        lib.np_conn_set_write_high(conn, self._high_water)
        self._cid = loop._reactor.add_transport(conn, self)
        if self._read_mode == _NOCOPY:
            self._set_nocopy(True)
        self._loop.call_soon(self._protocol.connection_made, self)
        # only start reading when connection_made() has been called
        self._loop.call_soon(self._add_reader)
        if waiter is not None:
            self._loop.call_soon(asyncio.futures._set_result_unless_cancelled,
                                 waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append('closed')
        elif self._closing:
            info.append('closing')
        info.append(f'fd={self._sock_fd}')
        if self._sock is not None:
            info.append('read=' + ('polling' if self.is_reading() else 'idle'))
            info.append(f'write=<bufsize={self.get_write_buffer_size()}>')
        return '<{}>'.format(' '.join(info))

    # -- protocol ---------------------------------------------------------

    def set_protocol(self, protocol):
        if isinstance(protocol, NocopyProtocol):
            mode = _NOCOPY
        elif isinstance(protocol, protocols.BufferedProtocol):
            mode = _BUFFERED
        else:
            mode = _SIMPLE
        if self._conn is not None and (mode == _NOCOPY) != (self._read_mode == _NOCOPY):
            self._set_nocopy(mode == _NOCOPY)
        self._read_mode = mode
        self._protocol = protocol
        self._update_direct()

    def _update_direct(self):
        # The reactor's dispatch may hand data straight to
        # protocol.data_received (one Python frame per record instead of
        # four) while this holds; otherwise it calls _on_data. Recomputed
        # wherever one of its terms changes.
        # (1, protocol): an asyncio.Protocol, (2, protocol): a
        # BufferedProtocol (speedups.c's deliver_direct: one attribute
        # read per record); 0/False: dispatch calls _on_data.
        mode = _DIRECT_MODES.get(self._read_mode, 0)
        if self._paused or self._closing or self._held or not mode:
            self._direct = 0
        else:
            self._direct = (mode, self._protocol)

    def _set_nocopy(self, on):
        """Read the connection's input LinkBuffer in Python (no arena copy)."""
        lib.np_conn_set_nocopy(self._conn, on)
        if on and self._nc_reader is None:
            self._nc_reader = LinkBuffer._borrow(lib.np_conn_input(self._conn))
            self._nc_writer = _ConnWriter(self)
            self._nc_need = 0
        elif not on and not self._paused:
            # Input the no-copy reader left goes to the new protocol.
            lib.np_conn_resume_reading(self._conn)

    def get_protocol(self):
        return self._protocol

    # -- reading ----------------------------------------------------------

    # is_closing() is TransportBase's (speedups.c): `return self._closing`.

    def is_reading(self):
        return not self._paused and not self._closing

    def _add_reader(self):
        # asyncio's _add_reader: a no-op if paused or closing meanwhile.
        if not self.is_reading() or self._conn is None:
            return
        lib.np_conn_resume_reading(self._conn)

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._direct = False
        lib.np_conn_pause_reading(self._conn)
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._held or self._held_eof:
            # Data drained before the pause goes first; the native side
            # resumes once it is all delivered.
            self._loop.call_soon(self._deliver_held)
        else:
            self._update_direct()
            lib.np_conn_resume_reading(self._conn)
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _deliver_held(self):
        held = self._held
        while held and not self._paused and not self._closing:
            self._deliver(held.popleft())
        if self._paused or self._closing or self._conn is None:
            return
        if self._held_eof:
            self._held_eof = False
            self._on_eof()
            if self._closing:
                return
        self._update_direct()
        lib.np_conn_resume_reading(self._conn)

    def _on_data(self, data):
        """Dispatch: `data` (bytes) drained for this transport, unless
        ``_direct`` (then dispatch calls protocol.data_received itself, with
        _data_received's error handling)."""
        if self._closing:
            return
        if self._paused or self._held:
            self._held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data):
        if self._read_mode == _SIMPLE:
            self._data_received(data)
        else:
            self._buffer_received(data)

    def _data_received(self, data):
        try:
            self._protocol.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(
                exc, 'Fatal error: protocol.data_received() call failed.')

    def _buffer_received(self, data):
        mv = memoryview(data)
        protocol = self._protocol
        while mv:
            try:
                buf = protocol.get_buffer(-1)
                n = len(buf)
                if not n:
                    raise RuntimeError('get_buffer() returned an empty buffer')
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(
                    exc, 'Fatal error: protocol.get_buffer() call failed.')
                return
            if n > len(mv):
                n = len(mv)
            memoryview(buf).cast('B')[:n] = mv[:n]
            mv = mv[n:]
            try:
                protocol.buffer_updated(n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(
                    exc, 'Fatal error: protocol.buffer_updated() call failed.')
                return
            if mv and (self._paused or self._closing
                       or self._protocol is not protocol):
                self._hold_rest(bytes(mv))
                return

    def _hold_rest(self, data):
        """_buffer_received's tail: reading stopped (paused, closing, or the
        protocol changed) with `data` left over."""
        if not self._closing:
            self._held.appendleft(data)

    def _on_input(self):
        """Dispatch: new input in the connection's LinkBuffer (no-copy)."""
        if self._closing or self._paused or self._read_mode != _NOCOPY:
            return
        reader = self._nc_reader
        if len(reader) < self._nc_need:
            return
        try:
            need = run_on_request(self._protocol, reader, self._nc_writer)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(
                exc, 'Fatal error: protocol.on_request() call failed.')
            return
        self._nc_need = need
        if self._conn is not None:
            lib.np_conn_input_consumed(self._conn, need)

    def _on_eof(self):
        if self._closing:
            return
        if self._paused or self._held:
            self._held_eof = True
            return
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(
                exc, 'Fatal error: protocol.eof_received() call failed.')
            return
        if not keep_open:
            self.close()

    # -- writing ----------------------------------------------------------

    def _write_slow(self, data):
        """write() for what the C write() leaves: other types, a
        non-contiguous memoryview, no live connection."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if self._eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            return
        buf = ffi.from_buffer(data)
        n = lib.np_conn_write(self._conn, buf, len(buf))
        if n:
            self._write_done(n)

    def _write_done(self, n):
        """np_conn_write returned n != 0: more buffered than the high-water
        mark, or -errno."""
        if n > 0:
            self._maybe_pause_protocol()
        else:
            self._write_failed(n)

    def _write_linkbuffer(self, buf):
        """write() for a no-copy protocol's output LinkBuffer: its nodes go
        to the connection without a copy."""
        if self._eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self._conn_lost or self._conn is None:
            buf.skip(len(buf))
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning('socket.send() raised exception.')
            self._conn_lost += 1
            self._wconn = 0
            return
        n = lib.np_conn_write_lb(self._conn, buf._b)
        if n:
            self._write_done(n)

    def writelines(self, list_of_data):
        self.write(b''.join(list_of_data))

    def _write_failed(self, n):
        if n == -lib.NP_ECLOSED:
            # close() already flushed and a poller closed it; the CLOSED
            # record is on its way. Data written after close() is dropped.
            return
        exc = OSError(-n, os.strerror(-n))
        if -n in (errno.EPIPE, errno.ECONNRESET):
            exc = (BrokenPipeError if -n == errno.EPIPE
                   else ConnectionResetError)(-n, os.strerror(-n))
        self._fatal_error(exc, 'Fatal write error on socket transport')

    def get_write_buffer_size(self):
        if self._conn is None:
            return 0
        return lib.np_conn_wbuf_size(self._conn)

    def _set_write_buffer_limits(self, high=None, low=None):
        super()._set_write_buffer_limits(high, low)
        if getattr(self, '_conn', None) is not None:
            # np_conn_write returns 0 (nothing to do) up to this mark.
            lib.np_conn_set_write_high(self._conn, self._high_water)

    def _maybe_pause_protocol(self):
        if self._protocol_paused or self._conn is None:
            return
        super()._maybe_pause_protocol()
        if self._protocol_paused and lib.np_conn_set_notify(self._conn, self._low_water):
            self._loop.call_soon(self._maybe_resume_protocol)

    def _on_drained(self):
        self._maybe_resume_protocol()

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        self._wconn = 0
        lib.np_conn_shutdown_wr(self._conn)

    # -- closing ----------------------------------------------------------

    def close(self):
        if self._closing:
            return
        self._closing = True
        self._direct = False
        if self._conn is None:
            return
        if not lib.np_conn_close(self._conn, 0):
            self._conn_lost += 1
            self._wconn = 0
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None)

    def _on_closed(self, err, write_error):
        """Dispatch: a poller closed the connection (error, or flushed close)."""
        if self._conn_lost:
            return
        if err:
            cls = {errno.ECONNRESET: ConnectionResetError,
                   errno.EPIPE: BrokenPipeError}.get(err, OSError)
            exc = cls(err, os.strerror(err))
            if write_error:
                self._fatal_error(exc, 'Fatal write error on socket transport')
            else:
                self._fatal_error(exc, 'Fatal read error on socket transport')
            return
        self._closing = True
        self._direct = False
        self._conn_lost += 1
        self._wconn = 0
        self._loop.call_soon(self._call_connection_lost, None)

    def _fatal_error(self, exc, message='Fatal error on transport'):
        # Should be called from exception handler only.
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self,
                'protocol': self._protocol,
            })
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        self._held.clear()
        self._closing = True
        self._direct = False
        if self._conn is not None:
            lib.np_conn_close(self._conn, 1)
        self._conn_lost += 1
        self._wconn = 0
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._detach_native()
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                if _ATTACH_WITH_TRANSPORT:
                    server._detach(self)
                else:
                    server._detach()
                self._server = None

    def _detach_nocopy(self):
        if self._nc_reader is not None:
            self._nc_reader._detach()       # before the C side frees it
            self._nc_writer.close()

    def _detach_native(self):
        """Give the connection back to the C core, which closes the fd."""
        self._detach_nocopy()
        self._wconn = 0
        conn, self._conn = self._conn, None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.detach()
        if conn is not None:
            self._loop._reactor.remove_transport(self._cid)
            lib.np_conn_release(conn)

    def _loop_closing(self):
        """The loop closes under us: no callbacks any more, no fd left."""
        self._closing = True
        self._direct = False
        self._conn_lost += 1
        self._wconn = 0
        self._detach_nocopy()
        conn, self._conn = self._conn, None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.detach()
        return conn

    def __del__(self, _warn=warnings.warn):
        if getattr(self, '_sock', None) is not None and getattr(self, '_conn', None) is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)


setup_transport(_NativeSocketTransport, tuple(
    _NativeSocketTransport.__dict__[f] for f in ('_wconn', '_direct', '_closing')))
