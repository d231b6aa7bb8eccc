"""npaio's event loop: asyncio's SelectorEventLoop with stream I/O on the reactor.

``Loop`` keeps everything asyncio's Unix selector loop does (timers,
call_soon_threadsafe, executors, DNS, add_reader, sock_*, UDP, pipes,
subprocesses, signals) and fills in the hooks through which
``base_events.BaseEventLoop`` reaches stream I/O:

- ``_make_socket_transport`` / ``_make_ssl_transport``: connected TCP and Unix
  stream sockets (create_connection, open_connection, connect_accepted_socket,
  create_unix_connection) go to the native reactor;
- ``_accept_connection``: create_server, start_server and create_unix_server
  accept on the loop thread as asyncio does, and the accepted socket goes to a
  poller at once (no Task per connection);
- ``_process_events``: after the selector's own events, one drain of the
  reactor's completions per iteration, dispatched by one handle appended to
  the ready queue (where asyncio puts its own I/O callbacks);
- the selector is wrapped. Inline mode over an epoll selector (the default):
  ``_InlineSelector.select()`` is one C call that waits, does the
  connections' I/O and drains (the selector proper runs only when its own
  fds are ready). Otherwise ``_ReactorSelector``: just before the loop may
  block, the reactor learns it is asleep (pollers then wake it with an
  eventfd; a busy loop gets no wake-ups at all).

It never touches ffi: ``_reactor`` and ``transports`` do.
"""

import asyncio
import errno
import heapq
import math
import os
import selectors
import socket
import sys

from asyncio import (base_events, constants, events, format_helpers, futures, sslproto,
                     tasks, trsock)

from . import _speedups
from ._reactor import BALANCERS, Reactor
from .transports import _NativeSocketTransport

__all__ = ['Loop']

_MAX_POLLERS = 256

# Default pollers: 0, the reactor runs inline on the loop thread. Measured
# (benchmarks/ATTEMPTS.md 37, 2-core machine, 1 KiB echo, 10 connections,
# server pinned to one core): inline 1.03x-1.08x uvloop, one poller thread
# 0.79x, two unpinned 0.58x. A poller thread does the reads and the sends, so
# the loop thread's CPU per request drops to 1.94 us (uvloop's process: 7.36),
# but sharing one core the two threads pay more in hand-offs and switches
# than that saves. Poller threads are for machines with cores to spare.
_DEFAULT_POLLERS = 0

# Default spin_us: inline mode polls up to 50 us before it sleeps
# (poller_epoll.c spin_wait, benchmarks/ATTEMPTS.md 39). 1-connection
# ping-pong, 64 B: 57 -> 20 us round trips, 26 -> 21 us of CPU per request
# (sleeping and waking cost more than polling on this VM); 20 us was as
# good, 10 us too short to catch the next request. It backs off when spins
# find nothing, so an idle loop does not spin, and it spins only while one
# connection sets the pace: with several, sleeping gathers their inputs into
# fewer rounds (ATTEMPTS.md 51). spin_us=0 (or NPAIO_SPIN_US=0) turns it off.
_DEFAULT_SPIN_US = 50
_MAX_SPIN_US = 1_000_000

# call_soon, call_at and call_later (C) build their Handle without Handle.__init__
# (and the get_debug() call in it) when Handle's fields are the ones known
# here (3.10-3.13); otherwise they call the class.
_HANDLE_FIELDS = ('_callback', '_args', '_cancelled', '_loop',
                  '_source_traceback', '_repr', '__weakref__', '_context')
_FAST_HANDLE = getattr(events.Handle, '__slots__', None) == _HANDLE_FIELDS
_FAST_TIMER = (_FAST_HANDLE and
               list(getattr(events.TimerHandle, '__slots__', ())) == ['_scheduled', '_when'])


# base_events._accept_connection's defaults after `backlog`, which its
# retry passes on to _start_serving.
_ACCEPT_TIMEOUTS = ((constants.SSL_HANDSHAKE_TIMEOUT,) if sys.version_info < (3, 11)
                    else (constants.SSL_HANDSHAKE_TIMEOUT, constants.SSL_SHUTDOWN_TIMEOUT))


def _callback_failed(handle, exc):
    """What events.Handle._run does when its callback raised."""
    if sys.version_info >= (3, 13):
        cb = format_helpers._format_callback_source(
            handle._callback, handle._args, debug=handle._loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        'message': f'Exception in callback {cb}',
        'exception': exc,
        'handle': handle,
    }
    if handle._source_traceback:
        context['source_traceback'] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def _env_int(name):
    env = os.environ.get(name, '').strip()
    if not env:
        return None
    try:
        return int(env)
    except ValueError:
        raise ValueError(f'{name} must be an integer >= 0, got {env!r}') from None


