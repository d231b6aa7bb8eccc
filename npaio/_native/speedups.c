/* speedups.c -- npaio._speedups: the loop thread's per-request steps, in C.
 *
 * What it owns: the steps that run per request or per ready callback on the
 * loop thread, where callgrind showed Python bytecode and cffi argument
 * conversion costing more than the C core's own work (benchmarks/ATTEMPTS.md,
 * attempts 19-22):
 *   - TransportBase.write(bytes, bytearray or memoryview): np_conn_write()
 *     called directly, without cffi's argument conversion and its GIL
 *     release/re-take;
 *   - ReactorBase.dispatch(): completion records to
 *     protocol.data_received(bytes), or a BufferedProtocol's
 *     get_buffer/buffer_updated, or for asyncio's own streams straight into
 *     the StreamReader (stream_feed.c);
 *   - LoopBase._run_once(): base_events' loop iteration (in inline mode one
 *     np_reactor_poll() call, GIL released while it waits, skipped in the
 *     iteration right after a dispatch, whose woken Tasks run first),
 *     running the ready asyncio Handles' bodies (Handle._run) itself;
 *   - LoopBase.call_soon(), call_at(), call_later(): the Handle or
 *     TimerHandle built without its __init__ (Handles reused from a small
 *     pool), the timers kept in heapq's heap order by heapq's algorithm with
 *     TimerHandle's `<` done in C;
 *   - LoopBase.time(), get_debug(), create_task(), create_future(),
 *     _timer_handle_cancelled() and TransportBase.is_closing(): one Python
 *     frame each before, called per request by asyncio's Task and Future,
 *     streams and uvicorn (ATTEMPTS.md 40).
 * Everything that is not the common case calls back into the Python methods
 * that do it (Transport._write_slow/_write_done/_hold_rest,
 * _reactor._dispatch_record, Handle._run, loop._callback_failed,
 * Loop._run_once_slow, Loop._call_soon_slow, _call_at_slow,
 * _call_later_slow, _create_task_slow, Loop._prune_timers), so
 * transports.py and loop.py remain the readable reference of what happens;
 * this file only skips frames.
 *
 * What we learned: C wins only where it does not look attributes up. And
 * callgrind counts no system calls: a change that saves instructions but
 * adds one per request loses (Future() without loop=: ~670 instructions
 * fewer, two getpid() calls more, since 3.10-3.11's _asyncio checks the
 * running loop's pid; strace -c per request is the second check). On this
 * machine the kernel is 60-90 % of a server's CPU per request (the CPU
 * table's kernel column), the same work for every loop.
 * PyObject_GetAttr on an instance costs ~100-150 instructions; 3.11+'s
 * specialized LOAD_ATTR ~10. So the loop's and reactor's hot attributes are
 * C fields (LoopBase, ReactorBase: member descriptors, which asyncio's Python
 * code reads and writes as before) and Handle slots are used at their
 * offsets. Transports cannot have a C layout (asyncio's transport classes
 * have __slots__ of their own), but _NativeSocketTransport keeps the three
 * attributes C reads per request -- `_wconn`, `_direct` (the read mode and
 * the protocol together) and `_closing` -- in __slots__ too, read here at
 * their offsets (tr_field). Each PyObject_GetAttr they replace cost ~190
 * instructions, most of it the probe of the instance's key table: reading
 * the instance __dict__ directly saved only 33 of 4,232 per 1 KiB echo
 * request (stop 10, not kept); the slots took 1 KiB echo from 4,253 to
 * 3,863 with `_direct` merged (ATTEMPTS.md 48, 50).
 *
 * Threads: the loop thread only, with the GIL held. Unlike the C core it
 * touches Python objects; no poller thread ever calls it. np_conn_write() is
 * non-blocking; it takes the connection's mutex, which pollers hold only for
 * short non-blocking sections and never together with the GIL.
 *
 * The C core stays one copy, in npaio._np: _reactor.py hands this module the
 * addresses of np_conn_write and np_reactor_poll (cffi's ffi.addressof)
 * through set_native(); a Reactor keeps its np_reactor, np_pollbuf, records
 * and arena addresses in ReactorBase's fields (`_r_addr`, ...; `_r_addr` is
 * 0 once the reactor is freed). Transports publish their np_conn address as
 * the int `_wconn`, 0 whenever write() must take the Python path (no
 * connection, connection lost, write_eof); transports.py clears it before
 * the connection is released, so a stale address is never used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stddef.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "np.h"
#include "stream_feed.h"

typedef int64_t (*conn_write_fn)(np_conn *, const char *, size_t);
typedef int (*reactor_poll_fn)(np_reactor *, np_pollbuf *, int);
typedef void (*record_take_fn)(np_conn *, char *, size_t);
typedef void (*reactor_kick_fn)(np_reactor *);
static conn_write_fn conn_write;
static reactor_poll_fn reactor_poll;
static record_take_fn record_take;
static reactor_kick_fn reactor_kick;

static PyObject *s_write_slow, *s_write_done,
    *s_data_received, *s_fatal_error, *s_cancelled, *s_run, *s_popleft, *s_dr_failed,
    *s_selector, *s_process_events, *s_select, *s_append, *s_appendleft, *s_time, *s_when,
    *s_run_once_slow, *s_call_soon_slow, *s_prune_timers, *s_context_kw, *s_lt, *s_scheduled,
    *s_get_buffer, *s_buffer_updated, *s_hold_rest, *s_minus_one, *s_gb_failed, *s_bu_failed;

/* Set once by setup_loop(): asyncio's classes and helpers the loop uses. */
static PyTypeObject *handle_type, *timer_type, *inline_selector_type, *reactor_selector_type;
static PyObject *callback_failed, *max_select_timeout, *dispatch_record;
static PyTypeObject *deque_type;        /* collections.deque */
static PyObject *deque_popleft;         /* its popleft method descriptor */
static PyObject *deque_append;          /* and its append */
/* Where Handle's slots live in a Handle (their member descriptors' offsets,
 * taken by setup_loop; handle_type keeps the descriptors alive): run_ready
 * and call_soon read and write them directly, as the descriptors themselves
 * do. Valid for Handle and TimerHandle objects only (checked by exact type). */
enum { F_CALLBACK, F_ARGS, F_CANCELLED, F_LOOP, F_SOURCE_TB, F_REPR, F_CONTEXT,
       F_NFIELDS };
static Py_ssize_t handle_off[F_NFIELDS];
#define HFIELD(h, f) (*(PyObject **)((char *)(h) + handle_off[f]))

/* npaio.Loop's hot attributes live in LoopBase's C fields: asyncio's Python
 * code reads and writes them as usual (member descriptors, which 3.11+
 * specializes like __slots__), and C reads them without a lookup. */
#define LOOP_FIELDS(X) X(ready) X(scheduled) X(stopping) X(debug) X(closed) \
    X(selector) X(reactor) X(dispatch_handle) X(clock_resolution) X(task_factory)
#define LOOP_FIELD_DECL(f) PyObject *f;
typedef struct {
    PyObject_HEAD
    LOOP_FIELDS(LOOP_FIELD_DECL)        /* attribute "_" #f */
    Py_ssize_t timer_cancelled_count;   /* _timer_cancelled_count */
    int dispatched;     /* inline: the last iteration's poll brought records */
} LoopObject;

/* Likewise _reactor.Reactor's: the np_reactor and its buffers (addresses),
 * records drained and not yet dispatched, and the connection id -> transport
 * map. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t pending;
    unsigned long r_addr, pollbuf_addr, pollbuf_none_addr, records_addr, arena_addr;
    PyObject *transports;
} ReactorObject;

static PyTypeObject ReactorBase_Type;

/* The exception being handled, as `except BaseException as exc:` sees it:
 * normalized, with its traceback attached. Returns a new reference. */
static PyObject *
fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
        Py_DECREF(tb);
    }
    Py_XDECREF(type);
    return value;
#endif
}

/* SystemExit and KeyboardInterrupt pass through every handler, as in asyncio. */
static int
must_propagate(void)
{
    return PyErr_ExceptionMatches(PyExc_SystemExit)
        || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
}

/* Call handler(exc-args...) while `exc` is the exception being handled
 * (sys.exc_info() inside it, as inside an except block). Steals nothing. */
static PyObject *
call_in_except(PyObject *exc, PyObject *callable, PyObject *const *args, size_t nargs,
               PyObject *method_self)
{
    PyObject *ot, *ov, *otb;
    PyErr_GetExcInfo(&ot, &ov, &otb);
    Py_INCREF(exc);
    Py_INCREF(Py_TYPE(exc));
    PyErr_SetExcInfo((PyObject *)Py_TYPE(exc), exc, PyException_GetTraceback(exc));
    PyObject *res;
    if (method_self != NULL) {
        PyObject *margs[3] = {method_self, args[0], args[1]};
        res = PyObject_VectorcallMethod(callable, margs, 1 + nargs, NULL);
    } else {
        res = PyObject_Vectorcall(callable, args, nargs, NULL);
    }
    PyErr_SetExcInfo(ot, ov, otb);
    return res;
}

