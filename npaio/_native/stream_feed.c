/* stream_feed.c -- npaio._speedups: asyncio streams' data_received, in C.
 *
 * What it owns: the step from a read to asyncio's own streams
 * (asyncio.start_server, open_connection). For them a read runs three
 * Python functions and a property, the same in 3.10-3.13:
 *     StreamReaderProtocol.data_received(data)
 *         reader = self._stream_reader        (a property over a weakref)
 *         reader.feed_data(data)              (extend _buffer, wake, maybe pause)
 *             self._wakeup_waiter()           (waiter.set_result(None))
 * np_stream_feed() takes the same steps, in the same order, on the same
 * attributes, and copies the read straight into the reader's bytearray (no
 * bytes object in between). Callgrind put the Python version at ~4,400
 * instructions per read on 3.11 (ATTEMPTS.md 47); the Python frames, the
 * property call and the bytes object are what this removes.
 *
 * When it applies: the protocol is exactly asyncio.StreamReaderProtocol,
 * its reader exactly asyncio.StreamReader with `_eof` False and a bytearray
 * `_buffer`, and those classes' data_received, _stream_reader, feed_data and
 * _wakeup_waiter are still the stdlib's (functions of asyncio.streams with
 * those names, checked once at setup; afterwards a change of either class
 * changes its type version tag, and then the four are looked up again).
 * Anything else -- subclasses, patched methods, a reader gone or at EOF --
 * returns 0 and the caller calls protocol.data_received(bytes) as before.
 * Not seen: a data_received or feed_data assigned on one instance.
 *
 * Threads: the loop thread only, with the GIL held (speedups.c's dispatch).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "stream_feed.h"

unsigned long long np_stream_feeds;

static PyTypeObject *proto_type, *reader_type;  /* NULL: fast path off */
static PyObject *orig[4];                       /* what _PyType_Lookup must find */
static unsigned int proto_tag, reader_tag;      /* the version tags checked last */
static PyObject *s_names[4], *s_wr, *s_eof, *s_buffer, *s_waiter, *s_limit, *s_transport,
    *s_paused, *s_cancelled, *s_set_result, *s_pause_reading;
enum { N_DATA_RECEIVED, N_STREAM_READER, N_FEED_DATA, N_WAKEUP_WAITER };

/* A function defined in the module with these globals under this qualified
 * name (a wrapper made elsewhere, even with functools.wraps, has other
 * globals); for a property, its getter. */
int
np_is_stdlib(PyObject *f, PyObject *globals, const char *qualname)
{
    if (f != NULL && Py_IS_TYPE(f, &PyProperty_Type)) {
        PyObject *fget = PyObject_GetAttrString(f, "fget");
        int ok = fget != NULL && np_is_stdlib(fget, globals, qualname);
        Py_XDECREF(fget);
        PyErr_Clear();
        return ok;
    }
    if (f == NULL || !PyFunction_Check(f) || PyFunction_GET_GLOBALS(f) != globals)
        return 0;
    PyObject *q = ((PyFunctionObject *)f)->func_qualname;
    return q != NULL && PyUnicode_Check(q) && PyUnicode_CompareWithASCIIString(q, qualname) == 0;
}

