/* reactor.c -- the pollers, the load balancer and the completion queue.
 *
 * Owns: struct np_reactor; the hand-off pollers -> loop.
 *
 * Completion queue: a poller that has news for a connection ORs NP_EV_* bits
 * into c->pending and, if the connection is not queued yet, appends it (one
 * mutex; a connection is queued at most once however busy it is). The loop
 * takes up to `maxrecs` connections per np_reactor_drain() -- ONE cffi call per
 * loop iteration -- and turns each into one record, copying its input into the
 * caller's arena.
 *
 * Wake-ups (Dekker): the loop sets `sleeping` before it blocks in select and
 * then re-checks the queue (np_reactor_prepare_sleep); a poller that queued
 * something exchanges `sleeping` to 0 and writes the eventfd only if it was 1.
 * Both sides use seq_cst, so either the loop sees the queued connection or the
 * poller sees it asleep. A busy loop never sleeps and gets no eventfd writes.
 * A poller thread does that exchange once per event batch, after the batch,
 * not at its first completion. Measured (echo 1 KiB, c10, loop and one
 * poller pinned to one core): waking at the first completion made the woken
 * loop preempt the poller, drain 1.9 completions and sleep again -- a
 * sleep/wake pair for every second request.
 *
 * Inline mode (pollers=0): no poller thread, the loop thread runs the poller
 * round itself: no eventfd, no thread switch, the same C code. Two ways:
 *  - the loop's selector is an epoll one (the default): the poller's epoll set
 *    also watches the selector's epoll fd (np_reactor_watch_selector) and the
 *    loop's select() is ONE call, np_reactor_poll(): epoll_wait with the
 *    loop's timeout, read/write the ready connections, drain the queue; the
 *    loop runs its own selector (timeout 0) only when the mark fired. One
 *    epoll_wait and one cffi call per iteration.
 *  - any other selector: the selector watches the poller's epoll fd and
 *    np_reactor_drain() runs a round with timeout 0 first (two waits and two
 *    cffi calls per iteration, plus np_reactor_prepare_sleep).
 * Inline mode also skips the queue and per-event connection locks: there is
 * one thread (mlock/munlock).
 *
 * Measured (benchmarks/callgrind.py, user-space instructions of the server
 * per 1 KiB echo request, 10 connections, ~10 requests per iteration):
 * np_reactor_poll ~690 per request (drain_queue 400 of it, np_lb_copy_out
 * 270); the cffi wrapper around np_conn_write ~950 on top of its own 125
 * (argument conversion, GIL release and re-take: every cffi call pays it).
 * Whole server: 8,131 vs uvloop 4,192; syscalls per request: read 1, send 1,
 * epoll_wait 0.1 (uvloop: the same).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "internal.h"


/* The loop takes at most this much of one connection's input per drain, so a
 * fast sender cannot starve the others; the rest stays queued. */
#define NP_DRAIN_PER_CONN (256u * 1024u)

np_reactor *np_reactor_new(int npollers, int balance, int *err)
{
    *err = 0;
    if (npollers < 0 || npollers > 256 || balance < 0 || balance > 2) {
        *err = EINVAL;
        return NULL;
    }
    np_reactor *r = calloc(1, sizeof(*r));
    if (!r) {
        *err = ENOMEM;
        return NULL;
    }
    r->pid = getpid();
    r->inline_ = npollers == 0;
    if (r->inline_)
        npollers = 1;               /* one poller, run by the loop thread */
    r->npollers = npollers;
    r->balance = balance;
    atomic_init(&r->seed, 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)r);
    pthread_mutex_init(&r->qlock, NULL);
    pthread_mutex_init(&r->alock, NULL);
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->pollers = calloc((size_t)npollers, sizeof(np_poller));
    if (r->efd < 0 || !r->pollers) {
        *err = r->efd < 0 ? errno : ENOMEM;
        goto fail;
    }
    NP_COUNT(NP_CNT_REACTORS, 1);
    for (int i = 0; i < npollers; i++) {
        *err = np_poller_start(&r->pollers[i], r, i, !r->inline_);
        if (*err) {
            np_reactor_free(r);
            return NULL;
        }
    }
    return r;
fail:
    if (r->efd >= 0)
        close(r->efd);
    free(r->pollers);
    free(r);
    return NULL;
}

void np_reactor_track_conn(np_reactor *r, np_conn *c, int add)
{
    pthread_mutex_lock(&r->alock);
    if (add) {
        c->all_prev = NULL;
        c->all_next = r->all_conns;
        if (r->all_conns)
            r->all_conns->all_prev = c;
        r->all_conns = c;
    } else {
        if (c->all_prev)
            c->all_prev->all_next = c->all_next;
        else
            r->all_conns = c->all_next;
        if (c->all_next)
            c->all_next->all_prev = c->all_prev;
    }
    pthread_mutex_unlock(&r->alock);
}

