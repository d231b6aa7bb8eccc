/* stream_feed.h -- asyncio streams' data_received in C (stream_feed.c).
 * Loop thread only, GIL held. */
#ifndef NPAIO_STREAM_FEED_H
#define NPAIO_STREAM_FEED_H

#include <Python.h>

/* Find asyncio.streams' classes and check their methods are the stdlib's;
 * called again, it starts over. 0, or -1 with an exception (no import). */
int np_stream_setup(void);

/* protocol.data_received(data[:len]) for asyncio's own StreamReaderProtocol:
 * 1 done; 0 not applicable, nothing done (call data_received); -1 an
 * exception raised part way, as data_received would have raised it. */
int np_stream_feed(PyObject *proto, const char *data, Py_ssize_t len);

/* Reads fed by np_stream_feed (tests check the path is taken). */
extern unsigned long long np_stream_feeds;

/* Shared with speedups.c's timer heap: whether f is the function the
 * stdlib module with these globals defines under this qualified name; a
 * type's version tag now (0: none), and whether it is still `tag` (no
 * attribute of the type or its bases changed since). */
int np_is_stdlib(PyObject *f, PyObject *globals, const char *qualname);
unsigned int np_tag_now(PyTypeObject *t);
int np_tag_current(PyTypeObject *t, unsigned int tag);

#endif
