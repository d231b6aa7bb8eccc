"""npaio.LinkBuffer: netpoll's no-copy Reader/Writer, in Python names.

A LinkBuffer is a chain of refcounted native nodes (``_native/linkbuffer.c``).
Reader verbs: ``next peek skip until read_bytes read_string read_byte slice
release len()``. Writer verbs: ``malloc malloc_ack write_bytes write_direct
append flush malloc_len``. What netpoll says of each holds here, with one
difference, made for Python's sake:

Lifetime rules
--------------
- A memoryview from ``next``/``peek``/``until`` (read-only) or ``malloc``
  (writable) points straight at node memory. netpoll documents it as valid
  until ``release()`` (readers) or ``flush()`` (writers); here the view also
  holds a reference on its node, so a view kept longer, even past ``close()``,
  still shows the same bytes: the memory is neither freed nor reused while
  any view of it lives. (Writing into a ``malloc`` view after ``flush()`` is
  still a bug: the bytes may be on their way to the socket.)
- A read of more bytes than ``len(buf)`` raises ``LinkBufferError`` and
  consumes nothing; it never blocks and never returns short data.
- ``next``/``peek`` of bytes that span two nodes copy them once into a new
  bytes object (netpoll does the same), and so do reads of at most 4 KiB
  (cheaper than pinning a view); ``slice`` never copies.
- ``write_bytes(b)``/``write_direct(b, n)`` of 4 KiB or more link ``b``'s
  memory without copying and keep ``b`` alive until the nodes are freed: do
  not change ``b`` afterwards. Smaller writes are copied.
- After ``close()`` every verb raises ``ValueError``.

Threads: a LinkBuffer belongs to the thread that uses it (the loop thread for
a connection's buffers); it is not locked.
"""

import functools
import itertools
import operator

from ._reactor import ffi, lib

__all__ = ['LinkBuffer', 'LinkBufferError']

# write_bytes/write_direct link a buffer at least this big instead of
# copying it (netpoll's BinaryInplaceThreshold).
LINK_THRESHOLD = 4096
# next/peek of at most this many bytes copy them into a small bytes object:
# measured on the dev box, a pinned view (ffi.gc + buffer + memoryview) costs
# ~2 us, a copy of a few hundred bytes ~0.5 us.
VIEW_THRESHOLD = 4096
_scratch = ffi.new('char[]', VIEW_THRESHOLD)

# Hot C functions bound once: `lib.x` is a getattr on cffi's Lib each time.
_lb_len = lib.np_lb_len
_lb_copy_out = lib.np_lb_copy_out
_lb_peek_copy = lib.np_lb_peek_copy
_lb_put = lib.np_lb_put
_lb_flush = lib.np_lb_flush
_lb_skip = lib.np_lb_skip
_unpack = ffi.unpack
_from_buffer = ffi.from_buffer


class LinkBufferError(Exception):
    """A LinkBuffer read or edit asked for more bytes than there are."""


# -- pins: Python objects whose memory a node links (see _native/pins.c) ----

_PINS = {}                      # pin id -> ffi.from_buffer(obj): keeps obj alive
_pin_ids = itertools.count(1)
_collected = ffi.new('uint64_t[]', 256)


def collect_pins():
    """Drop the objects whose nodes the C side has freed."""
    while lib.np_pins_pending():
        k = lib.np_pins_collect(_collected, 256)
        for i in range(k):
            _PINS.pop(_collected[i], None)


def _pin(data):
    cdata = ffi.from_buffer(data)
    pin = next(_pin_ids)
    _PINS[pin] = cdata
    return cdata, pin


def _unref(owner, _cdata, _unref=lib.np_node_unref):
    _unref(owner)


def _span_view(span, readonly):
    """A memoryview over span's memory that keeps span's node alive."""
    p = ffi.gc(span.ptr, functools.partial(_unref, span.owner))
    mv = memoryview(ffi.buffer(p, span.len))
    return mv.toreadonly() if readonly else mv


def _as_bytes_view(data):
    mv = data if type(data) is memoryview else memoryview(data)
    if not mv.c_contiguous:
        raise BufferError('LinkBuffer needs a contiguous buffer')
    if mv.format != 'B' or mv.ndim != 1:
        mv = mv.cast('B')
    return mv


def _check_n(op, n):
    if type(n) is not int:
        n = operator.index(n)
    if n < 0:
        raise ValueError(f'{op}: negative size {n}')
    return n


