/* np.h -- the contract between npaio's C core and Python (the cffi cdef).
 *
 * Only declarations cffi can parse live here (build.py drops '#' lines).
 * Every function below is called from the ONE Python loop thread unless it
 * says otherwise; the poller threads never call into Python.
 *
 * Life of a connection, as the loop sees it:
 *   np_conn_open() (the loop accepted or connected the socket)
 *   -> np_conn_write()/pause/resume/...
 *   -> np_conn_close() (or a CLOSED record from a poller)
 *   -> np_conn_release() once, after connection_lost: the C side frees the
 *      struct and closes the fd later, on its own schedule.
 */

/* Completion record flags (np_record.flags). */
#define NP_EV_READ 2
#define NP_EV_EOF 4
#define NP_EV_ERROR 8
#define NP_EV_CLOSED 16
#define NP_EV_DRAINED 32
#define NP_EV_WRITE_ERROR 64
/* The record's data (len bytes) is still in the connection's input, not in
 * the arena: np_record_take() copies it out (np_pollbuf_release() gives the
 * bytes of records never dispatched back to their connections).
 * Only np_reactor_poll() makes such records, when its np_pollbuf has conns. */
#define NP_EV_INPLACE 128

/* Load balancers (np_reactor_new). */
#define NP_LB_ROUND_ROBIN 0
#define NP_LB_RANDOM 1
#define NP_LB_LEAST_CONN 2

/* np_conn_write() returns -NP_ECLOSED: a poller already closed the connection
 * gracefully (a close() flushed); after an error it returns -errno. */
#define NP_ECLOSED 100000

/* Number of uint64 counters np_reactor_stats() writes per poller and for the
 * reactor itself, and np_native_counters() in total. */
#define NP_POLLER_STATS 10
#define NP_REACTOR_STATS 10
#define NP_GLOBAL_COUNTERS 7

typedef struct np_reactor np_reactor;
typedef struct np_conn np_conn;
typedef struct np_node np_node;
typedef struct np_linkbuffer np_linkbuffer;

/* A contiguous run of buffer memory handed to Python as a memoryview; `owner`
 * carries one reference (np_node_unref drops it) so the memory outlives any
 * view of it. */
typedef struct np_span {
    char *ptr;
    size_t len;
    np_node *owner;
} np_span;

/* One completion, 24 bytes, read by Python with struct '=QIiII'. */
typedef struct np_record {
    uint64_t id;        /* the connection's id: unique for the process's life */
    uint32_t flags;     /* NP_EV_* */
    int32_t err;        /* errno, for NP_EV_ERROR */
    uint32_t off;       /* data offset in the drain arena */
    uint32_t len;       /* data length (0: no data) */
} np_record;

np_reactor *np_reactor_new(int pollers, int balance, int *err);
void np_reactor_free(np_reactor *r);
int np_reactor_efd(np_reactor *r);
int np_reactor_npollers(np_reactor *r);
int np_reactor_prepare_sleep(np_reactor *r);
int np_reactor_drain(np_reactor *r, np_record *recs, int maxrecs,
                     char *arena, uint32_t arena_cap, int efd_ready);
/* np_reactor_poll()'s output buffers, filled in once by the loop: one
 * pointer argument per call instead of four (each cffi argument costs
 * ~50-100 instructions to convert). */
typedef struct np_pollbuf {
    np_record *recs;
    int maxrecs;
    char *arena;
    uint32_t arena_cap;
    np_conn **conns;    /* [maxrecs] or NULL: an NP_EV_INPLACE record's
                           connection, with a reference */
} np_pollbuf;

/* Inline mode over an epoll selector: put the loop selector's epoll fd in
 * the poller's set (returns 0 or an errno); then, once per loop iteration,
 * np_reactor_poll() waits up to `timeout` ms (-1: forever; 0 if completions
 * are queued), handles the ready connections and drains like
 * np_reactor_drain() into `pb`. Returns records * 2, plus 1 if the
 * selector's fd is readable (the loop then runs its selector, timeout 0). */
