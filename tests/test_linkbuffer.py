"""npaio.LinkBuffer against a bytearray model (hypothesis), and view lifetimes.

The model: `readable` (flushed bytes) and `unflushed` (malloc'ed or written,
not flushed yet). Every verb is applied to both and they must agree byte for
byte; every read view handed out is kept and must still show its bytes at the
end, after release(), close() and allocation churn.
"""
import gc
import random

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine, initialize, invariant, precondition, rule)

import npaio  # noqa: E402
from npaio import LinkBuffer, LinkBufferError  # noqa: E402


def live_nodes():
    return npaio.native_counters()['nodes']


# Sizes around the link threshold (4 KiB) and the node size (4 KiB) matter.
sizes = st.one_of(st.integers(0, 64), st.integers(4000, 4200),
                  st.integers(0, 20000))
payload = st.one_of(st.binary(max_size=64), st.binary(min_size=4090, max_size=4200),
                    st.integers(0, 20000).map(lambda n: bytes(i * 7 % 251 for i in range(n))))


class LinkBufferMachine(RuleBasedStateMachine):
    @initialize()
    def start(self):
        gc.collect()
        self.nodes_before = live_nodes()
        self.buf = LinkBuffer()
        self.readable = bytearray()
        self.unflushed = bytearray()
        self.views = []             # (memoryview, expected bytes)

    def keep(self, view, expected):
        assert bytes(view) == expected
        self.views.append((view, bytes(expected)))

    # -- writer -----------------------------------------------------------

    @rule(data=payload)
    def write_bytes(self, data):
        assert self.buf.write_bytes(data) == len(data)
        self.unflushed += data

    @rule(data=payload, kind=st.sampled_from(['bytearray', 'memoryview']))
    def write_bytes_other_types(self, data, kind):
        obj = bytearray(data) if kind == 'bytearray' else memoryview(data)
        self.buf.write_bytes(obj)
        self.unflushed += data

    @rule(n=sizes, seed=st.integers(0, 255))
    def malloc(self, n, seed):
        view = self.buf.malloc(n)
        assert len(view) == n and not view.readonly
        data = bytes((seed + i) % 256 for i in range(n))
        view[:] = data
        self.unflushed += data

    @rule(k=st.integers(0, 30000))
    def malloc_ack(self, k):
        if k > len(self.unflushed):
            with pytest.raises(LinkBufferError):
                self.buf.malloc_ack(k)
            return
        self.buf.malloc_ack(k)
        del self.unflushed[k:]

    @rule(data=payload, frac=st.floats(0, 1.2))
    def write_direct(self, data, frac):
        remain = int(len(self.unflushed) * frac)
        if remain > len(self.unflushed):
            with pytest.raises(LinkBufferError):
                self.buf.write_direct(data, remain)
            return
        self.buf.write_direct(data, remain)
        at = len(self.unflushed) - remain
        self.unflushed[at:at] = data

    @rule(flushed=payload, pending=payload, readfirst=st.integers(0, 100))
    def append(self, flushed, pending, readfirst):
        other = LinkBuffer()
        other.write_bytes(flushed)
        other.flush()
        readfirst = min(readfirst, len(flushed))
        other.skip(readfirst)
        other.write_bytes(pending)
        self.buf.append(other)
        assert len(other) == 0 and other.malloc_len == 0
        other.close()
        self.unflushed += flushed[readfirst:] + pending

    @rule()
    def flush(self):
        self.buf.flush()
        self.readable += self.unflushed
        self.unflushed.clear()

    # -- reader -----------------------------------------------------------

    def too_much(self, n):
        return n > len(self.readable)

    @rule(n=sizes)
    def next(self, n):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.next(n)
            return
        v = self.buf.next(n)
        assert v.readonly
        self.keep(v, self.readable[:n])
        del self.readable[:n]

    @rule(n=sizes)
    def peek(self, n):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.peek(n)
            return
        self.keep(self.buf.peek(n), self.readable[:n])

    @rule(n=sizes)
    def skip(self, n):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.skip(n)
            return
        self.buf.skip(n)
        del self.readable[:n]

    @rule(n=sizes)
    def read_bytes(self, n):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.read_bytes(n)
            return
        got = self.buf.read_bytes(n)
        assert type(got) is bytes and got == self.readable[:n]
        del self.readable[:n]

    @rule(n=st.integers(0, 300))
    def read_string(self, n):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.read_string(n, 'latin-1')
            return
        assert self.buf.read_string(n, 'latin-1') == self.readable[:n].decode('latin-1')
        del self.readable[:n]

    @rule()
    def read_byte(self):
        if not self.readable:
            with pytest.raises(LinkBufferError):
                self.buf.read_byte()
            return
        assert self.buf.read_byte() == self.readable[0]
        del self.readable[:1]

    @rule(delim=st.one_of(st.binary(min_size=1, max_size=3),
                          st.integers(0, 255)))
    def until(self, delim):
        d = bytes((delim,)) if isinstance(delim, int) else delim
        i = self.readable.find(d)
        if i < 0:
            with pytest.raises(LinkBufferError):
                self.buf.until(delim)
            return
        end = i + len(d)
        self.keep(self.buf.until(delim), self.readable[:end])
        del self.readable[:end]

    @rule(n=sizes, start=st.integers(0, 30000), delim=st.binary(min_size=1, max_size=4))
    def index(self, n, start, delim):
        assert self.buf.index(delim, start) == (
            self.readable.find(delim, start) if start + len(delim) <= len(self.readable) else -1)

    @rule(n=sizes, read=st.integers(0, 5000))
    def slice(self, n, read):
        if self.too_much(n):
            with pytest.raises(LinkBufferError):
                self.buf.slice(n)
            return
        s = self.buf.slice(n)
        expected = self.readable[:n]
        del self.readable[:n]
        assert len(s) == n
        read = min(read, n)
        self.keep(s.next(read), expected[:read])
        assert s.read_bytes(n - read) == expected[read:]
        s.close()

    @rule()
    def release(self):
        self.buf.release()

    @invariant()
    def lengths_agree(self):
        assert len(self.buf) == len(self.readable)
        assert self.buf.malloc_len == len(self.unflushed)

    def teardown(self):
        self.buf.close()
        with pytest.raises(ValueError):
            len(self.buf)
        # Churn: fresh buffers take the freed nodes and overwrite them.
        for _ in range(20):
            b = LinkBuffer()
            m = b.malloc(8000)
            m[:] = b'\xee' * 8000
            b.flush()
            b.close()
        del m
        for view, expected in self.views:
            assert bytes(view) == expected
        self.views.clear()
        view = None
        gc.collect()
        assert live_nodes() == self.nodes_before


