/* internal.h -- npaio's C core: the types every .c file shares.
 *
 * Threads: one Python LOOP thread, P POLLER threads (poller_epoll.c).
 * Each field below says who may touch it:
 *   [loop]   loop thread only        [poller] owning poller only
 *   [lock]   under the object's mutex [atomic] C11 atomics, any thread
 *
 * Lifetime (netpoll's deferred free, see conn.c): a connection holds one
 * reference for its owner (dropped when the loop releases it, by the owning
 * poller between two event batches) and one while it sits in the completion
 * queue. The fd is closed when the last reference goes, so a poller can never
 * read from a reused fd number.
 */
#ifndef NP_INTERNAL_H
#define NP_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <stdatomic.h>
#include <pthread.h>
#include <assert.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "np.h"

#ifdef NPAIO_DEBUG
#define NP_ASSERT(x) assert(x)
#else
#define NP_ASSERT(x) ((void)0)
#endif

#define NP_LIKELY(x) __builtin_expect(!!(x), 1)
#define NP_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- mcache.c: power-of-two size classes ------------------------------ */

void *np_mcache_alloc(size_t size, size_t *cap);   /* any thread */
void np_mcache_free(void *p, size_t cap);          /* any thread */

/* ---- process-wide live counters (np_native_counters) ------------------- */

enum { NP_CNT_CONNS, NP_CNT_NODES, NP_CNT_REACTORS, NP_CNT_THREADS,
       NP_CNT_NODE_BYTES, NP_CNT_NODE_ALLOCS, NP_CNT_NODE_FREES };
extern _Atomic int64_t np_counters[NP_GLOBAL_COUNTERS];
#define NP_COUNT(i, d) atomic_fetch_add_explicit(&np_counters[i], (d), memory_order_relaxed)

/* ---- linkbuffer.c ------------------------------------------------------- */

struct np_node {
    struct np_node *_Atomic next;  /* set by the producer before it publishes */
    _Atomic int refs;
    uint32_t cap;                  /* bytes at base[] */
    uint32_t off;                  /* [consumer] read offset */
    _Atomic uint32_t end;          /* [producer writes, consumer reads] committed end */
    uint32_t malloc;               /* [producer] end of reserved bytes */
    uint8_t readonly;              /* reference or foreign node: no malloc into it */
    size_t alloc;                  /* size class of the allocation; 0: malloc'ed header */
    char *base;                    /* data[], an origin's memory, or foreign memory */
    struct np_node *origin;        /* reference node: owner of the memory (ref held) */
    uint64_t pin;                  /* foreign node: Python's pin id (pins.c) */
    char data[];
};

/* Single producer, single consumer. len counts committed (flushed) bytes; a
 * node's end may run ahead of len, the consumer never reads past len. */
struct np_linkbuffer {
    np_node *head;                 /* [consumer] oldest node still held */
    np_node *tail;                 /* [producer] node being written */
    size_t unflushed;              /* [producer] malloc'ed, not yet in len */
    _Atomic size_t len;
};

/* The rest of the LinkBuffer API (Python's verbs) is declared in np.h. */
void np_lb_init(np_linkbuffer *b);
void np_lb_destroy(np_linkbuffer *b);                 /* no other user left */
char *np_lb_malloc(np_linkbuffer *b, size_t n);       /* producer */
void np_lb_malloc_ack(np_linkbuffer *b, size_t n);    /* producer: give back n of the last malloc */
size_t np_lb_write(np_linkbuffer *b, const char *p, size_t n); /* producer: copy + flush */
size_t np_lb_copy_out(np_linkbuffer *b, char *dst, size_t n); /* consumer: read + skip */
int np_lb_iov(np_linkbuffer *b, struct iovec *iov, int max, size_t *total); /* consumer */

/* ---- pins.c ------------------------------------------------------------- */

void np_pin_release(uint64_t pin);                    /* any thread */

/* ---- the objects -------------------------------------------------------- */

/* Input backpressure: a poller stops reading a connection whose input holds
 * in_hwm bytes the loop has not taken (NP_IN_HWM unless a no-copy reader
 * asked for a bigger frame), and the loop resumes it at NP_IN_LWM. */