/* -- transport fields ------------------------------------------------------- */

/* _NativeSocketTransport's slots _wconn, _direct and _closing: their
 * offsets, taken by setup_transport from the member descriptors (the type
 * keeps them alive). tr_field() reads one at its offset in an instance of
 * that class (or a subclass), else -- or while the slot is unset -- does
 * what Python does (getattr). New reference, or NULL with an exception. */
enum { TR_WCONN, TR_DIRECT, TR_CLOSING, TR_NFIELDS };
static PyTypeObject *native_tr_type;
static Py_ssize_t tr_off[TR_NFIELDS];
static PyObject *s_wconn, *s_direct, *s_closing;

static inline PyObject *
tr_field(PyObject *tr, int f)
{
    if (native_tr_type != NULL && PyObject_TypeCheck(tr, native_tr_type)) {
        PyObject *v = *(PyObject **)((char *)tr + tr_off[f]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(tr, f == TR_WCONN ? s_wconn : f == TR_DIRECT ? s_direct : s_closing);
}

/* The read mode in a `_direct` tuple (transports._DIRECT_MODES): 1 an
 * asyncio.Protocol, 2 a BufferedProtocol; 0 for anything else. */
static long
direct_mode(PyObject *d)
{
    if (!PyTuple_CheckExact(d) || PyTuple_GET_SIZE(d) != 2
        || !PyLong_CheckExact(PyTuple_GET_ITEM(d, 0)))
        return 0;
    long mode = PyLong_AsLong(PyTuple_GET_ITEM(d, 0));
    PyErr_Clear();
    return mode == 1 || mode == 2 ? mode : 0;
}

/* -- TransportBase.write ---------------------------------------------------- */

/* np_conn_write (inline mode: it sends, and copies what the socket did not
 * take; with poller threads it copies and hands the send to a poller); a
 * non-zero result -- more queued than the high-water mark, or -errno -- goes
 * to Transport._write_done(n): flow control and errors. */
static PyObject *
write_to_conn(PyObject *self, void *conn, const char *buf, Py_ssize_t len)
{
    if (len == 0)
        Py_RETURN_NONE;
    int64_t n = conn_write((np_conn *)conn, buf, (size_t)len);
    if (n == 0)                 /* all sent */
        Py_RETURN_NONE;
    PyObject *pn = PyLong_FromLongLong(n);
    if (pn == NULL)
        return NULL;
    PyObject *res = PyObject_CallMethodOneArg(self, s_write_done, pn);
    Py_DECREF(pn);
    return res;
}

static PyObject *
transport_write(PyObject *self, PyObject *data)
{
    int is_bytes = PyBytes_CheckExact(data);
    if (conn_write != NULL
        && (is_bytes || PyByteArray_CheckExact(data) || PyMemoryView_Check(data))) {
        PyObject *w = tr_field(self, TR_WCONN);
        if (w == NULL)
            return NULL;
        void *conn = PyLong_AsVoidPtr(w);
        Py_DECREF(w);
        if (conn == NULL && PyErr_Occurred())
            return NULL;
        if (conn != NULL && is_bytes)       /* no buffer export for bytes */
            return write_to_conn(self, conn, PyBytes_AS_STRING(data),
                                 PyBytes_GET_SIZE(data));
        Py_buffer view;
        if (conn != NULL) {
            if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) == 0) {
                PyObject *res = write_to_conn(self, conn, view.buf, view.len);
                PyBuffer_Release(&view);
                return res;
            }
            PyErr_Clear();      /* a non-contiguous memoryview: Python path */
        }
    }
    return PyObject_CallMethodOneArg(self, s_write_slow, data);
}

/* TransportBase.is_closing(): `return self._closing` without a Python
 * frame (StreamWriter.drain() asks once per write). */
static PyObject *
transport_is_closing(PyObject *self, PyObject *unused)
{
    (void)unused;
    return tr_field(self, TR_CLOSING);
}

static PyMethodDef transport_methods[] = {
    {"write", (PyCFunction)transport_write, METH_O,
     "Write bytes: sent at once if the socket takes them, else queued."},
    {"is_closing", transport_is_closing, METH_NOARGS,
     "Return True if the transport is closing or closed."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TransportBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "npaio._speedups.TransportBase",
    .tp_doc = "write() in C for npaio's socket transports (no instance layout).",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_methods = transport_methods,
    .tp_new = PyType_GenericNew,
};

/* -- dispatch ------------------------------------------------------------- */

#define RARE (NP_EV_EOF | NP_EV_CLOSED | NP_EV_DRAINED)

/* The exception just raised by a protocol callback: SystemExit and
 * KeyboardInterrupt propagate (-1); anything else goes to
 * tr._fatal_error(exc, msg) as the except branch of transports.py does (1). */
static int
protocol_failed(PyObject *tr, PyObject *msg)
{
    if (must_propagate())
        return -1;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return -1;
    PyObject *args[2] = {exc, msg};
    PyObject *res = call_in_except(exc, s_fatal_error, args, 2, tr);
    Py_DECREF(exc);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 1;
}

/* transports._buffer_received, for a BufferedProtocol: get_buffer(-1),
 * copy, buffer_updated(n), until the data is used up or reading stopped
 * (paused, closing or another protocol: the rest goes to tr._hold_rest). */
static int
deliver_buffered(PyObject *tr, PyObject *proto, const char *data, Py_ssize_t len)
{
    Py_ssize_t off = 0;
    while (off < len) {
        PyObject *buf = PyObject_CallMethodOneArg(proto, s_get_buffer, s_minus_one);
        if (buf == NULL)
            return protocol_failed(tr, s_gb_failed);
        Py_buffer view;
        int rc = PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS);
        Py_DECREF(buf);
        if (rc < 0)
            return protocol_failed(tr, s_gb_failed);
        if (view.len <= 0) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_RuntimeError, "get_buffer() returned an empty buffer");
            return protocol_failed(tr, s_gb_failed);
        }
        Py_ssize_t n = view.len < len - off ? view.len : len - off;
        memcpy(view.buf, data + off, (size_t)n);
        PyBuffer_Release(&view);
        off += n;
        PyObject *pn = PyLong_FromSsize_t(n);
        if (pn == NULL)
            return -1;
        PyObject *res = PyObject_CallMethodOneArg(proto, s_buffer_updated, pn);
        Py_DECREF(pn);
        if (res == NULL)
            return protocol_failed(tr, s_bu_failed);
        Py_DECREF(res);
        if (off < len) {
            PyObject *d = tr_field(tr, TR_DIRECT);
            if (d == NULL)
                return -1;
            int same = direct_mode(d) == 2 && PyTuple_GET_ITEM(d, 1) == proto;
            Py_DECREF(d);
            if (!same) {
                PyObject *rest = PyBytes_FromStringAndSize(data + off, len - off);
                if (rest == NULL)
                    return -1;
                res = PyObject_CallMethodOneArg(tr, s_hold_rest, rest);
                Py_DECREF(rest);
                if (res == NULL)
                    return -1;
                Py_DECREF(res);
                return 1;
            }
        }
    }
    return 1;
}

/* The common record (data, no EOF/close/drain) for a transport whose
 * `_direct` holds (1, protocol): an asyncio.Protocol (data_received(bytes),
 * with _data_received's error handling); (2, protocol): a BufferedProtocol.
 * (One attribute for both: a lookup costs ~150 instructions.) `have`: the
 * data as a bytes object already (an in-place record), else NULL.
 * Returns 1 done, 0 not direct (caller takes the slow path), -1 error. */
static int
deliver_direct(PyObject *tr, const char *data, Py_ssize_t len, PyObject *have)
{
    PyObject *d = tr_field(tr, TR_DIRECT);
    if (d == NULL)
        return -1;
    long mode = direct_mode(d);
    if (mode == 0) {
        Py_DECREF(d);
        return 0;
    }
    PyObject *proto = Py_NewRef(PyTuple_GET_ITEM(d, 1));
    Py_DECREF(d);
    if (mode == 2) {
        int rc = deliver_buffered(tr, proto, data, len);
        Py_DECREF(proto);
        return rc;
    }
    int fed = np_stream_feed(proto, data, len);       /* asyncio's streams */
    if (fed != 0) {
        Py_DECREF(proto);
        return fed > 0 ? 1 : protocol_failed(tr, s_dr_failed);
    }
    PyObject *bytes = have ? Py_NewRef(have) : PyBytes_FromStringAndSize(data, len);
    if (bytes == NULL) {
        Py_DECREF(proto);
        return -1;
    }
    PyObject *res = PyObject_CallMethodOneArg(proto, s_data_received, bytes);
    Py_DECREF(bytes);
    Py_DECREF(proto);
    if (res != NULL) {
        Py_DECREF(res);
        return 1;
    }
    return protocol_failed(tr, s_dr_failed);
}

/* ReactorBase.dispatch(): run the records drained by the last poll/drain;
 * _reactor._dispatch_record(tr, flags, err, data_or_None) takes every record
 * that is not plain data for a `_direct` transport. An exception that must
 * propagate leaves the records after it pending for the next iteration. */
