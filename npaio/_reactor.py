"""The Python face of the C core: pollers, balancer, drain, dispatch, stats.

Owns the ``np_reactor`` of one loop and the map from connection id to
transport.
It is the only module besides ``transports`` that calls ``lib``.

Hot path, per loop iteration: inline mode over an epoll selector (the
default) makes ONE call to ``np_reactor_poll()`` (from the loop's C
``_run_once``, npaio/_native/speedups.c; ``poll()`` here in debug mode),
which waits, does the I/O and drains; otherwise ``prepare_sleep()`` (only
when the loop may block) and ``drain()``, one cffi call each. The drain fills
a preallocated array of 24-byte records and copies the connections' input
into one arena; ``dispatch()`` (ReactorBase's, in C) reads them in place. It
runs as ONE handle appended to the loop's ready queue, so I/O callbacks come
after the callbacks that were ready before them, exactly where asyncio's
selector loop puts its ``_read_ready`` handles (a task that awaited
create_connection() resumes before the first data_received).

Records name connections by id, not address: between the drain and the
dispatch a connection can be closed, freed and its address reused.
"""

import os

from ._np import ffi, lib
from . import _speedups

__all__ = ['Reactor', 'ffi', 'lib', 'native_counters', 'BALANCERS']

BALANCERS = {
    'round_robin': lib.NP_LB_ROUND_ROBIN,
    'random': lib.NP_LB_RANDOM,
    'least_connections': lib.NP_LB_LEAST_CONN,
}

_poll = lib.np_reactor_poll     # a global: no getattr on cffi's Lib per call
_MAX_RECORDS = 1024
_ARENA_SIZE = 1 << 20
assert ffi.sizeof('np_record') == _speedups.record_size()

_READ = lib.NP_EV_READ
_EOF = lib.NP_EV_EOF
_CLOSED = lib.NP_EV_CLOSED
_DRAINED = lib.NP_EV_DRAINED
_WRITE_ERROR = lib.NP_EV_WRITE_ERROR
_RARE = _EOF | _CLOSED | _DRAINED

_REACTOR_STATS = ('drains', 'completions', 'loop_wakeups', 'direct_writes',
                  'queued_writes', 'throttles', 'sleeps', 'arena_full',
                  'handed_writes', 'poller_kicks')
_POLLER_STATS = ('connections', 'events', 'bytes_read', 'bytes_written',
                 'wakeups', 'reads', 'writes', 'spins', 'spin_hits', 'polls')
# Live objects, then two running totals (nodes ever allocated and freed).
_COUNTERS = ('conns', 'nodes', 'reactors', 'threads', 'node_bytes',
             'node_allocs', 'node_frees')


def native_counters():
    """Process-wide native objects: live connections, LinkBuffer nodes
    (and their bytes), reactors and poller threads, plus the running totals
    of nodes allocated and freed."""
    out = ffi.new('uint64_t[]', lib.NP_GLOBAL_COUNTERS)
    lib.np_native_counters(out)
    return {name: int(out[i]) for i, name in enumerate(_COUNTERS)}


def _dispatch_record(tr, flags, err, data):
    """One completion record that is not plain data for a ``_direct``
    transport: ``data`` is its bytes or None."""
    if data is not None:
        tr._on_data(data)
    elif flags & _READ:
        tr._on_input()      # no-copy: the data stayed in C
    if flags & _RARE:
        if flags & _EOF:
            if flags & _READ:
                # asyncio's selector loop sees EOF one iteration
                # after the data (the next recv() returns b'').
                tr._loop.call_soon(tr._on_eof)
            else:
                tr._on_eof()
        if flags & _DRAINED:
            tr._on_drained()
        if flags & _CLOSED:
            tr._on_closed(err, flags & _WRITE_ERROR)


_speedups.set_native(*[int(ffi.cast('uintptr_t', ffi.addressof(lib, name)))
                       for name in ('np_conn_write', 'np_reactor_poll',
                                    'np_record_take', 'np_reactor_kick')],
                     _dispatch_record)