#define NP_IN_HWM (256u * 1024u)
#define NP_IN_LWM (64u * 1024u)

enum { NP_KIND_CONN = 1, NP_KIND_WAKE = 2, NP_KIND_SELECTOR = 3 };

typedef struct np_poller np_poller;

/* What a poller puts on its release list and frees between batches. */
typedef struct np_obj {
    int kind;
    struct np_obj *release_next;   /* [poller lock] */
} np_obj;

struct np_conn {
    np_obj obj;                    /* kind == NP_KIND_CONN; must be first */
    int fd;
    np_reactor *reactor;
    np_poller *poller;             /* owner, fixed at registration */
    uint64_t id;                   /* unique, never reused (records carry it) */
    _Atomic int refs;

    pthread_mutex_t lock;          /* guards the [lock] fields and writes */
    uint32_t events;               /* [lock] mask now in epoll (0: not added) */
    unsigned registered : 1;       /* [lock] fd is in the poller's epoll */
    unsigned paused : 1;           /* [lock] the protocol paused reading */
    unsigned throttled : 1;        /* [lock] input passed the high-water mark */
    unsigned eof : 1;              /* [lock] peer's FIN seen */
    unsigned armed : 1;            /* [lock] a poller owns the write side */
    unsigned close_req : 1;        /* [lock] close once the output is flushed */
    unsigned shut_req : 1;         /* [lock] shutdown(SHUT_WR) once flushed */
    unsigned notify : 1;           /* [lock] post DRAINED at notify_low */
    unsigned nocopy : 1;           /* [loop] Python reads `in` itself (no arena copy) */
    _Atomic size_t in_hwm;         /* [loop writes, poller reads] input high-water mark */
    _Atomic int closed;            /* set under lock; read anywhere */
    int loop_closed;               /* [loop] the loop closed or released it */
    uint32_t inplace;              /* [loop] input bytes an undispatched record holds */
    size_t notify_low;             /* [lock] */

    np_linkbuffer in;              /* producer: poller; consumer: loop */
    np_linkbuffer out;             /* producer: loop; consumer: whoever holds lock */
    uint32_t read_size;            /* [poller] adaptive read size */

    _Atomic uint32_t pending;      /* NP_EV_* waiting for the loop */
    _Atomic int32_t err;
    size_t whigh;                  /* [loop] write high-water mark (np_conn_write's result) */
    struct np_conn *wnext;         /* [poller rlock] next in its flush list */
    int wqueued;                   /* [poller rlock] in the flush list (holds a ref) */
    struct np_conn *wtaken;        /* [poller] next in the list it took */
    int queued;                    /* [reactor qlock] in the completion queue */
    uint32_t held;                 /* [loop] flags held back while paused */
    struct np_conn *qnext;         /* [reactor qlock] */
    struct np_conn *all_prev, *all_next; /* [reactor alock] */
};

enum { NP_PS_CONNS, NP_PS_EVENTS, NP_PS_BYTES_READ, NP_PS_BYTES_WRITTEN,
       NP_PS_WAKEUPS, NP_PS_READS, NP_PS_WRITES, NP_PS_SPINS, NP_PS_SPIN_HITS,
       NP_PS_POLLS };

struct np_poller {
    np_obj wake;                   /* kind == NP_KIND_WAKE: epoll data of efd */
    int index;
    int epfd;
    int efd;                       /* wakes the poller: stop, release list */
    pthread_t thread;
    int started;
    _Atomic int stop;
    np_reactor *reactor;
    pthread_mutex_t rlock;         /* guards the release and flush lists */
    np_obj *release;
    np_conn *whead, *wtail;        /* [rlock] writes the loop handed over */
    _Atomic int sleeping;          /* [atomic] in (or entering) epoll_wait(-1) */
    int kick_owed;                 /* [loop] listed a write since the last kick */
    int wake_owed;                 /* [poller] queued completions this batch */
    int spin_fails;                /* [inline] spins in a row that found nothing */
    int spin_skip;                 /* [inline] blocking waits left before the next spin */
    int spin_ok;                   /* [inline] the last two rounds served one same conn */
    uint64_t spin_last;            /* [inline] that conn's id, 0 after a round of several */
    _Atomic int64_t stats[NP_POLLER_STATS];
};