def _int_option(value, name, env, default, maximum, zero):
    """An int option: the argument, else the environment variable `env`,
    else `default`; between 0 (which means `zero`) and `maximum`."""
    if value is None:
        value = _env_int(env)
        if value is None:
            value = default
    elif isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{name} must be an int, not {type(value).__name__}')
    if not 0 <= value <= maximum:
        raise ValueError(f'{name} must be between 0 ({zero}) and {maximum}, '
                         f'got {value}')
    return value


def _check_spin(spin_us):
    return _int_option(spin_us, 'spin_us', 'NPAIO_SPIN_US', _DEFAULT_SPIN_US,
                       _MAX_SPIN_US, 'never')


def _check_options(pollers, load_balance):
    pollers = _int_option(pollers, 'pollers', 'NPAIO_POLLERS', _DEFAULT_POLLERS,
                          _MAX_POLLERS, 'inline')
    if load_balance is None:
        load_balance = os.environ.get('NPAIO_LOAD_BALANCE', '').strip() or 'round_robin'
    elif not isinstance(load_balance, str):
        raise TypeError('load_balance must be a str, not '
                        f'{type(load_balance).__name__}')
    if load_balance not in BALANCERS:
        raise ValueError(f'load_balance must be one of {", ".join(BALANCERS)}; '
                         f'got {load_balance!r}')
    return pollers, load_balance


class _ReactorSelector:
    """The loop's selector, plus the reactor's 'about to sleep' handshake."""

    def __init__(self, selector, reactor):
        self._selector = selector
        self._reactor = reactor
        self.register = selector.register
        self.unregister = selector.unregister
        self.modify = selector.modify
        self.get_key = selector.get_key
        self.get_map = selector.get_map

    def select(self, timeout=None):
        if (timeout is None or timeout > 0) and self._reactor.prepare_sleep():
            timeout = 0
        return self._selector.select(timeout)

    def close(self):
        self._selector.close()

    def __getattr__(self, name):
        return getattr(self._selector, name)


class _InlineSelector:
    """Inline mode over an epoll selector: one C call per iteration.

    The poller's epoll set watches the selector's epoll fd, so select() is
    ``reactor.poll()``: it waits with the loop's timeout, does the ready
    connections' I/O and drains their completions; the selector itself runs
    (with timeout 0) only when one of its own fds (listening sockets, the
    self-pipe, add_reader...) is ready."""

    def __init__(self, selector, reactor):
        self._selector = selector
        self._reactor = reactor
        self.register = selector.register
        self.unregister = selector.unregister
        self.modify = selector.modify
        self.get_key = selector.get_key
        self.get_map = selector.get_map

    def select(self, timeout=None):
        if timeout is None:
            ms = -1
        elif timeout <= 0:
            ms = 0
        else:
            # EpollSelector rounds up too: never wake before a timer is due.
            ms = math.ceil(timeout * 1e3)
        if self._reactor.poll(ms):
            return self._selector.select(0)
        return []

    def close(self):
        self._selector.close()

    def __getattr__(self, name):
        return getattr(self._selector, name)


class _ForkedSelector:
    """The selector of a loop inherited through fork(), for close() only.

    An epoll set is shared by parent and child: EPOLL_CTL_DEL in the child
    would unregister the parent's fds too. So here unregister() only forgets
    the key, and close() closes the child's copy of the epoll fd."""

    def __init__(self, selector):
        inner = getattr(selector, '_selector', selector)
        self._inner = inner

    def unregister(self, fileobj):
        return selectors._BaseSelectorImpl.unregister(self._inner, fileobj)

    def close(self):
        self._inner.close()

    def __getattr__(self, name):
        return getattr(self._inner, name)


if _FAST_HANDLE:
    _speedups.setup_loop(
        events.Handle, events.TimerHandle, _InlineSelector, _callback_failed,
        float(base_events.MAXIMUM_SELECT_TIMEOUT),
        tuple(events.Handle.__dict__[f] for f in (
            '_callback', '_args', '_cancelled', '_loop', '_source_traceback',
            '_repr', '_context')), _ReactorSelector)
    if _FAST_TIMER:
        _speedups.setup_timers(
            (events.TimerHandle.__dict__['_scheduled'], events.TimerHandle.__dict__['_when']),
            events, tasks, futures)