class LinkBuffer:
    """A no-copy buffer of refcounted native nodes (see the module doc)."""

    __slots__ = ('_b', '_span', '_input', '__weakref__')

    def __init__(self):
        b = lib.np_lb_new()
        if b == ffi.NULL:
            raise MemoryError('LinkBuffer')
        self._b = ffi.gc(b, lib.np_lb_free)
        self._span = ffi.new('np_span *')
        self._input = False

    @classmethod
    def _borrow(cls, ptr):
        """A reader over a connection's input buffer (reader verbs only; the
        transport detaches it before the connection is released)."""
        self = cls.__new__(cls)
        self._b = ptr
        self._span = ffi.new('np_span *')
        self._input = True
        return self

    def _detach(self):
        self._b = None

    # -- state ------------------------------------------------------------

    def _buf(self):
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        return b

    def _writable(self):
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        if self._input:
            raise ValueError("a connection's input LinkBuffer is read-only")
        return b

    @property
    def closed(self):
        return self._b is None

    def close(self):
        """Free the nodes (views already handed out stay valid)."""
        b, self._b = self._b, None
        if b is not None and not self._input:
            ffi.release(b)
        collect_pins()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        """Readable (flushed) bytes."""
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        return _lb_len(b)

    def __repr__(self):
        if self._b is None:
            return '<LinkBuffer closed>'
        return (f'<LinkBuffer len={lib.np_lb_len(self._b)} '
                f'malloc_len={lib.np_lb_malloc_len(self._b)}>')

    # -- reader -----------------------------------------------------------

    def _avail(self, op, b, n):
        avail = _lb_len(b)
        if n > avail:
            raise LinkBufferError(f'{op}({n}): only {avail} bytes readable')

    def peek(self, n):
        """The next n bytes as a read-only memoryview, not consumed."""
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        if type(n) is int and 0 < n <= VIEW_THRESHOLD and n <= _lb_len(b):
            _lb_peek_copy(b, _scratch, n)               # the common case
            return memoryview(_unpack(_scratch, n))
        n = _check_n('peek', n)
        self._avail('peek', b, n)
        if not n:
            return memoryview(b'')
        if lib.np_lb_span(b, n, self._span):
            return _span_view(self._span, True)
        out = bytearray(n)
        lib.np_lb_peek_copy(b, ffi.from_buffer(out), n)
        return memoryview(out).toreadonly()

    def next(self, n):
        """The next n bytes as a read-only memoryview, consumed."""
        b = self._b
        if b is None:
            raise ValueError('I/O operation on closed LinkBuffer')
        if type(n) is int and 0 < n <= VIEW_THRESHOLD and n <= _lb_len(b):
            _lb_copy_out(b, _scratch, n)                 # the common case
            return memoryview(_unpack(_scratch, n))
        n = _check_n('next', n)
        self._avail('next', b, n)
        if not n:
            return memoryview(b'')
        if lib.np_lb_span(b, n, self._span):
            view = _span_view(self._span, True)
            lib.np_lb_skip(b, n)
            return view
        out = bytearray(n)
        lib.np_lb_copy_out(b, ffi.from_buffer(out), n)
        return memoryview(out).toreadonly()

    def skip(self, n):
        b = self._buf()
        n = _check_n('skip', n)
        self._avail('skip', b, n)
        if n:
            lib.np_lb_skip(b, n)

    def index(self, delim, start=0):
        """Offset of the first `delim` at or after `start`, or -1."""
        b = self._buf()
        if isinstance(delim, int):
            delim = bytes((delim,))
        delim = bytes(delim)
        if not delim:
            raise ValueError('empty delimiter')
        return lib.np_lb_index(b, delim, len(delim), _check_n('index', start))

    def until(self, delim):
        """Bytes up to and including the first `delim` (bytes or one byte
        as an int), consumed. Raises LinkBufferError, consuming nothing,
        when the delimiter is not in the buffer yet."""
        if isinstance(delim, int):
            delim = bytes((delim,))
        i = self.index(delim)
        if i < 0:
            raise LinkBufferError(f'until({bytes(delim)!r}): delimiter not found '
                                  f'in {len(self)} readable bytes')
        return self.next(i + len(delim))

    def read_bytes(self, n):
        """The next n bytes as a new bytes object (netpoll ReadBinary)."""
        b = self._buf()
        n = _check_n('read_bytes', n)
        self._avail('read_bytes', b, n)
        if not n:
            return b''
        if n <= VIEW_THRESHOLD:
            _lb_copy_out(b, _scratch, n)
            return _unpack(_scratch, n)
        if lib.np_lb_span(b, n, self._span):
            span = self._span
            data = ffi.unpack(span.ptr, n)
            lib.np_node_unref(span.owner)
            lib.np_lb_skip(b, n)
            return data
        out = bytearray(n)
        lib.np_lb_copy_out(b, ffi.from_buffer(out), n)
        return bytes(out)

    def read_string(self, n, encoding='utf-8', errors='strict'):
        """The next n bytes decoded; a UnicodeDecodeError consumes nothing."""
        view = self.peek(n)
        s = str(view, encoding, errors)
        self.skip(n)
        return s

    def read_byte(self):
        """The next byte, as an int."""
        b = self._buf()
        self._avail('read_byte', b, 1)
        lib.np_lb_copy_out(b, _scratch, 1)
        return _scratch[0][0]

    def slice(self, n):
        """A new LinkBuffer holding the next n bytes, sharing their nodes
        (no copy); they are consumed from this one."""
        b = self._buf()
        n = _check_n('slice', n)
        self._avail('slice', b, n)
        out = LinkBuffer()
        if lib.np_lb_slice_into(b, out._b, n) < 0:
            out.close()
            raise MemoryError('LinkBuffer.slice')
        return out

    def release(self):
        """netpoll's Release: give back the memory of what was read. Nodes
        are freed as reading passes them; views keep their own node alive,
        so nothing a view shows is ever invalidated."""
        self._buf()
        collect_pins()

    # -- writer -----------------------------------------------------------

    @property
    def malloc_len(self):
        """Bytes malloc'ed or written but not flushed yet."""
        return lib.np_lb_malloc_len(self._buf())

    def malloc(self, n):
        """n writable bytes at the tail, as a memoryview; they become
        readable at the next flush()."""
        b = self._writable()
        n = _check_n('malloc', n)
        if not n:
            return memoryview(bytearray())
        if not lib.np_lb_malloc_span(b, n, self._span):
            raise MemoryError(f'LinkBuffer.malloc({n})')
        return _span_view(self._span, False)

    def malloc_ack(self, n):
        """Keep the first n of the unflushed bytes, drop the rest."""
        b = self._writable()
        n = _check_n('malloc_ack', n)
        if lib.np_lb_malloc_keep(b, n) < 0:
            raise LinkBufferError(f'malloc_ack({n}): only '
                                  f'{lib.np_lb_malloc_len(b)} bytes malloc\'ed')

    def write_bytes(self, data):
        """Append data (unflushed); 4 KiB or more is linked, not copied."""
        b = self._b
        if b is None or self._input:
            b = self._writable()            # raises
        if type(data) is bytes and len(data) < LINK_THRESHOLD:
            n = len(data)                   # the common case: copy it in
            if n and _lb_put(b, data, n) < n:
                raise MemoryError('LinkBuffer.write_bytes')
            return n
        mv = _as_bytes_view(data)
        n = mv.nbytes
        if n >= LINK_THRESHOLD:
            if lib.np_pins_pending():
                collect_pins()
            cdata, pin = _pin(mv)
            if lib.np_lb_link(b, cdata, n, pin) < 0:
                del _PINS[pin]
                raise MemoryError('LinkBuffer.write_bytes')
        elif n:
            if lib.np_lb_put(b, ffi.from_buffer(mv), n) < n:
                raise MemoryError('LinkBuffer.write_bytes')
        return n

    def write_direct(self, data, remain_cap):
        """Insert data before the last remain_cap malloc'ed bytes (netpoll
        WriteDirect: malloc(a + b) then write_direct(x, b) lays out
        a | x | b)."""
        b = self._writable()
        remain_cap = _check_n('write_direct', remain_cap)
        mv = _as_bytes_view(data)
        n = mv.nbytes
        pin = 0
        if remain_cap > lib.np_lb_malloc_len(b):
            raise LinkBufferError(f'write_direct: remain_cap {remain_cap} > '
                                  f'{lib.np_lb_malloc_len(b)} malloc\'ed bytes')
        if n >= LINK_THRESHOLD:
            cdata, pin = _pin(mv)
        else:
            cdata = ffi.from_buffer(mv)
        if lib.np_lb_write_direct(b, cdata, n, pin, remain_cap) < 0:
            _PINS.pop(pin, None)
            raise MemoryError('LinkBuffer.write_direct')

    def append(self, other):
        """Move all of other's bytes (flushed or not) to this buffer's tail
        as unflushed bytes, without copying; other is left empty."""
        b = self._writable()
        if not isinstance(other, LinkBuffer):
            raise TypeError(f'append() needs a LinkBuffer, not {type(other).__name__}')
        if other is self:
            raise ValueError('cannot append a LinkBuffer to itself')
        ob = other._writable()
        lib.np_lb_append_lb(b, ob)

    def flush(self):
        """Publish everything malloc'ed or written: it becomes readable."""
        b = self._b
        if b is None or self._input:
            b = self._writable()            # raises
        _lb_flush(b)