int
np_stream_setup(void)
{
    static const char *names[4] = {"data_received", "_stream_reader", "feed_data",
                                   "_wakeup_waiter"};
    static const char *qualnames[4] = {
        "StreamReaderProtocol.data_received", "StreamReaderProtocol._stream_reader",
        "StreamReader.feed_data", "StreamReader._wakeup_waiter"};
    if (s_wr == NULL) {
        const char *attrs[] = {"_stream_reader_wr", "_eof", "_buffer", "_waiter", "_limit",
                               "_transport", "_paused", "cancelled", "set_result",
                               "pause_reading"};
        PyObject **slots[] = {&s_wr, &s_eof, &s_buffer, &s_waiter, &s_limit, &s_transport,
                              &s_paused, &s_cancelled, &s_set_result, &s_pause_reading};
        for (int i = 0; i < 4; i++)
            if ((s_names[i] = PyUnicode_InternFromString(names[i])) == NULL)
                return -1;
        for (size_t i = 0; i < sizeof attrs / sizeof *attrs; i++)
            if ((*slots[i] = PyUnicode_InternFromString(attrs[i])) == NULL)
                return -1;
    }
    PyObject *mod = PyImport_ImportModule("asyncio.streams");
    if (mod == NULL)
        return -1;
    PyObject *pt = PyObject_GetAttrString(mod, "StreamReaderProtocol");
    PyObject *rt = pt ? PyObject_GetAttrString(mod, "StreamReader") : NULL;
    PyObject *globals = PyModule_GetDict(mod);
    Py_DECREF(mod);
    if (rt == NULL) {
        Py_XDECREF(pt);
        return -1;
    }
    int ok = PyType_Check(pt) && PyType_Check(rt);
    for (int i = 0; ok && i < 4; i++) {
        PyTypeObject *t = (PyTypeObject *)(i < N_FEED_DATA ? pt : rt);
        PyObject *f = _PyType_Lookup(t, s_names[i]);
        ok = np_is_stdlib(f, globals, qualnames[i]);
        if (ok)
            Py_XSETREF(orig[i], Py_NewRef(f));
    }
    Py_CLEAR(proto_type);
    Py_CLEAR(reader_type);
    proto_tag = reader_tag = 0;
    if (ok) {       /* else off: someone replaced them before npaio came */
        proto_type = (PyTypeObject *)Py_NewRef(pt);
        reader_type = (PyTypeObject *)Py_NewRef(rt);
    }
    Py_DECREF(pt);
    Py_DECREF(rt);
    return 0;
}

int
np_tag_current(PyTypeObject *t, unsigned int tag)
{
    return tag != 0 && t->tp_version_tag == tag
#if PY_VERSION_HEX < 0x030C0000
        && (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)
#endif
        ;
}

unsigned int
np_tag_now(PyTypeObject *t)
{
#if PY_VERSION_HEX < 0x030C0000
    return (t->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) ? t->tp_version_tag : 0;
#else
    return t->tp_version_tag;
#endif
}

/* The four methods are still the stdlib's. Cheap while neither class has
 * changed since the last look (version tags); else looked up again. */
static int
methods_current(void)
{
    if (np_tag_current(proto_type, proto_tag) && np_tag_current(reader_type, reader_tag))
        return 1;
    for (int i = 0; i < 4; i++) {
        PyTypeObject *t = i < N_FEED_DATA ? proto_type : reader_type;
        if (_PyType_Lookup(t, s_names[i]) != orig[i])
            return 0;
    }
    /* _PyType_Lookup assigned the tags if it could; 0 means look every time. */
    proto_tag = np_tag_now(proto_type);
    reader_tag = np_tag_now(reader_type);
    return 1;
}

/* proto._stream_reader, when the fast path applies to it: a new reference
 * to the StreamReader, or NULL (no error set) to take the Python path. */
static PyObject *
fast_reader(PyObject *proto)
{
    if (proto_type == NULL || Py_TYPE(proto) != proto_type)
        return NULL;
    PyObject *wr = PyObject_GetAttr(proto, s_wr);
    PyObject *reader = NULL;
    if (wr != NULL && PyWeakref_CheckRef(wr)) {
#if PY_VERSION_HEX >= 0x030D0000
        if (PyWeakref_GetRef(wr, &reader) < 0)
            reader = NULL;
#else
        PyObject *r = PyWeakref_GetObject(wr);
        reader = r != NULL && r != Py_None ? Py_NewRef(r) : NULL;
#endif
    }
    Py_XDECREF(wr);
    PyErr_Clear();
    if (reader != NULL && (Py_TYPE(reader) != reader_type || !methods_current()))
        Py_CLEAR(reader);
    return reader;
}

/* feed_data's tail: pause the transport once the buffer holds more than
 * twice the limit. Python tests `_transport is not None and not _paused`
 * first; with an int limit (StreamReader checks it is > 0) the length test
 * goes first here, as these plain attribute reads have no side effects, so
 * a read under the limit costs one lookup instead of three. 0, or -1 with
 * an exception (as feed_data raises it). */
