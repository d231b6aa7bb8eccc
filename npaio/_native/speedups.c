/* speedups.c -- npaio._speedups: the loop thread's per-request Python paths, in C.
 *
 * What it owns: three hot paths that run per request or per ready callback on
 * the loop thread, where callgrind showed Python bytecode and cffi argument
 * conversion costing more than the C core's own work (benchmarks/ATTEMPTS.md,
 * attempt 19):
 *   - TransportBase.write(bytes): np_conn_write() called directly, without
 *     cffi's argument conversion and its GIL release/re-take;
 *   - dispatch(): completion records to protocol.data_received(bytes);
 *   - run_ready(): the ready queue's asyncio Handle bodies (Handle._run).
 * Everything that is not the common case calls back into the Python methods
 * that do it (Transport._write_slow, _reactor._dispatch_record,
 * Handle._run, loop._callback_failed), so transports.py and loop.py remain
 * the readable reference of what happens; this file only skips frames.
 *
 * Threads: the loop thread only, with the GIL held. Unlike the C core it
 * touches Python objects; no poller thread ever calls it. np_conn_write() is
 * non-blocking; it takes the connection's mutex, which pollers hold only for
 * short non-blocking sections and never together with the GIL.
 *
 * The C core stays one copy, in npaio._np: _reactor.py hands this module the
 * address of np_conn_write (cffi's ffi.addressof) through set_conn_write().
 * Transports publish their np_conn address as the int `_wconn`, 0 whenever
 * write() must take the Python path (no connection, connection lost,
 * write_eof); transports.py clears it before the connection is released, so
 * a stale address is never used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stddef.h>

#include "np.h"

typedef int64_t (*conn_write_fn)(np_conn *, const char *, size_t);
static conn_write_fn conn_write;

static PyObject *s_wconn, *s_write_slow, *s_write_done, *s_direct, *s_protocol,
    *s_data_received, *s_fatal_error, *s_cancelled, *s_context, *s_callback,
    *s_args, *s_run, *s_popleft, *s_dr_failed;

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

/* -- TransportBase.write ---------------------------------------------------- */

static PyObject *
transport_write(PyObject *self, PyObject *data)
{
    if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0 && conn_write != NULL) {
        PyObject *w = PyObject_GetAttr(self, s_wconn);
        if (w == NULL)
            return NULL;
        void *conn = PyLong_AsVoidPtr(w);
        Py_DECREF(w);
        if (conn == NULL && PyErr_Occurred())
            return NULL;
        if (conn != NULL) {
            int64_t n = conn_write((np_conn *)conn, PyBytes_AS_STRING(data),
                                   (size_t)PyBytes_GET_SIZE(data));
            if (n == 0)             /* all sent (or queued below nothing) */
                Py_RETURN_NONE;
            PyObject *pn = PyLong_FromLongLong(n);
            if (pn == NULL)
                return NULL;
            /* Flow control and errors: Transport._write_done(n). */
            PyObject *res = PyObject_CallMethodOneArg(self, s_write_done, pn);
            Py_DECREF(pn);
            return res;
        }
    }
    return PyObject_CallMethodOneArg(self, s_write_slow, data);
}

static PyMethodDef transport_methods[] = {
    {"write", (PyCFunction)transport_write, METH_O,
     "Write bytes: sent at once if the socket takes them, else queued."},
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

/* The common record (data, no EOF/close/drain, transport `_direct`): hand the
 * bytes to protocol.data_received with _data_received's error handling.
 * Returns 1 done, 0 not direct (caller takes the slow path), -1 error. */
static int
deliver_direct(PyObject *tr, const char *data, Py_ssize_t len)
{
    PyObject *d = PyObject_GetAttr(tr, s_direct);
    if (d == NULL)
        return -1;
    int direct = PyObject_IsTrue(d);
    Py_DECREF(d);
    if (direct <= 0)
        return direct;
    PyObject *proto = PyObject_GetAttr(tr, s_protocol);
    if (proto == NULL)
        return -1;
    PyObject *bytes = PyBytes_FromStringAndSize(data, len);
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
    if (must_propagate())
        return -1;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return -1;
    PyObject *args[2] = {exc, s_dr_failed};
    res = call_in_except(exc, s_fatal_error, args, 2, tr);
    Py_DECREF(exc);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 1;
}

/* dispatch(records_addr, n, arena_addr, transports, slow): run the n drained
 * records; slow(tr, flags, err, data_or_None) takes every record that is not
 * plain data for a `_direct` transport. An exception that must propagate
 * leaves the remaining records undelivered, as the Python loop did. */
static PyObject *
speedups_dispatch(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 5 || !PyDict_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "dispatch(records_addr, n, arena_addr, transports: dict, slow)");
        return NULL;
    }
    const np_record *recs = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    const char *arena = PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *transports = args[3], *slow = args[4];
    for (Py_ssize_t i = 0; i < n; i++) {
        const np_record *rec = &recs[i];
        PyObject *key = PyLong_FromUnsignedLongLong(rec->id);
        if (key == NULL)
            return NULL;
        PyObject *tr = PyDict_GetItemWithError(transports, key);
        Py_DECREF(key);
        if (tr == NULL) {
            if (PyErr_Occurred())
                return NULL;
            continue;               /* closed and released since the drain */
        }
        Py_INCREF(tr);              /* data_received may drop the dict's ref */
        int done = 0;
        if (rec->len && !(rec->flags & RARE)) {
            done = deliver_direct(tr, arena + rec->off, (Py_ssize_t)rec->len);
            if (done < 0) {
                Py_DECREF(tr);
                return NULL;
            }
        }
        if (!done) {
            PyObject *data = rec->len
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
                Py_DECREF(tr);
                return NULL;
            }
            Py_DECREF(res);
        }
        Py_DECREF(tr);
    }
    Py_RETURN_NONE;
}