TestLinkBufferModel = LinkBufferMachine.TestCase
TestLinkBufferModel.settings = settings(max_examples=150, stateful_step_count=40,
                                        deadline=None)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), nchunks=st.integers(2000, 4000),
       reads=st.lists(st.integers(1, 5000), max_size=60))
def test_thousands_of_nodes(seed, nchunks, reads):
    """A buffer of thousands of nodes (one per appended buffer): reads that
    span many nodes agree with the model."""
    rnd = random.Random(seed)
    chunks = [rnd.randbytes(rnd.randint(1, 12)) for _ in range(nchunks)]
    before = live_nodes()
    buf = LinkBuffer()
    for c in chunks:
        part = LinkBuffer()
        part.write_bytes(c)
        buf.append(part)
        part.close()
    buf.flush()
    model = b''.join(chunks)
    assert live_nodes() - before >= len(chunks)
    assert len(buf) == len(model)
    pos = 0
    kept = []
    v = None
    for i, n in enumerate(reads):
        n = min(n, len(model) - pos)
        if i % 3 == 0:
            v = buf.next(n)
            kept.append((v, model[pos:pos + n]))
        elif i % 3 == 1:
            s = buf.slice(n)
            assert s.read_bytes(n) == model[pos:pos + n]
            s.close()
        else:
            assert buf.index(model[pos + n - 1:pos + n + 2]) <= n - 1
            buf.skip(n)
        pos += n
    assert buf.read_bytes(len(buf)) == model[pos:]
    buf.close()
    for v, exp in kept:
        assert bytes(v) == exp
    del kept, v
    gc.collect()
    assert live_nodes() == before


def test_views_outlive_release_close_and_churn():
    before = live_nodes()
    buf = LinkBuffer()
    big = bytes(range(256)) * 400            # linked, not copied
    buf.write_bytes(b'head:')
    buf.write_bytes(big)
    m = buf.malloc(6000)
    m[:] = b'M' * 6000
    buf.flush()
    v1 = buf.next(5)
    v2 = buf.peek(1000)
    s = buf.slice(2000)
    v3 = s.next(2000)
    buf.release()
    del big                                   # the pin keeps its memory
    buf.close()
    s.close()
    for _ in range(200):
        b = LinkBuffer()
        b.malloc(4000)[:] = b'\x00' * 4000
        b.write_bytes(b'\xff' * 9000)
        b.flush()
        b.skip(len(b))
        b.close()
    assert bytes(v1) == b'head:'
    assert bytes(v2) == (bytes(range(256)) * 4)[:1000]
    assert bytes(v3) == (bytes(range(256)) * 8)[:2000]
    with pytest.raises(ValueError):
        buf.next(1)
    with pytest.raises(ValueError):
        buf.write_bytes(b'x')
    with pytest.raises(ValueError):
        s.slice(0)
    del v1, v2, v3, m
    gc.collect()
    npaio.linkbuffer.collect_pins()
    assert live_nodes() == before
    assert not npaio.linkbuffer._PINS


def test_counters_show_allocs_and_frees():
    c0 = npaio.native_counters()
    buf = LinkBuffer()
    buf.write_bytes(b'x' * 10)
    buf.write_bytes(b'y' * 5000)
    buf.flush()
    c1 = npaio.native_counters()
    assert c1['node_allocs'] - c0['node_allocs'] == 2
    assert c1['nodes'] - c0['nodes'] == 2
    buf.close()
    c2 = npaio.native_counters()
    assert c2['node_frees'] - c0['node_frees'] == 2
    assert c2['nodes'] == c0['nodes']


def test_errors_are_clear():
    buf = LinkBuffer()
    buf.write_bytes(b'abc')
    with pytest.raises(LinkBufferError, match=r'next\(4\): only 0 bytes'):
        buf.next(4)                             # not flushed yet
    buf.flush()
    with pytest.raises(LinkBufferError, match=r'only 3 bytes'):
        buf.peek(4)
    with pytest.raises(ValueError):
        buf.next(-1)
    with pytest.raises(TypeError):
        buf.next(1.5)
    with pytest.raises(LinkBufferError):
        buf.until(b'z')
    assert len(buf) == 3                        # nothing consumed
    with pytest.raises(ValueError):
        buf.until(b'')
    with pytest.raises(TypeError):
        buf.append(b'abc')
    with pytest.raises(ValueError):
        buf.append(buf)
    with pytest.raises(LinkBufferError):
        buf.malloc_ack(1)
    with pytest.raises(UnicodeDecodeError):
        LinkBuffer_with(b'\xff\xfe').read_string(2)
    assert buf.read_bytes(3) == b'abc'
    buf.close()
    buf.close()                                 # idempotent


def LinkBuffer_with(data):
    b = LinkBuffer()
    b.write_bytes(data)
    b.flush()
    return b