static int
maybe_pause(PyObject *reader, PyObject *buf)
{
    PyObject *limit = PyObject_GetAttr(reader, s_limit);
    if (limit == NULL)
        return -1;
    int over = -2;      /* not known yet: an odd limit */
    if (PyLong_CheckExact(limit)) {
        int overflow;
        long long l = PyLong_AsLongLongAndOverflow(limit, &overflow);
        if (!overflow && l < (1LL << 61) && l > -(1LL << 61))
            over = (long long)PyByteArray_GET_SIZE(buf) > 2 * l;
        else if (overflow)
            over = overflow < 0;
    }
    PyErr_Clear();
    if (over == 0) {
        Py_DECREF(limit);
        return 0;
    }
    PyObject *tr = PyObject_GetAttr(reader, s_transport);
    int go = tr == NULL ? -1 : tr != Py_None;
    if (go > 0) {
        PyObject *paused = PyObject_GetAttr(reader, s_paused);
        int p = paused ? PyObject_IsTrue(paused) : -1;
        Py_XDECREF(paused);
        go = p < 0 ? -1 : !p;
    }
    if (go > 0 && over == -2) {     /* Python's arithmetic, in its order */
        PyObject *two = PyLong_FromLong(2);
        PyObject *twice = two ? PyNumber_Multiply(two, limit) : NULL;
        PyObject *len = twice ? PyLong_FromSsize_t(PyByteArray_GET_SIZE(buf)) : NULL;
        go = len ? PyObject_RichCompareBool(len, twice, Py_GT) : -1;
        Py_XDECREF(two);
        Py_XDECREF(twice);
        Py_XDECREF(len);
    }
    Py_DECREF(limit);
    if (go <= 0) {
        Py_XDECREF(tr);
        return go;
    }
    PyObject *res = PyObject_CallMethodNoArgs(tr, s_pause_reading);
    Py_DECREF(tr);
    if (res != NULL) {
        Py_DECREF(res);
        return PyObject_SetAttr(reader, s_paused, Py_True);
    }
    if (!PyErr_ExceptionMatches(PyExc_NotImplementedError))
        return -1;
    PyErr_Clear();      /* the transport can't be paused: forget it */
    return PyObject_SetAttr(reader, s_transport, Py_None);
}

int
np_stream_feed(PyObject *proto, const char *data, Py_ssize_t len)
{
    PyObject *reader = fast_reader(proto);
    if (reader == NULL)
        return 0;
    /* Checks first, while the Python path can still take over. */
    PyObject *eof = PyObject_GetAttr(reader, s_eof);
    PyObject *buf = eof == Py_False ? PyObject_GetAttr(reader, s_buffer) : NULL;
    Py_XDECREF(eof);
    if (buf == NULL || !PyByteArray_CheckExact(buf) || len <= 0) {
        Py_XDECREF(buf);
        Py_DECREF(reader);
        PyErr_Clear();
        return 0;
    }
    int rc = -1;
    /* self._buffer.extend(data): what bytearray's += does (same growth). */
    Py_ssize_t have = PyByteArray_GET_SIZE(buf);
    if (len > PY_SSIZE_T_MAX - have) {
        PyErr_NoMemory();
        goto out;
    }
    if (PyByteArray_Resize(buf, have + len) < 0)
        goto out;       /* e.g. BufferError: the buffer is exported */
    memcpy(PyByteArray_AS_STRING(buf) + have, data, (size_t)len);
    /* self._wakeup_waiter() */
    PyObject *waiter = PyObject_GetAttr(reader, s_waiter);
    if (waiter == NULL)
        goto out;
    if (waiter != Py_None) {
        PyObject *c = NULL;
        int cancelled = -1;
        if (PyObject_SetAttr(reader, s_waiter, Py_None) == 0
            && (c = PyObject_CallMethodNoArgs(waiter, s_cancelled)) != NULL)
            cancelled = PyObject_IsTrue(c);
        Py_XDECREF(c);
        PyObject *res = cancelled == 0
            ? PyObject_CallMethodOneArg(waiter, s_set_result, Py_None) : NULL;
        Py_DECREF(waiter);
        if (res == NULL && cancelled <= 0)
            goto out;
        Py_XDECREF(res);
    } else {
        Py_DECREF(waiter);
    }
    if (maybe_pause(reader, buf) < 0)
        goto out;
    np_stream_feeds++;
    rc = 1;
out:
    Py_DECREF(buf);
    Py_DECREF(reader);
    return rc;
}