/* In a child of fork() the pollers do not exist and their locks may be held
 * forever: close this process's copies of the fds and leak the rest. */
static void free_after_fork(np_reactor *r)
{
    for (np_conn *c = r->all_conns; c; c = c->all_next)
        close(c->fd);
    for (int i = 0; i < r->npollers; i++) {
        close(r->pollers[i].epfd);
        close(r->pollers[i].efd);
    }
    close(r->efd);
    NP_COUNT(NP_CNT_REACTORS, -1);
}

/* Loop thread: stop and join the pollers, then free whatever is left. */
void np_reactor_free(np_reactor *r)
{
    if (r->pid != getpid()) {
        free_after_fork(r);
        return;
    }
    for (int i = 0; i < r->npollers; i++)
        np_poller_stop(&r->pollers[i]);
    /* No other thread runs now. Drop queue references, then owners. */
    for (np_conn *c = r->qhead; c;) {
        np_conn *next = c->qnext;
        c->queued = 0;
        np_conn_unref(c);
        c = next;
    }
    r->qhead = r->qtail = NULL;
    while (r->all_conns) {
        np_conn *c = r->all_conns;
        NP_ASSERT(atomic_load(&c->refs) == 1);
        atomic_store(&c->refs, 1);
        np_conn_unref(c);
    }
    for (int i = 0; i < r->npollers; i++)
        np_poller_destroy(&r->pollers[i]);
    free(r->pollers);
    close(r->efd);
    pthread_mutex_destroy(&r->qlock);
    pthread_mutex_destroy(&r->alock);
    NP_COUNT(NP_CNT_REACTORS, -1);
    free(r);
}

/* The fd the loop's selector watches: the completion eventfd, or in inline
 * mode the poller's epoll fd itself (readable while it has events). */
int np_reactor_efd(np_reactor *r) { return r->inline_ ? r->pollers[0].epfd : r->efd; }
int np_reactor_npollers(np_reactor *r) { return r->npollers; }

np_poller *np_balance(np_reactor *r)
{
    int n = r->npollers;
    if (n == 1)
        return &r->pollers[0];
    switch (r->balance) {
    case NP_LB_RANDOM: {
        /* xorshift64*, racy updates are fine: any value is a fine pick. */
        uint64_t x = atomic_load_explicit(&r->seed, memory_order_relaxed);
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        atomic_store_explicit(&r->seed, x, memory_order_relaxed);
        return &r->pollers[(x * 2685821657736338717ull >> 33) % (uint64_t)n];
    }
    case NP_LB_LEAST_CONN: {
        int best = 0;
        int64_t least = atomic_load(&r->pollers[0].stats[NP_PS_CONNS]);
        for (int i = 1; i < n; i++) {
            int64_t k = atomic_load(&r->pollers[i].stats[NP_PS_CONNS]);
            if (k < least) {
                least = k;
                best = i;
            }
        }
        return &r->pollers[best];
    }
    default:
        return &r->pollers[atomic_fetch_add(&r->rr, 1) % (uint64_t)n];
    }
}

/* Any thread: tell the loop about c. */
void np_post(np_conn *c, uint32_t flags, int err)
{
    np_reactor *r = c->reactor;
    if (err)
        atomic_store(&c->err, err);
    atomic_fetch_or(&c->pending, flags);
    int queued_now = 0;
    mlock(r, &r->qlock);
    if (!c->queued) {
        c->queued = 1;
        atomic_fetch_add(&c->refs, 1);
        c->qnext = NULL;
        if (r->qtail)
            r->qtail->qnext = c;
        else
            r->qhead = c;
        r->qtail = c;
        atomic_fetch_add(&r->qcount, 1);
        queued_now = 1;
    }
    munlock(r, &r->qlock);
    if (!queued_now || r->inline_)
        return;
    if (np_current_poller) {
        /* A poller thread: wake the loop once, after its whole event batch
         * (np_reactor_wake_loop), so that the loop finds it all in one drain. */
        np_current_poller->wake_owed = 1;
        return;
    }
    np_reactor_wake_loop(r);
}

/* Any thread: write the loop's eventfd if it sleeps (Dekker, see above). */
void np_reactor_wake_loop(np_reactor *r)
{
    if (atomic_exchange(&r->sleeping, 0)) {
        uint64_t one = 1;
        NP_STAT(r->stats, NP_RS_LOOP_WAKEUPS, 1);
        ssize_t w = write(r->efd, &one, sizeof(one));
        (void)w;
    }
}