class Reactor(_speedups.ReactorBase):
    """One loop's native reactor: P poller threads and the completion queue.

    ReactorBase (speedups.c) holds ``_pending``, ``_transports`` and the
    addresses ``_r_addr``, ``_pollbuf_addr``, ``_pollbuf_none_addr``,
    ``_records_addr``, ``_arena_addr`` as C fields, and is ``dispatch()``:
    plain data for a transport whose ``_direct`` holds goes straight to
    protocol.data_received, with _data_received's error handling; every
    other record comes to _dispatch_record above."""

    def __init__(self, pollers, balance):
        err = ffi.new('int *')
        r = lib.np_reactor_new(pollers, BALANCERS[balance], err)
        if r == ffi.NULL:
            raise OSError(err[0], 'npaio: cannot start the reactor: '
                          + os.strerror(err[0]))
        self.r = r
        self.efd = lib.np_reactor_efd(r)
        self.pollers = pollers                  # as asked (0: inline)
        self.npollers = lib.np_reactor_npollers(r)  # poller rounds with stats
        self.balance = balance
        self.spin_us = 0
        self._records = ffi.new('np_record[]', _MAX_RECORDS)
        self._arena = ffi.new('char[]', _ARENA_SIZE)
        # An in-place record's connection (its data was not copied to the
        # arena; dispatch() copies it straight into the bytes it hands over).
        self._conns = ffi.new('np_conn *[]', _MAX_RECORDS)
        # poll()'s buffers as one struct; the second takes no records (for
        # a poll while a dispatch is still due).
        self._pollbuf = ffi.new('np_pollbuf *', (self._records, _MAX_RECORDS,
                                                 self._arena, _ARENA_SIZE, self._conns))
        self._pollbuf_none = ffi.new('np_pollbuf *', (self._records, 0,
                                                      self._arena, _ARENA_SIZE, ffi.NULL))
        # For speedups.c (LoopBase._run_once, dispatch): the same as ints.
        self._r_addr = int(ffi.cast('uintptr_t', r))
        self._pollbuf_addr = int(ffi.cast('uintptr_t', self._pollbuf))
        self._pollbuf_none_addr = int(ffi.cast('uintptr_t', self._pollbuf_none))
        self._records_addr = int(ffi.cast('uintptr_t', self._records))
        self._arena_addr = int(ffi.cast('uintptr_t', self._arena))
        self._transports = {}          # connection id -> transport
        self._pending = 0              # records drained, not yet dispatched
        self.accepts = 0               # connections the loop accepted

    # -- connections ------------------------------------------------------

    def add_transport(self, conn, transport):
        cid = lib.np_conn_id(conn)
        self._transports[cid] = transport
        return cid

    def remove_transport(self, cid):
        self._transports.pop(cid, None)

    # -- the loop's two calls per iteration -------------------------------

    def prepare_sleep(self):
        return lib.np_reactor_prepare_sleep(self.r)

    def set_spin(self, us):
        lib.np_reactor_set_spin(self.r, us)
        self.spin_us = us

    def set_running(self, running):
        lib.np_reactor_set_running(self.r, 1 if running else 0)

    def drain(self, efd_ready):
        """Fetch what the pollers finished; returns how many records wait."""
        if self._pending:
            # Records an exception left undispatched: they go first (the
            # eventfd stays readable, so the next select returns at once).
            return self._pending
        n = lib.np_reactor_drain(self.r, self._records, _MAX_RECORDS,
                                 self._arena, _ARENA_SIZE, efd_ready)
        self._pending = n
        return n

    def watch_selector(self, fd):
        """Inline mode: let poll() watch the loop selector's epoll fd."""
        err = lib.np_reactor_watch_selector(self.r, fd)
        if err:
            raise OSError(err, os.strerror(err))

    def poll(self, timeout_ms):
        """Inline mode, the loop's select(): wait, do the I/O, drain (one
        cffi call). Returns True if the loop's own selector has events."""
        if self._pending:
            # A dispatch still to run (an exception left it in the ready
            # queue): keep its records, only poll.
            return _poll(self.r, self._pollbuf_none, timeout_ms) & 1
        n = _poll(self.r, self._pollbuf, timeout_ms)
        self._pending = n >> 1
        return n & 1

    # -- statistics and teardown ------------------------------------------

    def stats(self):
        per = len(_POLLER_STATS)
        cap = len(_REACTOR_STATS) + per * self.npollers
        out = ffi.new('uint64_t[]', cap)
        lib.np_reactor_stats(self.r, out, cap)
        vals = [int(out[i]) for i in range(cap)]
        loop = dict(zip(_REACTOR_STATS, vals))
        loop['accepts'] = self.accepts
        loop['completions_per_drain'] = (
            loop['completions'] / loop['drains'] if loop['drains'] else 0.0)
        pollers = []
        for p in range(self.npollers):
            base = len(_REACTOR_STATS) + p * per
            pollers.append(dict(zip(_POLLER_STATS, vals[base:base + per])))
        return {'pollers': pollers, 'loop': loop,
                'config': {'pollers': self.pollers, 'inline': self.pollers == 0,
                           'load_balance': self.balance, 'spin_us': self.spin_us}}

    def close(self):
        """Stop the pollers and free every native object.

        Transports still open lose their connection silently (the loop is
        closing: no callback can run any more), like uvloop's handles."""
        if self.r is None:
            return
        if self._pending:
            # Records never dispatched: in-place ones hold a connection.
            lib.np_pollbuf_release(self._pollbuf, self._pending)
            self._pending = 0
        for tr in list(self._transports.values()):
            tr._loop_closing()
        self._transports.clear()
        self._r_addr = 0
        lib.np_reactor_free(self.r)
        self.r = None