/* -- run_ready ------------------------------------------------------------ */

/* One asyncio Handle or TimerHandle: Handle._run's body. -1: propagate. */
static int
run_plain_handle(PyObject *h, PyObject *failed)
{
    PyObject *ctx = PyObject_GetAttr(h, s_context);
    if (ctx == NULL)
        return -1;
    PyObject *cb = PyObject_GetAttr(h, s_callback);
    if (cb == NULL) {
        Py_DECREF(ctx);
        return -1;
    }
    PyObject *args = PyObject_GetAttr(h, s_args);
    if (args == NULL) {
        Py_DECREF(ctx);
        Py_DECREF(cb);
        return -1;
    }
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

/* run_ready(ready, handle_type, timer_type, failed): pop and run the
 * callbacks ready now (len(ready) of them, not those they schedule), as
 * base_events._run_once's last loop. handle_type/timer_type get Handle._run's
 * body here, with failed(handle, exc) for its except branch; any other class
 * gets its own _run(). */
static PyObject *
speedups_run_ready(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "run_ready(ready, handle_type, timer_type, failed)");
        return NULL;
    }
    PyObject *ready = args[0], *failed = args[3];
    PyTypeObject *ht = (PyTypeObject *)args[1], *tt = (PyTypeObject *)args[2];
    Py_ssize_t ntodo = PyObject_Length(ready);
    if (ntodo < 0)
        return NULL;
    PyObject *popleft = ntodo ? PyObject_GetAttr(ready, s_popleft) : NULL;
    if (ntodo && popleft == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < ntodo; i++) {
        PyObject *h = PyObject_CallNoArgs(popleft);
        if (h == NULL)
            goto error;
        PyObject *c = PyObject_GetAttr(h, s_cancelled);
        int cancelled = c == NULL ? -1 : PyObject_IsTrue(c);
        Py_XDECREF(c);
        int rc = 0;
        if (cancelled < 0) {
            rc = -1;
        } else if (!cancelled) {
            if (Py_TYPE(h) == ht || Py_TYPE(h) == tt) {
                rc = run_plain_handle(h, failed);
            } else {
                PyObject *res = PyObject_CallMethodNoArgs(h, s_run);
                rc = res == NULL ? -1 : 0;
                Py_XDECREF(res);
            }
        }
        Py_DECREF(h);
        if (rc < 0)
            goto error;
    }
    Py_XDECREF(popleft);
    Py_RETURN_NONE;
error:
    Py_XDECREF(popleft);
    return NULL;
}

/* -- module --------------------------------------------------------------- */

static PyObject *
speedups_set_conn_write(PyObject *mod, PyObject *addr)
{
    (void)mod;
    void *p = PyLong_AsVoidPtr(addr);
    if (p == NULL && PyErr_Occurred())
        return NULL;
    conn_write = (conn_write_fn)p;
    Py_RETURN_NONE;
}

static PyObject *
speedups_record_size(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyLong_FromSize_t(sizeof(np_record));
}

static PyMethodDef speedups_methods[] = {
    {"dispatch", (PyCFunction)(void (*)(void))speedups_dispatch, METH_FASTCALL,
     "dispatch(records_addr, n, arena_addr, transports, slow)"},
    {"run_ready", (PyCFunction)(void (*)(void))speedups_run_ready, METH_FASTCALL,
     "run_ready(ready, handle_type, timer_type, failed)"},
    {"set_conn_write", speedups_set_conn_write, METH_O,
     "set_conn_write(address of np_conn_write)"},
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
        || intern(&s_protocol, "_protocol") || intern(&s_data_received, "data_received")
        || intern(&s_fatal_error, "_fatal_error") || intern(&s_cancelled, "_cancelled")
        || intern(&s_context, "_context") || intern(&s_callback, "_callback")
        || intern(&s_args, "_args") || intern(&s_run, "_run")
        || intern(&s_popleft, "popleft")
        || intern(&s_dr_failed, "Fatal error: protocol.data_received() call failed."))
        return NULL;
    if (PyType_Ready(&TransportBase_Type) < 0)
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
    return m;
}