enum { NP_RS_DRAINS, NP_RS_COMPLETIONS, NP_RS_LOOP_WAKEUPS, NP_RS_DIRECT_WRITES,
       NP_RS_QUEUED_WRITES, NP_RS_THROTTLES, NP_RS_SLEEPS, NP_RS_ARENA_FULL,
       NP_RS_HANDED_WRITES, NP_RS_POLLER_KICKS };

struct np_reactor {
    pid_t pid;                     /* the process that started the pollers */
    int inline_;                   /* pollers=0: the loop thread polls */
    int npollers;
    int balance;
    np_poller *pollers;
    _Atomic uint64_t rr;           /* round-robin cursor */
    _Atomic uint64_t seed;         /* random balancer state */

    int efd;                       /* the loop's completion eventfd */
    int running;                   /* [loop] inside run_forever: writes wait for its iteration's end */
    int spin_us;                   /* [loop] inline: poll this long before sleeping */
    int kick_owed;                 /* [loop] some poller's kick_owed is set */
    _Atomic int sleeping;          /* the loop is (about to be) in select */
    pthread_mutex_t qlock;         /* completion queue */
    np_conn *qhead, *qtail;
    _Atomic int qcount;

    pthread_mutex_t alock;         /* every live object, for teardown */
    np_conn *all_conns;

    _Atomic int64_t stats[NP_REACTOR_STATS];
};

#define NP_STAT(arr, i, d) atomic_fetch_add_explicit(&(arr)[i], (d), memory_order_relaxed)

/* Inline mode has one thread, the loop's: the reactor's, the pollers' and
 * the connections' locks guard nothing then. Skipping them saves ~95
 * instructions per lock/unlock pair (callgrind); a 1 KiB echo request took
 * six pairs once its write waited for the iteration's end. */
static inline void mlock(np_reactor *r, pthread_mutex_t *m)
{
    if (!r->inline_)
        pthread_mutex_lock(m);
}

static inline void munlock(np_reactor *r, pthread_mutex_t *m)
{
    if (!r->inline_)
        pthread_mutex_unlock(m);
}

/* ---- reactor.c ---------------------------------------------------------- */

void np_post(np_conn *c, uint32_t flags, int err);     /* any thread */
void np_reactor_wake_loop(np_reactor *r);              /* any thread */
np_poller *np_balance(np_reactor *r);                  /* any thread */
void np_reactor_track_conn(np_reactor *r, np_conn *c, int add);

/* ---- conn.c ------------------------------------------------------------- */

np_conn *np_conn_new(np_reactor *r, int fd);           /* any thread */
void np_conn_unref(np_conn *c);                        /* any thread */
void np_conn_update_interest(np_conn *c);              /* under c->lock */
void np_conn_poller_close(np_conn *c);                 /* under c->lock */
int np_conn_flush_locked(np_conn *c);                  /* under c->lock */
void np_conn_register(np_conn *c, np_poller *p);       /* any thread */

/* ---- poller_epoll.c ----------------------------------------------------- */

int np_poller_start(np_poller *p, np_reactor *r, int index, int thread);
int np_poller_run(np_poller *p, int timeout);            /* its thread, or inline */
int np_poller_run_inline(np_poller *p, int timeout, int *sel_ready); /* loop */
int np_poller_watch_selector(np_poller *p, int fd);    /* loop, inline mode */
void np_poller_stop(np_poller *p);                     /* loop: stop + join */
void np_poller_destroy(np_poller *p);
void np_poller_wake(np_poller *p);                     /* any thread */
void np_poller_release(np_poller *p, np_obj *o);       /* any thread */
void np_poller_flush_later(np_poller *p, np_conn *c);  /* loop */
void np_poller_kick(np_poller *p);                     /* loop */
void np_poller_flush_now(np_poller *p);                /* loop, inline mode */
extern __thread np_poller *np_current_poller;          /* set in poller threads */

#endif