/* Loop thread: wake the pollers that were handed writes this iteration;
 * in inline mode, send them. (np_reactor_poll needs no kick: its poller
 * round sends them first.) */
void np_reactor_kick(np_reactor *r)
{
    if (!r->kick_owed)
        return;
    r->kick_owed = 0;
    if (r->inline_) {
        np_poller_flush_now(&r->pollers[0]);
        return;
    }
    for (int i = 0; i < r->npollers; i++) {
        np_poller *p = &r->pollers[i];
        if (p->kick_owed) {
            p->kick_owed = 0;
            np_poller_kick(p);
        }
    }
}

void np_reactor_set_spin(np_reactor *r, int us)
{
    r->spin_us = us < 0 ? 0 : us;
}

void np_reactor_set_running(np_reactor *r, int running)
{
    r->running = running;
    np_reactor_kick(r);
}

/* Returns 1 when completions wait (the loop must not block), else 0 and the
 * loop may sleep: a poller will write the eventfd. */
int np_reactor_prepare_sleep(np_reactor *r)
{
    np_reactor_kick(r);
    atomic_store(&r->sleeping, 1);
    if (atomic_load(&r->qcount) > 0) {
        atomic_store(&r->sleeping, 0);
        return 1;
    }
    NP_STAT(r->stats, NP_RS_SLEEPS, 1);
    return 0;
}

static np_conn *queue_pop(np_reactor *r)
{
    mlock(r, &r->qlock);
    np_conn *c = r->qhead;
    if (c) {
        r->qhead = c->qnext;
        if (!r->qhead)
            r->qtail = NULL;
        c->queued = 0;
        atomic_fetch_sub(&r->qcount, 1);
    }
    munlock(r, &r->qlock);
    return c;
}

/* Loop thread: the input side of c after the loop took some of it. The
 * length is checked under the lock, as the poller's throttle decision is. */
static void maybe_unthrottle(np_conn *c)
{
    mlock(c->reactor, &c->lock);
    if (c->throttled && np_lb_len(&c->in) <= NP_IN_LWM) {
        c->throttled = 0;
        np_conn_update_interest(c);
    }
    munlock(c->reactor, &c->lock);
}

/* Loop thread: put c back at the queue's tail, handing over the queue
 * reference the caller holds (or dropping it if a poller queued c meanwhile). */
static void requeue(np_reactor *r, np_conn *c)
{
    mlock(r, &r->qlock);
    if (c->queued) {
        munlock(r, &r->qlock);
        np_conn_unref(c);
        return;
    }
    c->queued = 1;
    c->qnext = NULL;
    if (r->qtail)
        r->qtail->qnext = c;
    else
        r->qhead = c;
    r->qtail = c;
    atomic_fetch_add(&r->qcount, 1);
    munlock(r, &r->qlock);
}

/* Loop thread: turn up to maxrecs queued connections into records.
 *
 * With `conns` (np_reactor_poll), an input of NP_INPLACE_MIN bytes or more,
 * taken whole, is not copied into the arena: the record says NP_EV_INPLACE
 * and keeps the queue's reference in conns[k], and the dispatcher copies the
 * bytes straight into the bytes object it hands to data_received
 * (np_record_take). 10 KiB echo: the arena copy was the one the loop made
 * more than uvloop's (callgrind: 40,900 memcpy instructions per request
 * against 10,300). Until then c->inplace holds those bytes back: a
 * connection queued again meanwhile waits for the next drain. */
#define NP_INPLACE_MIN 4096u