static PyObject *
reactor_dispatch(PyObject *self, PyObject *unused)
{
    (void)unused;
    ReactorObject *ro = (ReactorObject *)self;
    Py_ssize_t n = ro->pending;
    ro->pending = 0;
    if (n <= 0)
        Py_RETURN_NONE;
    const np_record *recs = (const np_record *)(uintptr_t)ro->records_addr;
    const char *arena = (const char *)(uintptr_t)ro->arena_addr;
    np_pollbuf *pb = (np_pollbuf *)(uintptr_t)ro->pollbuf_addr;
    np_conn **conns = pb ? pb->conns : NULL;
    PyObject *transports = ro->transports, *slow = dispatch_record;
    if (recs == NULL || arena == NULL || transports == NULL || !PyDict_Check(transports)
        || slow == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "npaio: dispatch on a reactor not set up");
        return NULL;
    }
    Py_INCREF(transports);
    PyObject *ret = NULL;
    Py_ssize_t rest = 0;            /* the first record not yet taken */
    for (Py_ssize_t i = 0; i < n; i++) {
        const np_record *rec = &recs[i];
        PyObject *have = NULL;      /* an in-place record's data, taken */
        if ((rec->flags & NP_EV_INPLACE) && conns && conns[i]) {
            /* Copied straight from the connection's input into the bytes
             * (np_record_take); the connection's reference goes with it. */
            np_conn *c = conns[i];
            conns[i] = NULL;
            have = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)rec->len);
            if (have == NULL) {
                conns[i] = c;       /* stays pending with the rest */
                goto done;
            }
            record_take(c, PyBytes_AS_STRING(have), rec->len);
        }
        rest = i + 1;
        PyObject *key = PyLong_FromUnsignedLongLong(rec->id);
        if (key == NULL) {
            Py_XDECREF(have);
            goto done;
        }
        PyObject *tr = PyDict_GetItemWithError(transports, key);
        Py_DECREF(key);
        if (tr == NULL) {
            Py_XDECREF(have);
            if (PyErr_Occurred())
                goto done;
            continue;               /* closed and released since the drain */
        }
        Py_INCREF(tr);              /* data_received may drop the dict's ref */
        int done = 0;
        if (rec->len && !(rec->flags & RARE)) {
            done = deliver_direct(tr, have ? PyBytes_AS_STRING(have) : arena + rec->off,
                                  (Py_ssize_t)rec->len, have);
            if (done < 0) {
                Py_XDECREF(have);
                Py_DECREF(tr);
                goto done;
            }
        }
        if (!done) {
            PyObject *data = have ? Py_NewRef(have) : rec->len
                ? PyBytes_FromStringAndSize(arena + rec->off, (Py_ssize_t)rec->len)
                : Py_NewRef(Py_None);
            PyObject *flags = PyLong_FromUnsignedLong(rec->flags);
            PyObject *err = PyLong_FromLong(rec->err);
            PyObject *res = NULL;
            if (data != NULL && flags != NULL && err != NULL) {
                PyObject *a[4] = {tr, flags, err, data};
                res = PyObject_Vectorcall(slow, a, 4, NULL);
            }
            Py_XDECREF(data);
            Py_XDECREF(flags);
            Py_XDECREF(err);
            if (res == NULL) {
                Py_XDECREF(have);
                Py_DECREF(tr);
                goto done;
            }
            Py_DECREF(res);
        }
        Py_XDECREF(have);
        Py_DECREF(tr);
    }
    ret = Py_NewRef(Py_None);
done:
    /* The replies of this batch leave now, not at the next poll (one
     * sendmsg per connection still): ping-pong latency. */
    if (ro->r_addr && reactor_kick)
        reactor_kick((np_reactor *)(uintptr_t)ro->r_addr);
    if (ret == NULL && rest < n) {
        /* An exception propagates (KeyboardInterrupt, SystemExit, no
         * memory): the records after it stay pending, moved to the front,
         * and the loop's next iteration dispatches them (it drains nothing
         * new while records are pending), as asyncio's ready queue keeps
         * the callbacks after one that raised. Their data is not lost. */
        memmove((np_record *)recs, recs + rest, (size_t)(n - rest) * sizeof(np_record));
        if (conns)
            memmove(conns, conns + rest, (size_t)(n - rest) * sizeof(np_conn *));
        ro->pending = n - rest;
    }
    Py_DECREF(transports);
    return ret;
}

/* -- run_ready ------------------------------------------------------------ */

/* Handles kept for reuse. run_ready drops most Handles right after their
 * callback ran, when it holds the only reference; new_handle takes them
 * back, so a call_soon skips the allocation and subtype_dealloc (~450
 * instructions, callgrind 3.11; uvloop keeps a Cython freelist of its
 * Handles for the same reason). A pooled Handle's slots are all NULL, as in
 * a new one; it is never visible to Python code (only the pool refers to
 * it, and a Handle with weak references is not pooled). */
#define HANDLE_POOL 64
static PyObject *handle_pool[HANDLE_POOL];
static int handle_pool_n;

static void
release_handle(PyObject *h)
{
    PyTypeObject *t = Py_TYPE(h);
    if (t != handle_type || Py_REFCNT(h) != 1 || handle_pool_n == HANDLE_POOL
        || (t->tp_weaklistoffset != 0      /* < 0 on 3.12+: before the header */
            && *(PyObject **)((char *)h + t->tp_weaklistoffset) != NULL)) {
        Py_DECREF(h);
        return;
    }
    /* What subtype_dealloc would release; a __del__ run from here cannot
     * reach h (no one else refers to it). */
    for (int f = 0; f < F_NFIELDS; f++)
        Py_CLEAR(HFIELD(h, f));
    if (handle_pool_n < HANDLE_POOL && Py_REFCNT(h) == 1 && Py_TYPE(h) == handle_type)
        handle_pool[handle_pool_n++] = h;
    else
        Py_DECREF(h);
}

static void
clear_handle_pool(void)
{
    while (handle_pool_n > 0)
        Py_DECREF(handle_pool[--handle_pool_n]);
}