class Loop(_speedups.LoopBase, asyncio.SelectorEventLoop):
    """An asyncio event loop whose stream sockets run on native poller threads.

    Options:
    - ``pollers`` (int >= 0; 0 runs the reactor inline on the loop thread,
      no poller threads; default: env NPAIO_POLLERS, else 0);
    - ``load_balance`` ('round_robin', 'random' or 'least_connections';
      default: env NPAIO_LOAD_BALANCE, else round_robin);
    - ``spin_us`` (int >= 0: in inline mode, how long the loop polls for I/O
      before it sleeps, while one connection's traffic sets the pace,
      backing off while polls find nothing; 0 never; default: env
      NPAIO_SPIN_US, else 50).
    """

    # LoopBase (speedups.c) holds _ready, _scheduled, _stopping, _debug,
    # _closed, _selector, _reactor, _dispatch_handle and _clock_resolution
    # as C fields; _closed is True and _reactor None until __init__ runs
    # (bad options raise before it: __del__ has nothing to complain about).
    _inline_poll = False

    def __init__(self, selector=None, *, pollers=None, load_balance=None, spin_us=None):
        pollers, load_balance = _check_options(pollers, load_balance)
        spin_us = _check_spin(spin_us)
        self._reactor = None
        super().__init__(selector)
        self._pid = os.getpid()
        self._reactor = Reactor(pollers, load_balance)
        self._reactor.set_spin(spin_us)
        self._dispatch_handle = events.Handle(self._reactor.dispatch, (), self)
        self._inline_poll = (pollers == 0
                             and type(self._selector) is selectors.EpollSelector)
        if self._inline_poll:
            self._reactor.watch_selector(self._selector.fileno())
            self._selector = _InlineSelector(self._selector, self._reactor)
        else:
            self._selector.register(self._reactor.efd, selectors.EVENT_READ, None)
            self._selector = _ReactorSelector(self._selector, self._reactor)

    # -- statistics -------------------------------------------------------

    def get_stats(self):
        """Per-poller and per-loop counters of the native reactor, as a dict."""
        if self._reactor is None:
            raise RuntimeError('Event loop is closed')
        return self._reactor.stats()

    # -- scheduling ------------------------------------------------------

    # call_soon() is LoopBase's (speedups.c): the Handle built in C with
    # the fields Handle.__init__ sets with debug off, appended to _ready.
    # What it leaves to Python:

    def _call_soon_slow(self, callback, *args, context=None):
        """base_events.call_soon, for debug mode, a closed loop and unusual
        arguments (written out: through super() the source traceback would
        gain a frame)."""
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, 'call_soon')
        handle = self._call_soon(callback, args, context)
        if handle._source_traceback:
            del handle._source_traceback[-1]
        return handle

    # call_at, call_later, create_task, create_future, time, get_debug and
    # _timer_handle_cancelled are LoopBase's (speedups.c): base_events' own,
    # in C, with debug off. What they leave to Python:

    def _call_later_slow(self, delay, callback, *args, context=None):
        """Debug mode, a closed loop, bad arguments: base_events' call_later
        (written out: through super() the source traceback would differ)."""
        if delay is None:
            raise TypeError('delay must not be None')
        timer = self.call_at(self.time() + delay, callback, *args, context=context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        return timer

    def _call_at_slow(self, when, callback, *args, context=None):
        """Debug mode, a closed loop, bad arguments: base_events' call_at."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, 'call_at')
        timer = events.TimerHandle(when, callback, args, self, context)
        if timer._source_traceback:
            del timer._source_traceback[-1]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def _create_future_slow(self):
        """Without setup_timers (unknown Handle slots): base_events'."""
        return futures.Future(loop=self)

    def _create_task_slow(self, coro, **kwargs):
        """A task factory, debug mode, a closed loop, other arguments:
        base_events' create_task."""
        if self._task_factory is None and self._debug and not self._closed:
            # Written out: through super() the source traceback would end here.
            task = tasks.Task(coro, loop=self, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        return super(_speedups.LoopBase, self).create_task(coro, **kwargs)

    # -- the hooks of base_events ------------------------------------------

    # _run_once() is LoopBase's (speedups.c): base_events' _run_once step
    # for step (not in debug mode), the ready handles run in C, no time()
    # calls without timers. In inline mode over the epoll selector
    # np_reactor_poll() (GIL released while it waits) replaces
    # selector.select(), and the selector proper and _process_events run
    # only when its fd fired. What it leaves to Python:

    def _run_once_slow(self):
        """Debug mode, a selector replaced after __init__: asyncio's own."""
        return super(_speedups.LoopBase, self)._run_once()

    def _prune_timers(self):
        """base_events._run_once's first step: drop cancelled timers."""
        scheduled = self._scheduled
        sched_count = len(scheduled)
        if (sched_count > base_events._MIN_SCHEDULED_TIMER_HANDLES and
            self._timer_cancelled_count / sched_count >
                base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            # Remove delayed calls that were cancelled if their number
            # is too high
            new_scheduled = []
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    new_scheduled.append(handle)
            heapq.heapify(new_scheduled)
            self._scheduled = new_scheduled
            self._timer_cancelled_count = 0
        else:
            # Remove delayed calls that were cancelled from head of queue.
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                handle = heapq.heappop(scheduled)
                handle._scheduled = False

    def _process_events(self, event_list):
        if self._inline_poll:
            # select() already drained (reactor.poll).
            super()._process_events(event_list)
            if self._reactor._pending:
                self._ready.append(self._dispatch_handle)
            return
        efd_ready = 0
        for i, (key, _) in enumerate(event_list):
            if key.data is None:
                efd_ready = 1
                del event_list[i]
                break
        super()._process_events(event_list)
        if self._reactor.drain(efd_ready):
            self._ready.append(self._dispatch_handle)

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        if not isinstance(sock, socket.socket) or type(sock.fileno()) is not int:
            # Not a socket the C core can own (a test's mock, say: its
            # fileno() may well be 1, and the core closes what it owns):
            # asyncio's own selector transport, as on the stock loop.
            return super()._make_socket_transport(sock, protocol, waiter,
                                                  extra=extra, server=server)
        return _NativeSocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None,
                            *, server_side=False, server_hostname=None,
                            extra=None, server=None, **timeouts):
        timeouts = {k: v for k, v in timeouts.items() if v is not None}
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            **timeouts)
        _NativeSocketTransport(self, rawsock, ssl_protocol, extra=extra,
                               server=server)
        return ssl_protocol._app_transport

    def _accept_connection(self, protocol_factory, sock, sslcontext=None,
                           server=None, backlog=100, *args):
        """asyncio's accept handler, but a plain connection gets its native
        transport at once instead of through a Task per connection.

        Accepting stays on the loop thread, as in asyncio and uvloop: the
        server side then exists in the same iteration as in asyncio (servers'
        wait_closed(), tests and shutdown logic count on that), for one
        accept4 + fcntl + epoll_ctl per connection. The pollers do the I/O."""
        if sslcontext:
            return super()._accept_connection(
                protocol_factory, sock, sslcontext, server, backlog, *args)
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return None
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE,
                                 errno.ENOBUFS, errno.ENOMEM):
                    # asyncio's answer: log, stop accepting, retry later.
                    self.call_exception_handler({
                        'message': 'socket.accept() out of system resource',
                        'exception': exc,
                        'socket': trsock.TransportSocket(sock),
                    })
                    self._remove_reader(sock.fileno())
                    self.call_later(constants.ACCEPT_RETRY_DELAY,
                                    self._start_serving, protocol_factory,
                                    sock, sslcontext, server, backlog,
                                    *(args or _ACCEPT_TIMEOUTS))
                else:
                    raise  # The event loop will catch, log and ignore it.
            else:
                self._reactor.accepts += 1
                self._accept_native(protocol_factory, conn, addr, server)
        return None

    def _accept_native(self, protocol_factory, conn, addr, server):
        protocol = transport = None
        try:
            protocol = protocol_factory()
            transport = _NativeSocketTransport(
                self, conn, protocol, None, {'peername': addr}, server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if self._debug:
                context = {'message': 'Error on transport creation for '
                                      'incoming connection',
                           'exception': exc}
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.call_exception_handler(context)
            if transport is not None:
                transport.abort()
            else:
                conn.close()

    def run_forever(self):
        # Writes made while the loop runs are sent once per iteration (by
        # the pollers, or inline at the next poll); outside it, at once.
        # Leaving sends what the last iteration queued.
        reactor = self._reactor
        if reactor is not None:
            reactor.set_running(True)
        try:
            return super().run_forever()
        finally:
            if reactor is not None and reactor.r is not None:
                reactor.set_running(False)

    # -- closing ----------------------------------------------------------

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        reactor, self._reactor = self._reactor, None
        if self._pid != os.getpid():
            # Closing a loop inherited through fork(): touch nothing shared.
            self._selector = _ForkedSelector(self._selector)
        if reactor is not None:
            if not self._inline_poll:
                self._selector.unregister(reactor.efd)
            reactor.close()
        super().close()