static int drain_queue(np_reactor *r, np_record *recs, int maxrecs,
                       char *arena, uint32_t arena_cap, np_conn **conns)
{
    int k = 0;
    uint32_t used = 0;
    np_conn *later = NULL;         /* queued again while held back */
    while (k < maxrecs && used < arena_cap
           && atomic_load_explicit(&r->qcount, memory_order_relaxed) > 0) {
        np_conn *c = queue_pop(r);
        if (!c)
            break;
        if (c->inplace) {
            c->qnext = later;       /* its pending bits stay for next time */
            later = c;
            continue;
        }
        uint32_t f = atomic_exchange(&c->pending, 0);
        if (c->loop_closed) {
            np_conn_unref(c);
            continue;
        }
        np_record *rec = &recs[k];
        rec->id = c->id;
        rec->err = (f & NP_EV_ERROR) ? atomic_load(&c->err) : 0;
        rec->off = used;
        rec->len = 0;
        int again = 0, nocopy_read = 0, held = 0;
        if (c->paused && !(f & NP_EV_CLOSED)) {
            c->held |= f & (NP_EV_READ | NP_EV_EOF);
        } else if (c->nocopy) {
            /* Python reads c->in itself (np_conn_input): just say so. */
            nocopy_read = (f & NP_EV_READ) && np_lb_len(&c->in) > 0;
        } else if (conns && (f & NP_EV_READ) && np_lb_len(&c->in) >= NP_INPLACE_MIN
                   && np_lb_len(&c->in) <= NP_DRAIN_PER_CONN) {
            rec->len = c->inplace = (uint32_t)np_lb_len(&c->in);
            f |= NP_EV_INPLACE;
            conns[k] = c;           /* the queue's reference goes with it */
            held = 1;
        } else if (f & (NP_EV_READ | NP_EV_EOF)) {
            size_t avail = np_lb_len(&c->in);
            size_t take = arena_cap - used;
            if (take > avail)
                take = avail;
            if (take > NP_DRAIN_PER_CONN)
                take = NP_DRAIN_PER_CONN;
            if (take) {
                np_lb_copy_out(&c->in, arena + used, take);
                rec->len = (uint32_t)take;
                used += (uint32_t)take;
                maybe_unthrottle(c);
            }
            if (take < avail) {
                /* More input than we took: the EOF (if any) waits behind it,
                 * and c goes back to the queue's tail. */
                if (used >= arena_cap)
                    NP_STAT(r->stats, NP_RS_ARENA_FULL, 1);
                atomic_fetch_or(&c->pending, f & (NP_EV_READ | NP_EV_EOF));
                f &= ~(uint32_t)NP_EV_EOF;
                again = 1;
            }
        }
        f &= ~(uint32_t)NP_EV_READ;
        if (c->paused && !(f & NP_EV_CLOSED))
            f &= ~(uint32_t)NP_EV_EOF;
        if (rec->len || nocopy_read)
            f |= NP_EV_READ;
        rec->flags = f;
        if (f)
            k++;
        if (again)
            requeue(r, c);
        else if (!held)
            np_conn_unref(c);
    }
    while (later) {
        np_conn *c = later;
        later = c->qnext;
        requeue(r, c);
    }
    NP_STAT(r->stats, NP_RS_DRAINS, 1);
    NP_STAT(r->stats, NP_RS_COMPLETIONS, k);
    return k;
}

int np_reactor_drain(np_reactor *r, np_record *recs, int maxrecs,
                     char *arena, uint32_t arena_cap, int efd_ready)
{
    np_reactor_kick(r);
    atomic_store(&r->sleeping, 0);
    if (r->inline_) {
        np_poller_run(&r->pollers[0], 0);
    } else if (efd_ready) {
        uint64_t v;
        ssize_t n = read(r->efd, &v, sizeof(v));
        (void)n;
    }
    return drain_queue(r, recs, maxrecs, arena, arena_cap, NULL);
}

/* Inline mode over an epoll selector (see the header comment). */
int np_reactor_watch_selector(np_reactor *r, int fd)
{
    if (!r->inline_)
        return EINVAL;
    return np_poller_watch_selector(&r->pollers[0], fd);
}

int np_reactor_poll(np_reactor *r, np_pollbuf *pb, int timeout)
{
    int sel_ready = 0;
    np_poller_run_inline(&r->pollers[0], timeout, &sel_ready);
    return drain_queue(r, pb->recs, pb->maxrecs, pb->arena, pb->arena_cap,
                       pb->conns) * 2 + sel_ready;
}

void np_record_take(np_conn *c, char *dst, size_t len)
{
    NP_ASSERT(c->inplace == len);
    np_lb_copy_out(&c->in, dst, len);
    c->inplace = 0;
    maybe_unthrottle(c);
    np_conn_unref(c);
}

static void record_drop(np_conn *c)
{
    c->inplace = 0;
    if (!c->loop_closed)
        np_post(c, NP_EV_READ, 0);  /* the bytes go out with a later drain */
    np_conn_unref(c);
}

void np_pollbuf_release(np_pollbuf *pb, int n)
{
    for (int i = 0; i < n && pb->conns; i++)
        if ((pb->recs[i].flags & NP_EV_INPLACE) && pb->conns[i]) {
            record_drop(pb->conns[i]);
            pb->conns[i] = NULL;
        }
}

int np_reactor_stats(np_reactor *r, uint64_t *out, int cap)
{
    int k = 0;
    for (int i = 0; i < NP_REACTOR_STATS && k < cap; i++)
        out[k++] = (uint64_t)atomic_load(&r->stats[i]);
    for (int p = 0; p < r->npollers; p++)
        for (int i = 0; i < NP_POLLER_STATS && k < cap; i++)
            out[k++] = (uint64_t)atomic_load(&r->pollers[p].stats[i]);
    return k;
}