int np_reactor_watch_selector(np_reactor *r, int fd);
int np_reactor_poll(np_reactor *r, np_pollbuf *pb, int timeout);
/* The loop says when it enters and leaves run_forever. While it runs, its
 * writes are sent once per iteration (conn.c np_conn_write): by the pollers,
 * woken by np_reactor_prepare_sleep/np_reactor_drain, or in inline mode by
 * the loop's next poll. Leaving sends (or kicks) what is still listed. */
void np_reactor_set_running(np_reactor *r, int running);
/* Inline mode: poll without sleeping for up to `us` microseconds before a
 * wait that would block (0: never). Loop thread, before or between runs. */
void np_reactor_set_spin(np_reactor *r, int us);
/* Send (inline mode) or hand to their pollers the writes queued so far,
 * now rather than at the next poll: the dispatcher calls it after a batch
 * of records, so a protocol's reply leaves as soon as the batch is done. */
void np_reactor_kick(np_reactor *r);
int np_reactor_stats(np_reactor *r, uint64_t *out, int cap);
/* An NP_EV_INPLACE record (its pb->conns[i]): take copies its len bytes to
 * dst and drops the reference; release gives the bytes of every such record
 * among the first n back to their connections (a later drain has them). */
void np_record_take(np_conn *c, char *dst, size_t len);
void np_pollbuf_release(np_pollbuf *pb, int n);
void np_native_counters(uint64_t *out);

np_conn *np_conn_open(np_reactor *r, int fd, int *err);
uint64_t np_conn_id(np_conn *c);
/* np_conn_write: 0 when the output holds at most the connection's write
 * high-water mark (np_conn_set_write_high; 0 until set), else the bytes it
 * holds; -errno (or -NP_ECLOSED) on error. */
int64_t np_conn_write(np_conn *c, const char *data, size_t len);
void np_conn_set_write_high(np_conn *c, size_t high);
size_t np_conn_wbuf_size(np_conn *c);
int np_conn_set_notify(np_conn *c, size_t low);
int np_conn_pause_reading(np_conn *c);
int np_conn_resume_reading(np_conn *c);
int np_conn_shutdown_wr(np_conn *c);
int np_conn_close(np_conn *c, int abort);
void np_conn_release(np_conn *c);

/* Zero-copy connections (npaio.NocopyProtocol): the loop reads the input
 * LinkBuffer itself (no copy into the drain arena) and hands whole output
 * LinkBuffers over without copying. */
np_linkbuffer *np_conn_input(np_conn *c);
int np_conn_set_nocopy(np_conn *c, int on);
void np_conn_input_consumed(np_conn *c, size_t need);
int64_t np_conn_write_lb(np_conn *c, np_linkbuffer *b);

/* npaio.LinkBuffer (linkbuffer.c). A buffer made by np_lb_new has one user
 * thread; a connection's input has the poller as producer and the loop as
 * consumer, and Python uses only the consumer verbs on it. */
np_linkbuffer *np_lb_new(void);
void np_lb_free(np_linkbuffer *b);
size_t np_lb_len(np_linkbuffer *b);
size_t np_lb_malloc_len(np_linkbuffer *b);
int np_lb_span(np_linkbuffer *b, size_t n, np_span *out);
size_t np_lb_peek_copy(np_linkbuffer *b, char *dst, size_t n);
void np_lb_skip(np_linkbuffer *b, size_t n);
int64_t np_lb_index(np_linkbuffer *b, const char *delim, size_t dlen, size_t start);
int np_lb_slice_into(np_linkbuffer *src, np_linkbuffer *dst, size_t n);
size_t np_lb_copy_out(np_linkbuffer *b, char *dst, size_t n);
int np_lb_malloc_span(np_linkbuffer *b, size_t n, np_span *out);
int np_lb_malloc_keep(np_linkbuffer *b, size_t n);
size_t np_lb_put(np_linkbuffer *b, const char *p, size_t n);
int np_lb_link(np_linkbuffer *b, const char *p, size_t n, uint64_t pin);
int np_lb_write_direct(np_linkbuffer *b, const char *p, size_t n, uint64_t pin,
                       size_t remain);
void np_lb_append_lb(np_linkbuffer *b, np_linkbuffer *w);
void np_lb_flush(np_linkbuffer *b);
void np_node_unref(np_node *n);
size_t np_pins_pending(void);
int np_pins_collect(uint64_t *out, int max);