/* One asyncio Handle or TimerHandle: Handle._run's body. -1: propagate. */
static int
run_plain_handle(PyObject *h, PyObject *failed)
{
    PyObject *ctx = HFIELD(h, F_CONTEXT), *cb = HFIELD(h, F_CALLBACK),
        *args = HFIELD(h, F_ARGS);
    if (ctx == NULL || cb == NULL || args == NULL) {
        PyErr_SetString(PyExc_AttributeError, "Handle is missing _context, _callback or _args");
        return -1;
    }
    Py_INCREF(ctx);                 /* the callback may cancel or rebind */
    Py_INCREF(cb);
    Py_INCREF(args);
    PyObject *res = NULL;
    if (PyContext_Enter(ctx) == 0) {
        if (PyTuple_CheckExact(args))
            res = PyObject_Vectorcall(cb, &PyTuple_GET_ITEM(args, 0),
                                      (size_t)PyTuple_GET_SIZE(args), NULL);
        else
            res = PyObject_Call(cb, args, NULL);  /* raises for a non-tuple */
        if (PyContext_Exit(ctx) < 0)
            Py_CLEAR(res);
    }
    Py_DECREF(ctx);
    Py_DECREF(cb);
    Py_DECREF(args);
    if (res != NULL) {
        Py_DECREF(res);
        return 0;
    }
    if (must_propagate())
        return -1;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return -1;
    PyObject *a[2] = {h, exc};
    res = call_in_except(exc, failed, a, 2, NULL);
    Py_DECREF(exc);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Pop and run the callbacks ready now (len(ready) of them, not those they
 * schedule), as base_events._run_once's last loop. ht/tt get Handle._run's
 * body here, with failed(handle, exc) for its except branch; any other class
 * gets its own _run(). */
static int
run_ready(PyObject *ready, PyTypeObject *ht, PyTypeObject *tt, PyObject *failed)
{
    Py_ssize_t ntodo = PyObject_Length(ready);
    if (ntodo < 0)
        return -1;
    if (ntodo == 0)
        return 0;
    /* A deque's popleft through its method descriptor: no bound method
     * built and freed per iteration (~300 instructions, most iterations
     * running one or two callbacks). */
    int is_deque = deque_popleft != NULL && Py_TYPE(ready) == deque_type;
    PyObject *popleft = is_deque ? Py_NewRef(deque_popleft) : PyObject_GetAttr(ready, s_popleft);
    if (popleft == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *h = is_deque ? PyObject_Vectorcall(popleft, &ready, 1, NULL)
                               : PyObject_CallNoArgs(popleft);
        if (h == NULL)
            goto error;
        int plain = Py_TYPE(h) == ht || Py_TYPE(h) == tt;
        int cancelled;
        if (plain && HFIELD(h, F_CANCELLED) != NULL) {
            cancelled = PyObject_IsTrue(HFIELD(h, F_CANCELLED));
        } else {
            PyObject *c = PyObject_GetAttr(h, s_cancelled);
            cancelled = c == NULL ? -1 : PyObject_IsTrue(c);
            Py_XDECREF(c);
        }
        int rc = 0;
        if (cancelled < 0) {
            rc = -1;
        } else if (!cancelled) {
            if (plain) {
                rc = run_plain_handle(h, failed);
            } else {
                PyObject *res = PyObject_CallMethodNoArgs(h, s_run);
                rc = res == NULL ? -1 : 0;
                Py_XDECREF(res);
            }
        }
        release_handle(h);
        if (rc < 0)
            goto error;
    }
    Py_XDECREF(popleft);
    return 0;
error:
    Py_XDECREF(popleft);
    return -1;
}

/* -- LoopBase: _run_once and call_soon -------------------------------------- */

/* getattr(obj, name) as a truth value: 1, 0, or -1 with an exception. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* self.time(), as a double. */
static int
loop_time(PyObject *self, double *out)
{
    PyObject *t = PyObject_CallMethodNoArgs(self, s_time);
    if (t == NULL)
        return -1;
    *out = PyFloat_AsDouble(t);
    Py_DECREF(t);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* The reactor's poll: wait up to ms, do the connections' I/O, drain. Returns
 * 1 when the loop's own selector has events, 0 if not, -1 on error. */
static int
reactor_poll_once(ReactorObject *ro, int ms)
{
    np_reactor *r = (np_reactor *)(uintptr_t)ro->r_addr;
    /* A dispatch still due (an exception left it in the ready queue): keep
     * its records, only poll. */
    Py_ssize_t pending = ro->pending;
    np_pollbuf *pb = (np_pollbuf *)(uintptr_t)(pending ? ro->pollbuf_none_addr
                                                       : ro->pollbuf_addr);
    if (r == NULL || pb == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "npaio: the reactor is closed");
        return -1;
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = reactor_poll(r, pb, ms);
    Py_END_ALLOW_THREADS
    if (!pending)
        ro->pending = n >> 1;
    return n & 1;
}

/* Timeout of this iteration's poll in seconds: 0 if callbacks are ready or
 * the loop stops, -1 (forever) without timers, else until the first timer,
 * at most MAXIMUM_SELECT_TIMEOUT. */
static PyObject *timer_when(PyObject *t);

static int
poll_timeout(LoopObject *lo, double *secs)
{
    Py_ssize_t nready = PyObject_Length(lo->ready);
    if (nready < 0)
        return -1;
    int stopping = nready ? 0 : PyObject_IsTrue(lo->stopping);
    if (stopping < 0)
        return -1;
    if (nready || stopping) {
        *secs = 0;
        return 0;
    }
    if (PyList_GET_SIZE(lo->scheduled) == 0) {
        *secs = -1;
        return 0;
    }
    PyObject *w = timer_when(PyList_GET_ITEM(lo->scheduled, 0));
    if (w == NULL)
        return -1;
    double when = PyFloat_AsDouble(w), now;
    Py_DECREF(w);
    if ((when == -1.0 && PyErr_Occurred()) || loop_time((PyObject *)lo, &now) < 0)
        return -1;
    double timeout = when - now;
    double cap = PyFloat_AsDouble(max_select_timeout);
    *secs = timeout <= 0 ? 0 : timeout > cap ? cap : timeout;
    return 0;
}

/* Rounded up to ms as EpollSelector does (never wake before a timer is due). */
static int
timeout_ms(double secs)
{
    if (secs < 0)
        return -1;
    double m = ceil(secs * 1e3);
    return m > 2147483647.0 ? 2147483647 : (int)m;
}

/* pollers >= 1 (a _ReactorSelector): self._process_events(selector.select(t)),
 * the selector wrapper doing the reactor's about-to-sleep handshake and
 * _process_events the drain. */
static int
select_and_process(PyObject *self, PyObject *selector, double secs)
{
    PyObject *t = secs < 0 ? Py_NewRef(Py_None) : PyFloat_FromDouble(secs);
    if (t == NULL)
        return -1;
    PyObject *events = PyObject_CallMethodOneArg(selector, s_select, t);
    Py_DECREF(t);
    if (events == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(self, s_process_events, events);
    Py_DECREF(events);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* ready.append(h): through deque.append's descriptor for a deque (as
 * run_ready's popleft). 0, or -1 with an exception. */
static int
ready_append(PyObject *ready, PyObject *h)
{
    PyObject *a[2] = {ready, h};
    PyObject *r = deque_append != NULL && Py_TYPE(ready) == deque_type
        ? PyObject_Vectorcall(deque_append, a, 2, NULL)
        : PyObject_CallMethodOneArg(ready, s_append, h);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* -- the timer heap ----------------------------------------------------------
 * heapq's heappush and heappop, the same algorithm (so the same heap as
 * heapq would build, which _prune_timers' heapq calls then share), with
 * TimerHandle's __lt__ (`self._when < other._when`) done in C when both
 * items are exact TimerHandles with float `_when` and TimerHandle.__lt__ is
 * still asyncio's (checked at setup_timers, then by the type's version
 * tag). Anything else is compared with `<`, as heapq does. uvicorn pushes a
 * keep-alive timer per request; with heapq each push ran the Python __lt__
 * (1.2 calls per request, cProfile). */

/* TimerHandle's _scheduled and _when slots (setup_timers), -1 unknown. */
static Py_ssize_t timer_off_scheduled = -1, timer_off_when = -1;
#define TFIELD(h, off) (*(PyObject **)((char *)(h) + (off)))
static PyObject *timer_lt;              /* asyncio's TimerHandle.__lt__, or NULL */
static unsigned int timer_lt_tag;       /* timer_type's tag when last seen unchanged */

static int
timer_lt_current(void)
{
    if (np_tag_current(timer_type, timer_lt_tag))
        return 1;
    if (timer_lt == NULL || _PyType_Lookup(timer_type, s_lt) != timer_lt)
        return 0;
    timer_lt_tag = np_tag_now(timer_type);
    return 1;
}

/* t._when: a new reference, or NULL with an exception. */
static PyObject *
timer_when(PyObject *t)
{
    if (Py_TYPE(t) == timer_type && timer_off_when >= 0 && TFIELD(t, timer_off_when) != NULL)
        return Py_NewRef(TFIELD(t, timer_off_when));
    return PyObject_GetAttr(t, s_when);
}

/* a < b: 1, 0, or -1 with an exception. */
static int
heap_lt(PyObject *a, PyObject *b)
{
    if (Py_TYPE(a) == timer_type && Py_TYPE(b) == timer_type && timer_off_when >= 0) {
        PyObject *wa = TFIELD(a, timer_off_when), *wb = TFIELD(b, timer_off_when);
        if (wa != NULL && wb != NULL && PyFloat_CheckExact(wa) && PyFloat_CheckExact(wb)
            && timer_lt_current())
            return PyFloat_AS_DOUBLE(wa) < PyFloat_AS_DOUBLE(wb);
    }
    Py_INCREF(a);
    Py_INCREF(b);
    int r = PyObject_RichCompareBool(a, b, Py_LT);
    Py_DECREF(a);
    Py_DECREF(b);
    return r;
}

/* heapq's siftdown: heap[pos] moves towards the root. A Python __lt__ may
 * change the list: heapq's checks, heapq's errors. */
static int
heap_siftdown(PyObject *heap, Py_ssize_t startpos, Py_ssize_t pos)
{
    Py_ssize_t size = PyList_GET_SIZE(heap);
    while (pos > startpos) {
        Py_ssize_t parentpos = (pos - 1) >> 1;
        int cmp = heap_lt(PyList_GET_ITEM(heap, pos), PyList_GET_ITEM(heap, parentpos));
        if (cmp < 0)
            return -1;
        if (size != PyList_GET_SIZE(heap)) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size during iteration");
            return -1;
        }
        if (cmp == 0)
            break;
        PyObject **arr = ((PyListObject *)heap)->ob_item, *parent = arr[parentpos];
        arr[parentpos] = arr[pos];
        arr[pos] = parent;
        pos = parentpos;
    }
    return 0;
}

/* heapq's siftup: the smaller child moves up until a leaf, then siftdown. */
static int
heap_siftup(PyObject *heap, Py_ssize_t pos)
{
    Py_ssize_t endpos = PyList_GET_SIZE(heap), startpos = pos, limit = endpos >> 1;
    while (pos < limit) {
        Py_ssize_t childpos = 2 * pos + 1;
        if (childpos + 1 < endpos) {
            int cmp = heap_lt(PyList_GET_ITEM(heap, childpos),
                              PyList_GET_ITEM(heap, childpos + 1));
            if (cmp < 0)
                return -1;
            childpos += cmp ^ 1;
            if (endpos != PyList_GET_SIZE(heap)) {
                PyErr_SetString(PyExc_RuntimeError, "list changed size during iteration");
                return -1;
            }
        }
        PyObject **arr = ((PyListObject *)heap)->ob_item, *tmp = arr[childpos];
        arr[childpos] = arr[pos];
        arr[pos] = tmp;
        pos = childpos;
    }
    return heap_siftdown(heap, startpos, pos);
}

/* heapq.heappush(heap, item), heap an exact list. */
static int
heap_push(PyObject *heap, PyObject *item)
{
    if (PyList_Append(heap, item) < 0)
        return -1;
    return heap_siftdown(heap, 0, PyList_GET_SIZE(heap) - 1);
}

/* heapq.heappop(heap), heap an exact non-empty list: a new reference. */
static PyObject *
heap_pop(PyObject *heap)
{
    Py_ssize_t n = PyList_GET_SIZE(heap);
    PyObject *last = Py_NewRef(PyList_GET_ITEM(heap, n - 1));
    if (PyList_SetSlice(heap, n - 1, n, NULL) < 0) {
        Py_DECREF(last);
        return NULL;
    }
    if (n == 1)
        return last;
    PyObject *top = PyList_GET_ITEM(heap, 0);  /* the list's reference, now ours */
    PyList_SET_ITEM(heap, 0, last);
    if (heap_siftup(heap, 0) < 0) {
        Py_DECREF(top);
        return NULL;
    }
    return top;
}

/* Move the timers that are due to the ready queue (base_events' step). */
static int
ready_due_timers(LoopObject *lo, PyObject *scheduled)
{
    if (PyList_GET_SIZE(scheduled) == 0)
        return 0;
    double now;
    if (loop_time((PyObject *)lo, &now) < 0)
        return -1;
    double res = PyFloat_AsDouble(lo->clock_resolution);
    if (res == -1.0 && PyErr_Occurred())
        return -1;
    double end_time = now + res;
    while (PyList_GET_SIZE(scheduled)) {
        PyObject *w = timer_when(PyList_GET_ITEM(scheduled, 0));
        if (w == NULL)
            return -1;
        double when = PyFloat_AsDouble(w);
        Py_DECREF(w);
        if (when == -1.0 && PyErr_Occurred())
            return -1;
        if (when >= end_time)
            break;
        PyObject *h = heap_pop(scheduled);
        if (h == NULL)
            return -1;
        int rc = 0;
        if (Py_TYPE(h) == timer_type && timer_off_scheduled >= 0)
            Py_XSETREF(TFIELD(h, timer_off_scheduled), Py_NewRef(Py_False));
        else
            rc = PyObject_SetAttr(h, s_scheduled, Py_False);
        if (rc == 0)
            rc = ready_append(lo->ready, h);
        Py_DECREF(h);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* LoopBase._run_once: base_events._run_once, step for step (not in debug
 * mode). Inline mode over an epoll selector: np_reactor_poll() in place of
 * selector.select(), the selector proper only when its fd fired; pollers >= 1
 * (a _ReactorSelector): select() and _process_events() as asyncio calls them.
 * Debug mode and a selector replaced after __init__ run
 * self._run_once_slow(). */
static PyObject *
loop_run_once(PyObject *self, PyObject *unused)
{
    (void)unused;
    LoopObject *lo = (LoopObject *)self;
    if (handle_type == NULL || reactor_poll == NULL || lo->debug == NULL
        || lo->selector == NULL || lo->ready == NULL || lo->scheduled == NULL
        || lo->stopping == NULL || lo->reactor == NULL || lo->clock_resolution == NULL
        || lo->dispatch_handle == NULL
        || (Py_TYPE(lo->selector) != inline_selector_type
            && Py_TYPE(lo->selector) != reactor_selector_type)
        || !PyList_CheckExact(lo->scheduled)
        || !PyObject_TypeCheck(lo->reactor, &ReactorBase_Type))
        return PyObject_CallMethodNoArgs(self, s_run_once_slow);
    int debug = PyObject_IsTrue(lo->debug);
    if (debug < 0)
        return NULL;
    if (debug)
        return PyObject_CallMethodNoArgs(self, s_run_once_slow);
    Py_ssize_t ns = PyList_GET_SIZE(lo->scheduled);
    if (ns) {
        /* Cancelled timers: Loop._prune_timers does asyncio's two cases
         * (many cancelled: rebuild the heap; else pop the cancelled head),
         * both no-ops unless more than 100 are scheduled or the head is
         * cancelled. */
        PyObject *t0 = PyList_GET_ITEM(lo->scheduled, 0);
        int head_cancelled = Py_TYPE(t0) == timer_type && HFIELD(t0, F_CANCELLED) != NULL
            ? PyObject_IsTrue(HFIELD(t0, F_CANCELLED)) : attr_true(t0, s_cancelled);
        if (head_cancelled < 0)
            return NULL;
        if (head_cancelled || ns > 100) {
            PyObject *r = PyObject_CallMethodNoArgs(self, s_prune_timers);
            if (r == NULL)
                return NULL;
            Py_DECREF(r);
            if (lo->scheduled == NULL || !PyList_CheckExact(lo->scheduled)) {
                PyErr_SetString(PyExc_TypeError, "loop._scheduled must be a list");
                return NULL;
            }
        }
    }
    double secs;
    if (poll_timeout(lo, &secs) < 0)
        return NULL;
    /* Hold what the steps below use: callbacks may rebind the attributes. */
    PyObject *ready = Py_NewRef(lo->ready), *scheduled = Py_NewRef(lo->scheduled),
        *reactor = Py_NewRef(lo->reactor), *selector = Py_NewRef(lo->selector);
    PyObject *res = NULL;
    if (Py_TYPE(selector) == reactor_selector_type) {
        if (select_and_process(self, selector, secs) < 0)
            goto done;
        goto timers;
    }
    if (lo->dispatched) {
        /* The last iteration's poll brought input, and the callbacks its
         * dispatch scheduled (a Task woken by a read, which writes the
         * reply) are ready: they run now, and the next iteration polls.
         * asyncio would poll again first (timeout 0, as callbacks are
         * ready); uvloop runs them before its next poll, as here. One poll
         * per round of input instead of two: each catches what arrived
         * while both iterations ran (streams echo, 10 connections: 0.2
         * epoll_wait per request before, as many as read events). */
        lo->dispatched = 0;
        if (secs == 0)
            goto timers;
    }
    int sel = reactor_poll_once((ReactorObject *)reactor, timeout_ms(secs));
    if (sel < 0)
        goto done;
    if (sel) {
        /* The selector's own fds: self._process_events(inner.select(0)). */
        PyObject *inner = PyObject_GetAttr(selector, s_selector);
        if (inner == NULL)
            goto done;
        PyObject *zero = PyLong_FromLong(0);
        PyObject *events = zero ? PyObject_CallMethodOneArg(inner, s_select, zero) : NULL;
        Py_XDECREF(zero);
        Py_DECREF(inner);
        if (events == NULL)
            goto done;
        PyObject *r = PyObject_CallMethodOneArg(self, s_process_events, events);
        Py_DECREF(events);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    } else if (((ReactorObject *)reactor)->pending) {
        lo->dispatched = 1;
        PyObject *dh = lo->dispatch_handle;
        Py_ssize_t nready = PyObject_Length(ready);
        if (nready < 0)
            goto done;
        if (nready == 0 && Py_TYPE(dh) == handle_type && Py_TYPE(ready) == deque_type
            && HFIELD(dh, F_CANCELLED) == Py_False) {
            /* Nothing else is ready (ping-pong, most busy-server rounds):
             * the dispatch would be the queue's first handle, the timers
             * due now after it. When none is due it is the iteration's only
             * callback, so it runs here, without the queue's append and
             * popleft; the callbacks it schedules wait for the next
             * iteration as they would. */
            if (ready_due_timers(lo, scheduled) < 0)
                goto done;
            nready = PyObject_Length(ready);
            if (nready < 0)
                goto done;
            if (nready == 0) {
                Py_INCREF(dh);
                int rc = run_plain_handle(dh, callback_failed);
                Py_DECREF(dh);
                if (rc == 0)
                    res = Py_NewRef(Py_None);
                goto done;
            }
            /* Timers are due: the dispatch goes before them. */
            PyObject *r = PyObject_CallMethodOneArg(ready, s_appendleft, dh);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
            goto run;
        }
        if (ready_append(ready, dh) < 0)
            goto done;
    }
timers:
    if (ready_due_timers(lo, scheduled) < 0)
        goto done;
run:
    if (run_ready(ready, handle_type, timer_type, callback_failed) < 0)
        goto done;
    res = Py_NewRef(Py_None);
done:
    Py_DECREF(ready);
    Py_DECREF(scheduled);
    Py_DECREF(reactor);
    Py_DECREF(selector);
    return res;
}

/* self.<slow>(*args, **kw): the Python method that takes what the C fast
 * path does not (debug mode, a closed loop, odd arguments) and raises
 * asyncio's errors. */
static PyObject *
call_slow(PyObject *self, PyObject *slow, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *stack[16], **a = stack;
    Py_ssize_t total = 1 + nargs + nkw;
    if (total > 16 && (a = PyMem_Malloc(total * sizeof(PyObject *))) == NULL)
        return PyErr_NoMemory();
    a[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        a[1 + i] = args[i];
    PyObject *res = PyObject_VectorcallMethod(slow, a, 1 + nargs, kwnames);
    if (a != stack)
        PyMem_Free(a);
    return res;
}

/* `self._debug or self._closed`, for bools without a call: 1, 0, -1. */
static int
debug_or_closed(LoopObject *lo)
{
    if (lo->debug == NULL || lo->closed == NULL)
        return 1;                   /* before __init__: the slow path raises */
    if (lo->debug == Py_True || lo->closed == Py_True)
        return 1;
    if (lo->debug == Py_False && lo->closed == Py_False)
        return 0;
    int t = PyObject_IsTrue(lo->debug);
    if (t == 0)
        t = PyObject_IsTrue(lo->closed);
    return t;
}

/* A vectorcall keyword (always a str) is `name`. */
static int
kw_is(PyObject *kw, PyObject *name)
{
    return kw == name || PyUnicode_Compare(kw, name) == 0;
}

/* The only keyword the fast paths take: context= (_asyncio's futures pass
 * it). Sets *context (borrowed; Py_None if absent); 0 if kwnames has
 * anything else. */
static int
context_kw(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **context)
{
    *context = Py_None;
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0)
        return 1;
    if (PyTuple_GET_SIZE(kwnames) == 1 && kw_is(PyTuple_GET_ITEM(kwnames, 0), s_context_kw)) {
        *context = args[nargs];
        return 1;
    }
    return 0;
}

/* A Handle (or TimerHandle) with the fields Handle.__init__ sets with debug
 * off: callback, args (a tuple of the nargs at `args`), loop, context
 * (copied from the current one if None). */
static PyObject *
new_handle(PyTypeObject *type, PyObject *loop, PyObject *callback, PyObject *const *args,
           Py_ssize_t nargs, PyObject *context)
{
    PyObject *cbargs = PyTuple_New(nargs);
    if (cbargs == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(cbargs, i, Py_NewRef(args[i]));
    PyObject *ctx = context == Py_None ? PyContext_CopyCurrent() : Py_NewRef(context);
    if (ctx == NULL) {
        Py_DECREF(cbargs);
        return NULL;
    }
    PyObject *h = type == handle_type && handle_pool_n > 0
        ? handle_pool[--handle_pool_n] : type->tp_alloc(type, 0);
    if (h == NULL) {
        Py_DECREF(ctx);
        Py_DECREF(cbargs);
        return NULL;
    }
    /* The fields of a new or pooled Handle are NULL: no old value to release. */
    HFIELD(h, F_CONTEXT) = ctx;
    HFIELD(h, F_LOOP) = Py_NewRef(loop);
    HFIELD(h, F_CALLBACK) = Py_NewRef(callback);
    HFIELD(h, F_ARGS) = cbargs;
    HFIELD(h, F_CANCELLED) = Py_NewRef(Py_False);
    HFIELD(h, F_REPR) = Py_NewRef(Py_None);
    HFIELD(h, F_SOURCE_TB) = Py_NewRef(Py_None);
    return h;
}

/* LoopBase.call_soon(callback, *args, context=None): base_events' call_soon
 * -> _check_closed -> _call_soon -> Handle(...), the Handle built by
 * new_handle. Debug mode, a closed loop and odd arguments go to
 * self._call_soon_slow(...). */
static PyObject *
loop_call_soon(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LoopObject *lo = (LoopObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    int slow = handle_type == NULL || nargs < 1 || lo->ready == NULL
        || !context_kw(args, nargs, kwnames, &context);
    if (!slow && (slow = debug_or_closed(lo)) < 0)
        return NULL;
    if (slow)
        return call_slow(self, s_call_soon_slow, args, nargs, kwnames);
    PyObject *h = new_handle(handle_type, self, args[0], args + 1, nargs - 1, context);
    if (h == NULL)
        return NULL;
    if (ready_append(lo->ready, h) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return h;
}

/* -- LoopBase: clock, timers, tasks ------------------------------------------
 * base_events' time(), get_debug(), call_at(), call_later(),
 * _timer_handle_cancelled() and create_task() were a Python frame or two
 * each, and uvicorn makes ~9 such calls per request (cProfile: get_debug
 * twice from Task(), time, call_later and its TimerHandle, the keep-alive
 * timer's cancel, create_task and its _check_closed). */

static PyObject *tasks_dict;            /* asyncio.tasks' globals: Task */
static PyObject *futures_dict;          /* asyncio.futures' globals: Future */
static PyObject *loop_kwnames;          /* ("loop",) */
static PyObject *s_task, *s_loop_kw, *s_name_kw, *s_call_at_slow, *s_call_later_slow,
    *s_create_task_slow, *s_future, *s_create_future_slow;

/* time.monotonic(), as base_events' time() returns it (the same clock and
 * the same conversion to float seconds as CPython's). */
static PyObject *
loop_time_method(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    double d = ns % 1000000000 == 0 ? (double)(ns / 1000000000) : (double)ns / 1e9;
    return PyFloat_FromDouble(d);
}

static PyObject *
loop_get_debug(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *d = ((LoopObject *)self)->debug;
    if (d == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_debug");
        return NULL;
    }
    return Py_NewRef(d);
}

/* TimerHandle.cancel() calls this: `if handle._scheduled:
 * self._timer_cancelled_count += 1`. */
static PyObject *
loop_timer_handle_cancelled(PyObject *self, PyObject *handle)
{
    int sched;
    if (timer_off_scheduled >= 0 && Py_TYPE(handle) == timer_type
        && TFIELD(handle, timer_off_scheduled) != NULL) {
        sched = PyObject_IsTrue(TFIELD(handle, timer_off_scheduled));
    } else {
        PyObject *v = PyObject_GetAttr(handle, s_scheduled);
        sched = v == NULL ? -1 : PyObject_IsTrue(v);
        Py_XDECREF(v);
    }
    if (sched < 0)
        return NULL;
    if (sched)
        ((LoopObject *)self)->timer_cancelled_count++;
    Py_RETURN_NONE;
}

/* call_at's TimerHandle(when, ...), pushed on the heap, _scheduled True
 * (as TimerHandle.__init__ and call_at set it with debug off). */
static PyObject *
push_timer(LoopObject *lo, PyObject *when, PyObject *callback, PyObject *const *args,
           Py_ssize_t nargs, PyObject *context)
{
    PyObject *t = new_handle(timer_type, (PyObject *)lo, callback, args, nargs, context);
    if (t == NULL)
        return NULL;
    TFIELD(t, timer_off_when) = Py_NewRef(when);
    TFIELD(t, timer_off_scheduled) = Py_NewRef(Py_False);
    if (heap_push(lo->scheduled, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    Py_SETREF(TFIELD(t, timer_off_scheduled), Py_NewRef(Py_True));
    return t;
}

/* Whether call_at/call_later may take the fast path. -1 error. */
static int
timer_fast(LoopObject *lo, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           PyObject **context)
{
    if (timer_off_when < 0 || nargs < 2 || args[0] == Py_None
        || lo->scheduled == NULL || !PyList_CheckExact(lo->scheduled)
        || !context_kw(args, nargs, kwnames, context))
        return 0;
    int slow = debug_or_closed(lo);
    return slow < 0 ? -1 : !slow;
}

/* LoopBase.call_at(when, callback, *args, context=None), and with `later`
 * call_later(delay, callback, *args, context=None): call_at(self.time() +
 * delay, ...). */
static PyObject *
call_timer(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames, int later)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    int fast = timer_fast((LoopObject *)self, args, nargs, kwnames, &context);
    if (fast < 0)
        return NULL;
    if (!fast)
        return call_slow(self, later ? s_call_later_slow : s_call_at_slow, args, nargs,
                         kwnames);
    PyObject *when = Py_NewRef(args[0]);
    if (later) {
        PyObject *now = PyObject_CallMethodNoArgs(self, s_time);
        Py_SETREF(when, now ? PyNumber_Add(now, when) : NULL);
        Py_XDECREF(now);
        if (when == NULL)
            return NULL;
    }
    PyObject *t = push_timer((LoopObject *)self, when, args[1], args + 2, nargs - 2, context);
    Py_DECREF(when);
    return t;
}

static PyObject *
loop_call_at(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return call_timer(self, args, nargsf, kwnames, 0);
}

static PyObject *
loop_call_later(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return call_timer(self, args, nargsf, kwnames, 1);
}

/* A module's global `name` (its dict), new reference; AttributeError if
 * it is gone. */
static PyObject *
module_attr(PyObject *dict, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(dict, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_AttributeError, "asyncio module has no attribute %R", name);
    return Py_XNewRef(v);
}

/* LoopBase.create_future(): futures.Future(loop=self), as base_events
 * (Future looked up in asyncio.futures each time). Streams make one per
 * read that waits. Not Future() with no loop, though it skips the keyword
 * parsing (~500 instructions by callgrind): _asyncio finds the running
 * loop with a getpid() system call on 3.10-3.11, and checking that this
 * loop is the running one costs another; two system calls per request cost
 * more CPU than the instructions saved (strace, streams echo). */
static PyObject *
loop_create_future(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (futures_dict == NULL || loop_kwnames == NULL)
        return PyObject_CallMethodNoArgs(self, s_create_future_slow);
    PyObject *fut_type = module_attr(futures_dict, s_future);
    if (fut_type == NULL)
        return NULL;
    PyObject *a[1] = {self};
    PyObject *fut = PyObject_Vectorcall(fut_type, a, 0, loop_kwnames);
    Py_DECREF(fut_type);
    return fut;
}

/* LoopBase.create_task(coro, *, name=None, context=None): with no task
 * factory, debug off and the loop open, tasks.Task(coro, loop=self, ...)
 * as base_events calls it (Task looked up in asyncio.tasks each time, so a
 * replaced Task is used). Everything else: self._create_task_slow(...). */
static PyObject *
loop_create_task(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    LoopObject *lo = (LoopObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    int slow = tasks_dict == NULL || loop_kwnames == NULL || nargs != 1 || nkw > 2
        || lo->task_factory != Py_None;
    for (Py_ssize_t i = 0; !slow && i < nkw; i++) {
        PyObject *kw = PyTuple_GET_ITEM(kwnames, i);
#if PY_VERSION_HEX >= 0x030B0000
        slow = !kw_is(kw, s_name_kw) && !kw_is(kw, s_context_kw);
#else
        slow = !kw_is(kw, s_name_kw);   /* 3.10's create_task has no context */
#endif
    }
    if (!slow && (slow = debug_or_closed(lo)) < 0)
        return NULL;
    if (slow)
        return call_slow(self, s_create_task_slow, args, nargs, kwnames);
    PyObject *task_type = module_attr(tasks_dict, s_task);
    if (task_type == NULL)
        return NULL;
    PyObject *a[4] = {args[0], self, nkw > 0 ? args[1] : NULL, nkw > 1 ? args[2] : NULL};
    /* ("loop",) plus the caller's keywords (none: the common case) */
    PyObject *names = nkw ? PyTuple_New(1 + nkw) : Py_NewRef(loop_kwnames);
    PyObject *task = NULL;
    if (names != NULL) {
        if (nkw) {
            PyTuple_SET_ITEM(names, 0, Py_NewRef(s_loop_kw));
            for (Py_ssize_t i = 0; i < nkw; i++)
                PyTuple_SET_ITEM(names, 1 + i, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
        }
        task = PyObject_Vectorcall(task_type, a, 1, names);
        Py_DECREF(names);
    }
    Py_DECREF(task_type);
    return task;
}

static PyMethodDef loop_methods[] = {
    {"_run_once", (PyCFunction)loop_run_once, METH_NOARGS,
     "One iteration of the event loop (base_events._run_once)."},
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "Arrange for a callback to be called as soon as possible."},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, METH_FASTCALL | METH_KEYWORDS,
     "Like call_later(), but uses an absolute time."},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later,
     METH_FASTCALL | METH_KEYWORDS,
     "Arrange for a callback to be called at a given time."},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task,
     METH_FASTCALL | METH_KEYWORDS, "Schedule a coroutine object."},
    {"create_future", loop_create_future, METH_NOARGS,
     "Create a Future object attached to the loop."},
    {"time", loop_time_method, METH_NOARGS, "Return the time according to the event loop's clock."},
    {"get_debug", loop_get_debug, METH_NOARGS, "Return the loop's debug flag."},
    {"_timer_handle_cancelled", loop_timer_handle_cancelled, METH_O,
     "Notification that a TimerHandle has been cancelled."},
    {NULL, NULL, 0, NULL},
};

#define LOOP_MEMBER(f) {"_" #f, T_OBJECT_EX, offsetof(LoopObject, f), 0, NULL},
static PyMemberDef loop_members[] = {
    LOOP_FIELDS(LOOP_MEMBER)
    {"_timer_cancelled_count", T_PYSSIZET, offsetof(LoopObject, timer_cancelled_count), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
loop_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    LoopObject *lo = (LoopObject *)type->tp_alloc(type, 0);
    if (lo == NULL)
        return NULL;
    /* Until BaseEventLoop.__init__ runs (bad options raise before it), the
     * loop counts as closed, so __del__ has nothing to complain about. */
    lo->closed = Py_NewRef(Py_True);
    lo->reactor = Py_NewRef(Py_None);
    return (PyObject *)lo;
}

#define LOOP_VISIT(f) Py_VISIT(lo->f);
static int
loop_traverse(PyObject *self, visitproc visit, void *arg)
{
    LoopObject *lo = (LoopObject *)self;
    LOOP_FIELDS(LOOP_VISIT)
    return 0;
}

#define LOOP_CLEAR(f) Py_CLEAR(lo->f);
static int
loop_clear(PyObject *self)
{
    LoopObject *lo = (LoopObject *)self;
    LOOP_FIELDS(LOOP_CLEAR)
    return 0;
}

static void
loop_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    loop_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject LoopBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "npaio._speedups.LoopBase",
    .tp_doc = "npaio.Loop's hot attributes as C fields; _run_once() and call_soon() in C.",
    .tp_basicsize = sizeof(LoopObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_methods = loop_methods,
    .tp_members = loop_members,
    .tp_new = loop_new,
    .tp_traverse = loop_traverse,
    .tp_clear = loop_clear,
    .tp_dealloc = loop_dealloc,
};

/* -- ReactorBase ---------------------------------------------------------- */

static PyMethodDef reactor_methods[] = {
    {"dispatch", (PyCFunction)reactor_dispatch, METH_NOARGS,
     "Hand the drained records to their transports (a ready handle)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef reactor_members[] = {
    {"_pending", T_PYSSIZET, offsetof(ReactorObject, pending), 0,
     "records drained, not yet dispatched"},
    {"_r_addr", T_ULONG, offsetof(ReactorObject, r_addr), 0, "np_reactor *"},
    {"_pollbuf_addr", T_ULONG, offsetof(ReactorObject, pollbuf_addr), 0, "np_pollbuf *"},
    {"_pollbuf_none_addr", T_ULONG, offsetof(ReactorObject, pollbuf_none_addr), 0,
     "np_pollbuf * taking no records"},
    {"_records_addr", T_ULONG, offsetof(ReactorObject, records_addr), 0, "np_record *"},
    {"_arena_addr", T_ULONG, offsetof(ReactorObject, arena_addr), 0, "char *"},
    {"_transports", T_OBJECT_EX, offsetof(ReactorObject, transports), 0,
     "connection id -> transport"},
    {NULL, 0, 0, 0, NULL},
};

static int
reactor_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((ReactorObject *)self)->transports);
    return 0;
}

static int
reactor_clear(PyObject *self)
{
    Py_CLEAR(((ReactorObject *)self)->transports);
    return 0;
}

static void
reactor_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    reactor_clear(self);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject ReactorBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "npaio._speedups.ReactorBase",
    .tp_doc = "_reactor.Reactor's hot state as C fields; dispatch() in C.",
    .tp_basicsize = sizeof(ReactorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_methods = reactor_methods,
    .tp_members = reactor_members,
    .tp_new = PyType_GenericNew,
    .tp_traverse = reactor_traverse,
    .tp_clear = reactor_clear,
    .tp_dealloc = reactor_dealloc,
};

/* The offsets of `fields`, a tuple of n member descriptors that must be
 * `owner`'s writable object __slots__, into off[] (written only when all
 * are). 0, or -1 with TypeError(err). */
static int
slot_offsets(PyObject *fields, PyTypeObject *owner, Py_ssize_t *off, int n, const char *err)
{
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) != n)
        goto bad;
    for (int f = 0; f < n; f++) {
        PyObject *d = PyTuple_GET_ITEM(fields, f);
        if (!Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX
            || ((PyMemberDescrObject *)d)->d_member->flags != 0
            || ((PyMemberDescrObject *)d)->d_common.d_type != owner)
            goto bad;
    }
    for (int f = 0; f < n; f++)
        off[f] = ((PyMemberDescrObject *)PyTuple_GET_ITEM(fields, f))->d_member->offset;
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError, err);
    return -1;
}

/* setup_loop(Handle, TimerHandle, InlineSelector, callback_failed,
 *            MAXIMUM_SELECT_TIMEOUT, handle_fields, ReactorSelector): what LoopBase needs of
 * asyncio. handle_fields: Handle's member descriptors for _callback, _args,
 * _cancelled, _loop, _source_traceback, _repr, _context (loop.py checks
 * Handle's __slots__ first; without them it does not call this and
 * LoopBase takes the slow paths). */
static PyObject *
speedups_setup_loop(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 7 || !PyType_Check(args[0]) || !PyType_Check(args[1])
        || !PyType_Check(args[2]) || !PyFloat_Check(args[4])
        || !PyTuple_Check(args[5]) || PyTuple_GET_SIZE(args[5]) != F_NFIELDS
        || !PyType_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "setup_loop(Handle, TimerHandle, InlineSelector, "
                        "callback_failed, max_select_timeout: float, fields: tuple, "
                        "ReactorSelector)");
        return NULL;
    }
    if (slot_offsets(args[5], (PyTypeObject *)args[0], handle_off, F_NFIELDS,
                     "setup_loop: fields must be Handle's writable __slots__") < 0)
        return NULL;
    clear_handle_pool();
    Py_XSETREF(handle_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_XSETREF(timer_type, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(inline_selector_type, (PyTypeObject *)Py_NewRef(args[2]));
    Py_XSETREF(reactor_selector_type, (PyTypeObject *)Py_NewRef(args[6]));
    Py_XSETREF(callback_failed, Py_NewRef(args[3]));
    Py_XSETREF(max_select_timeout, Py_NewRef(args[4]));
    Py_CLEAR(timer_lt);                 /* setup_timers checks the new one */
    timer_lt_tag = 0;
    if (deque_popleft == NULL) {
        PyObject *m = PyImport_ImportModule("collections");
        PyObject *dq = m ? PyObject_GetAttrString(m, "deque") : NULL;
        PyObject *pl = dq ? PyObject_GetAttrString(dq, "popleft") : NULL;
        PyObject *ap = pl ? PyObject_GetAttrString(dq, "append") : NULL;
        Py_XDECREF(m);
        if (ap == NULL || !PyType_Check(dq) || !Py_IS_TYPE(pl, &PyMethodDescr_Type)
            || !Py_IS_TYPE(ap, &PyMethodDescr_Type)) {
            Py_XDECREF(dq);
            Py_XDECREF(pl);
            Py_XDECREF(ap);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "setup_loop: collections.deque.popleft");
            return NULL;
        }
        deque_type = (PyTypeObject *)dq;
        deque_popleft = pl;
        deque_append = ap;
    }
    if (np_stream_setup() < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* setup_timers((TimerHandle._scheduled, TimerHandle._when), asyncio.events,
 *              asyncio.tasks, asyncio.futures): what call_at/call_later/create_task need
 * (loop.py calls it when TimerHandle's __slots__ are the known ones; without
 * it those take the Python paths). */
static PyObject *
speedups_setup_timers(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 4 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) != 2
        || !PyModule_Check(args[1]) || !PyModule_Check(args[2]) || !PyModule_Check(args[3])
        || timer_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "setup_timers((TimerHandle._scheduled, "
                        "TimerHandle._when), asyncio.events, asyncio.tasks, asyncio.futures), "
                        "after setup_loop");
        return NULL;
    }
    Py_ssize_t off[2];
    if (slot_offsets(args[0], timer_type, off, 2,
                     "setup_timers: fields must be TimerHandle's writable __slots__") < 0)
        return NULL;
    PyObject *ed = PyModule_GetDict(args[1]), *d = PyModule_GetDict(args[2]),
        *fd = PyModule_GetDict(args[3]);
    if (ed == NULL || d == NULL || fd == NULL)
        return NULL;
    timer_off_scheduled = off[0];
    timer_off_when = off[1];
    /* TimerHandle.__lt__ compared in C only while it is asyncio.events' own. */
    PyObject *lt = _PyType_Lookup(timer_type, s_lt);
    Py_XSETREF(timer_lt, np_is_stdlib(lt, ed, "TimerHandle.__lt__") ? Py_NewRef(lt) : NULL);
    timer_lt_tag = 0;
    Py_XSETREF(tasks_dict, Py_NewRef(d));
    Py_XSETREF(futures_dict, Py_NewRef(fd));
    if (loop_kwnames == NULL && (loop_kwnames = PyTuple_Pack(1, s_loop_kw)) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

/* setup_transport(_NativeSocketTransport, (its _wconn, _direct, _closing
 * slot descriptors)): tr_field reads those slots at their offsets. */
static PyObject *
speedups_setup_transport(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])
        || PyTuple_GET_SIZE(args[1]) != TR_NFIELDS) {
        PyErr_SetString(PyExc_TypeError, "setup_transport(cls, (cls._wconn, cls._direct, "
                        "cls._closing))");
        return NULL;
    }
    if (slot_offsets(args[1], (PyTypeObject *)args[0], tr_off, TR_NFIELDS,
                     "setup_transport: fields must be the class's writable __slots__") < 0)
        return NULL;
    Py_XSETREF(native_tr_type, (PyTypeObject *)Py_NewRef(args[0]));
    Py_RETURN_NONE;
}

/* -- module --------------------------------------------------------------- */

/* set_native(addresses of np_conn_write, np_reactor_poll, np_record_take,
 *            np_reactor_kick; _reactor._dispatch_record) */
static PyObject *
speedups_set_native(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 5 || !PyCallable_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "set_native(np_conn_write, np_reactor_poll, "
                        "np_record_take, np_reactor_kick, dispatch_record)");
        return NULL;
    }
    void *a[4];
    for (int i = 0; i < 4; i++)
        a[i] = PyLong_AsVoidPtr(args[i]);
    if (PyErr_Occurred())
        return NULL;
    conn_write = (conn_write_fn)a[0];
    reactor_poll = (reactor_poll_fn)a[1];
    record_take = (record_take_fn)a[2];
    reactor_kick = (reactor_kick_fn)a[3];
    Py_XSETREF(dispatch_record, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

static PyObject *
speedups_stream_feeds(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyLong_FromUnsignedLongLong(np_stream_feeds);
}

static PyObject *
speedups_record_size(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyLong_FromSize_t(sizeof(np_record));
}

static PyMethodDef speedups_methods[] = {
    {"set_native", (PyCFunction)(void (*)(void))speedups_set_native, METH_FASTCALL,
     "set_native(addresses of np_conn_write, np_reactor_poll, np_record_take, "
     "np_reactor_kick; dispatch_record)"},
    {"setup_loop", (PyCFunction)(void (*)(void))speedups_setup_loop, METH_FASTCALL,
     "setup_loop(Handle, TimerHandle, InlineSelector, callback_failed, "
     "max_select_timeout, handle_fields, ReactorSelector)"},
    {"setup_timers", (PyCFunction)(void (*)(void))speedups_setup_timers, METH_FASTCALL,
     "setup_timers((TimerHandle._scheduled, TimerHandle._when), asyncio.events, "
     "asyncio.tasks, asyncio.futures)"},
    {"setup_transport", (PyCFunction)(void (*)(void))speedups_setup_transport, METH_FASTCALL,
     "setup_transport(_NativeSocketTransport, (its _wconn, _direct, _closing slots))"},
    {"stream_feeds", speedups_stream_feeds, METH_NOARGS,
     "reads handed to asyncio's StreamReader by stream_feed.c so far"},
    {"record_size", speedups_record_size, METH_NOARGS,
     "sizeof(np_record) as this module was compiled"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "npaio._speedups",
    "npaio's loop-thread fast paths (see speedups.c's header).", -1,
    speedups_methods, NULL, NULL, NULL, NULL,
};

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (intern(&s_wconn, "_wconn") || intern(&s_write_slow, "_write_slow")
        || intern(&s_write_done, "_write_done") || intern(&s_direct, "_direct")
        || intern(&s_data_received, "data_received")
        || intern(&s_fatal_error, "_fatal_error") || intern(&s_cancelled, "_cancelled")
        || intern(&s_run, "_run") || intern(&s_popleft, "popleft")
        || intern(&s_appendleft, "appendleft") || intern(&s_closing, "_closing") || intern(&s_task, "Task")
        || intern(&s_loop_kw, "loop") || intern(&s_name_kw, "name")
        || intern(&s_call_at_slow, "_call_at_slow")
        || intern(&s_call_later_slow, "_call_later_slow")
        || intern(&s_create_task_slow, "_create_task_slow")
        || intern(&s_scheduled, "_scheduled") || intern(&s_future, "Future")
        || intern(&s_create_future_slow, "_create_future_slow")
        || intern(&s_dr_failed, "Fatal error: protocol.data_received() call failed.")
        || intern(&s_selector, "_selector") || intern(&s_process_events, "_process_events")
        || intern(&s_select, "select") || intern(&s_append, "append")
        || intern(&s_time, "time") || intern(&s_when, "_when")
        || intern(&s_run_once_slow, "_run_once_slow")
        || intern(&s_call_soon_slow, "_call_soon_slow")
        || intern(&s_prune_timers, "_prune_timers") || intern(&s_lt, "__lt__")
        || intern(&s_context_kw, "context")
        || intern(&s_get_buffer, "get_buffer") || intern(&s_buffer_updated, "buffer_updated")
        || intern(&s_hold_rest, "_hold_rest")
        || intern(&s_gb_failed, "Fatal error: protocol.get_buffer() call failed.")
        || intern(&s_bu_failed, "Fatal error: protocol.buffer_updated() call failed.")
        || (s_minus_one = PyLong_FromLong(-1)) == NULL)
        return NULL;
    if (PyType_Ready(&TransportBase_Type) < 0 || PyType_Ready(&LoopBase_Type) < 0
        || PyType_Ready(&ReactorBase_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TransportBase_Type);
    if (PyModule_AddObject(m, "TransportBase", (PyObject *)&TransportBase_Type) < 0) {
        Py_DECREF(&TransportBase_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LoopBase_Type);
    if (PyModule_AddObject(m, "LoopBase", (PyObject *)&LoopBase_Type) < 0) {
        Py_DECREF(&LoopBase_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&ReactorBase_Type);
    if (PyModule_AddObject(m, "ReactorBase", (PyObject *)&ReactorBase_Type) < 0) {
        Py_DECREF(&ReactorBase_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
