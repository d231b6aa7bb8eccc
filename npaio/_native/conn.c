/* conn.c -- one TCP/Unix stream connection: state, interest mask, write side.
 *
 * Owns: struct np_conn and the np_conn_* API that the LOOP thread calls, plus
 * the locked helpers the poller shares (update_interest, flush, poller_close).
 *
 * Who touches what:
 *  - input LinkBuffer `in`: the owning poller produces (reads), the loop
 *    consumes (reactor.c drain). No lock.
 *  - output LinkBuffer `out`: the loop produces (np_conn_write); the consumer
 *    is whoever holds c->lock: in inline mode the loop for a direct send when
 *    nothing is queued, else the poller, from its flush list (writes the loop
 *    handed over) or on EPOLLOUT. `armed` says a poller owns it.
 *  - the epoll interest mask: recomputed under c->lock from the flags by
 *    np_conn_update_interest (epoll_ctl is thread-safe, the lock orders it).
 *
 * Closing: `closed` is set under the lock by whoever closes (the loop in
 * np_conn_close, a poller on error or after a graceful flush). After that no
 * thread issues a syscall on the fd. The fd itself is closed only when the
 * last reference goes (np_conn_unref): the owner's reference is dropped by the
 * poller between two event batches after the loop released the connection.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include "internal.h"

/* Inline mode: a write this big, with nothing queued, is sent at once. */
#define NP_SEND_NOW_MIN 4096u

static _Atomic uint64_t next_id = 1;

np_conn *np_conn_new(np_reactor *r, int fd)
{
    np_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->obj.kind = NP_KIND_CONN;
    c->fd = fd;
    c->reactor = r;
    c->id = atomic_fetch_add(&next_id, 1);
    atomic_init(&c->refs, 1);
    atomic_init(&c->closed, 0);
    atomic_init(&c->pending, 0);
    atomic_init(&c->err, 0);
    pthread_mutex_init(&c->lock, NULL);
    np_lb_init(&c->in);
    np_lb_init(&c->out);
    c->read_size = 4096;
    atomic_init(&c->in_hwm, NP_IN_HWM);
    NP_COUNT(NP_CNT_CONNS, 1);
    np_reactor_track_conn(r, c, 1);
    return c;
}

static void conn_free(np_conn *c)
{
    np_reactor_track_conn(c->reactor, c, 0);
    np_lb_destroy(&c->in);
    np_lb_destroy(&c->out);
    pthread_mutex_destroy(&c->lock);
    if (c->fd >= 0)
        close(c->fd);
    NP_COUNT(NP_CNT_CONNS, -1);
    free(c);
}

void np_conn_unref(np_conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1)
        conn_free(c);
}

/* Under c->lock: make the epoll mask match the flags. Interest 0 means the fd
 * leaves epoll altogether: level-triggered EPOLLHUP cannot be masked, and a
 * hung-up socket we neither read nor write would otherwise spin the poller. */
void np_conn_update_interest(np_conn *c)
{
    if (atomic_load_explicit(&c->closed, memory_order_relaxed) || !c->poller)
        return;
    uint32_t want = 0;
    if (!c->paused && !c->throttled && !c->eof && !c->close_req)
        want |= EPOLLIN | EPOLLRDHUP;
    if (c->armed)
        want |= EPOLLOUT;
    if (want == c->events && c->registered == (want != 0))
        return;
    struct epoll_event ev = { .events = want, .data.ptr = c };
    int epfd = c->poller->epfd;
    if (!want) {
        if (c->registered)
            epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, &ev);
        c->registered = 0;
    } else if (c->registered) {
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    } else {
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0)
            c->registered = 1;
    }
    c->events = want;
}

/* Under c->lock: no thread will touch the fd again. */
void np_conn_poller_close(np_conn *c)
{
    if (c->registered) {
        struct epoll_event ev = { 0 };
        epoll_ctl(c->poller->epfd, EPOLL_CTL_DEL, c->fd, &ev);
        c->registered = 0;
    }
    c->events = 0;
    if (!atomic_exchange(&c->closed, 1))
        NP_STAT(c->poller->stats, NP_PS_CONNS, -1);
}

/* Under c->lock: send what `out` holds. Returns 0 (all sent or would block)
 * or an errno. Counts bytes on the owning poller. */
int np_conn_flush_locked(np_conn *c)
{
    struct iovec iov[64];
    for (;;) {
        size_t total;
        int k = np_lb_iov(&c->out, iov, 64, &total);
        if (!k)
            return 0;
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)k };
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return errno;
        }
        NP_STAT(c->poller->stats, NP_PS_WRITES, 1);
        NP_STAT(c->poller->stats, NP_PS_BYTES_WRITTEN, n);
        np_lb_skip(&c->out, (size_t)n);
        if ((size_t)n < total)
            return 0;
    }
}

/* Any thread: put c on poller p's epoll with reading on. */
void np_conn_register(np_conn *c, np_poller *p)
{
    c->poller = p;
    NP_STAT(p->stats, NP_PS_CONNS, 1);
    pthread_mutex_lock(&c->lock);
    np_conn_update_interest(c);
    pthread_mutex_unlock(&c->lock);
}

/* ---- the loop thread's API (np.h) --------------------------------------- */

np_conn *np_conn_open(np_reactor *r, int fd, int *err)
{
    np_conn *c = np_conn_new(r, fd);
    if (!c) {
        *err = ENOMEM;
        return NULL;
    }
    c->paused = 1;               /* the transport resumes after connection_made */
    np_conn_register(c, np_balance(r));
    return c;
}

uint64_t np_conn_id(np_conn *c)
{
    return c->id;
}

/* What np_conn_write and np_conn_write_lb return when they succeed: 0 while
 * the output is within the high-water mark (the transport has nothing to do),
 * else its length (the transport pauses its protocol). */
static int64_t held_result(np_conn *c)
{
    size_t held = np_lb_len(&c->out);
    return held <= c->whigh ? 0 : (int64_t)held;
}

void np_conn_set_write_high(np_conn *c, size_t high)
{
    c->whigh = high;
}

/* Under c->lock, loop thread: send what `out` holds now rather than at its
 * poller's round -- a queue past the high-water mark while the socket is
 * not known to be full, or write_eof()/close() after this iteration's
 * writes (so that, as in asyncio, they complete at once). Returns 1 if all
 * of it went: `armed` is cleared (a listed connection is then skipped by its
 * poller) and *drained set if a DRAINED was asked for, as on_writable does.
 * An error is left for the poller's own flush to meet again and report. */
static int flush_now(np_conn *c, int *drained)
{
    if (np_conn_flush_locked(c) || np_lb_len(&c->out))
        return 0;
    c->armed = 0;
    if (c->notify) {
        c->notify = 0;
        *drained = 1;
    }
    return 1;
}

/* While the loop runs, a write is not sent at once: the bytes are copied
 * into `out`, the write side is marked armed and the connection goes on its
 * poller's flush list (np_poller_flush_later), sent once per loop iteration
 * with one sendmsg for all the writes the connection got in it (as uvloop
 * queues its writes until the iteration's end). With poller threads, the
 * poller sends it -- the send syscall (on loopback it also runs the
 * receiver's TCP path) was the largest piece of the loop thread's time per
 * echo request. In inline mode the loop sends it itself, at the start of
 * its next poll.
 *
 * Sent at once instead, as asyncio does: outside run_forever, a write
 * bigger than the high-water mark (no copy of a big buffer), and in inline
 * mode one of NP_SEND_NOW_MIN bytes or more: the copy into `out` costs more
 * than coalescing saves (10 KiB echo: 3 of the 4 user-space copies per
 * request were ours, callgrind: 40,900 memcpy instructions against uvloop's
 * 10,300, 0.95x its throughput). And when the
 * queued output passes the high-water mark while the socket is not known
 * to be full (no EPOLLOUT wait), it is sent now rather than pausing the
 * protocol for bytes the kernel would take at once (uvloop does the same). */
int64_t np_conn_write(np_conn *c, const char *data, size_t len)
{
    np_reactor *r = c->reactor;
    int64_t ret;
    int hand = 0, drained = 0;
    mlock(r, &c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        /* A poller closed it: on error, say which (the caller fails now, as
         * asyncio's send() would); after a graceful close, just closed. */
        int err = atomic_load(&c->err);
        munlock(r, &c->lock);
        return err ? -(int64_t)err : -NP_ECLOSED;
    }
    size_t sent = 0;
    if (!c->armed && np_lb_len(&c->out) == 0) {
        if (r->running && len <= c->whigh && (!r->inline_ || len < NP_SEND_NOW_MIN)) {
            hand = 1;
        } else for (;;) {
            ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n >= 0) {
                sent = (size_t)n;
                NP_STAT(c->poller->stats, NP_PS_BYTES_WRITTEN, n);
                NP_STAT(r->stats, NP_RS_DIRECT_WRITES, 1);
                break;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            ret = -(int64_t)errno;
            munlock(r, &c->lock);
            return ret;
        }
    }
    if (sent < len) {
        size_t want = len - sent;
        if (np_lb_write(&c->out, data + sent, want) < want) {
            munlock(r, &c->lock);
            return -ENOMEM;
        }
        if (!c->armed) {
            c->armed = 1;
            if (!hand)
                np_conn_update_interest(c);     /* EPOLLOUT */
        } else if (np_lb_len(&c->out) > c->whigh && !(c->events & EPOLLOUT)) {
            if (!flush_now(c, &drained))
                np_conn_update_interest(c);     /* full: EPOLLOUT */
        }
        NP_STAT(r->stats, hand ? NP_RS_HANDED_WRITES : NP_RS_QUEUED_WRITES, 1);
    }
    ret = held_result(c);
    munlock(r, &c->lock);
    if (hand)
        np_poller_flush_later(c->poller, c);
    if (drained)
        np_post(c, NP_EV_DRAINED, 0);
    return ret;
}

/* Loop thread: the connection's input LinkBuffer, for the consumer verbs of
 * npaio.LinkBuffer (the poller is its producer). Valid until release. */
np_linkbuffer *np_conn_input(np_conn *c)
{
    return &c->in;
}

/* Loop thread: stop (or restart) copying this connection's input into the
 * drain arena; its READ records then carry no data. */
int np_conn_set_nocopy(np_conn *c, int on)
{
    c->nocopy = on ? 1 : 0;
    return 0;
}

/* Loop thread: a no-copy reader took what it wanted from the input and needs
 * `need` bytes in all before it can go on (0: any). Raises the high-water
 * mark to fit a frame bigger than NP_IN_HWM, and resumes a throttled reader. */
void np_conn_input_consumed(np_conn *c, size_t need)
{
    atomic_store_explicit(&c->in_hwm, need > NP_IN_HWM ? need : NP_IN_HWM,
                          memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    size_t len = np_lb_len(&c->in);
    if (c->throttled && (len <= NP_IN_LWM || len < need)) {
        c->throttled = 0;
        np_conn_update_interest(c);
    }
    pthread_mutex_unlock(&c->lock);
}

/* Loop thread: send the committed bytes of b (a buffer only the loop uses)
 * without copying them: sendmsg straight from b's nodes when nothing is
 * queued, and what the kernel does not take moves, nodes and all, to the
 * output LinkBuffer for the poller. b is left empty. Returns what np_conn_write
 * returns. Sends from the loop thread in every mode (a foreign node must not
 * outlive the call in `out`, see below). (Moving the nodes to `out` first and sending with
 * np_conn_flush_locked would be shorter, but then the last sent node stays as
 * out's tail until the connection is freed, and with it any Python object a
 * foreign node pins: tried, a test's teardown saw the node still alive.) */
int64_t np_conn_write_lb(np_conn *c, np_linkbuffer *b)
{
    np_reactor *r = c->reactor;
    int64_t ret;
    pthread_mutex_lock(&c->lock);
    if (atomic_load_explicit(&c->closed, memory_order_relaxed)) {
        int err = atomic_load(&c->err);
        pthread_mutex_unlock(&c->lock);
        np_lb_destroy(b);
        return err ? -(int64_t)err : -NP_ECLOSED;
    }
    if (!c->armed && np_lb_len(&c->out) == 0) {
        struct iovec iov[64];
        for (;;) {
            size_t total;
            int k = np_lb_iov(b, iov, 64, &total);
            if (!k)
                break;
            struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)k };
            ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                ret = -(int64_t)errno;
                pthread_mutex_unlock(&c->lock);
                return ret;
            }
            NP_STAT(c->poller->stats, NP_PS_BYTES_WRITTEN, n);
            NP_STAT(r->stats, NP_RS_DIRECT_WRITES, 1);
            np_lb_skip(b, (size_t)n);
            if ((size_t)n < total)
                break;
        }
    }
    if (np_lb_len(b)) {
        np_lb_append_lb(&c->out, b);
        np_lb_flush(&c->out);
        NP_STAT(r->stats, NP_RS_QUEUED_WRITES, 1);
        if (!c->armed) {
            c->armed = 1;
            np_conn_update_interest(c);
        }
    }
    ret = held_result(c);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

size_t np_conn_wbuf_size(np_conn *c)
{
    if (atomic_load_explicit(&c->closed, memory_order_relaxed))
        return 0;
    return np_lb_len(&c->out);
}

/* Ask for a DRAINED record once the output is at or below `low`.
 * Returns 1 if it already is (no record will come), 0 otherwise. */
int np_conn_set_notify(np_conn *c, size_t low)
{
    int now;
    pthread_mutex_lock(&c->lock);
    now = np_lb_len(&c->out) <= low || atomic_load(&c->closed);
    c->notify = !now;
    c->notify_low = low;
    pthread_mutex_unlock(&c->lock);
    return now;
}

int np_conn_pause_reading(np_conn *c)
{
    pthread_mutex_lock(&c->lock);
    c->paused = 1;
    np_conn_update_interest(c);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int np_conn_resume_reading(np_conn *c)
{
    pthread_mutex_lock(&c->lock);
    c->paused = 0;
    np_conn_update_interest(c);
    pthread_mutex_unlock(&c->lock);
    /* Input (or an EOF) held back while paused: hand it over at once. */
    if (c->held || np_lb_len(&c->in)) {
        uint32_t f = c->held | NP_EV_READ;
        c->held = 0;
        np_post(c, f, 0);
    }
    return 0;
}

int np_conn_shutdown_wr(np_conn *c)
{
    int drained = 0;
    pthread_mutex_lock(&c->lock);
    if (!atomic_load(&c->closed)) {
        if ((!c->armed && np_lb_len(&c->out) == 0) || flush_now(c, &drained)) {
            shutdown(c->fd, SHUT_WR);
            np_conn_update_interest(c);         /* drop EPOLLOUT if it was on */
        } else {
            c->shut_req = 1;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (drained)
        np_post(c, NP_EV_DRAINED, 0);
    return 0;
}

/* Returns 0: closed now, no record follows. 1: graceful close pending until
 * the output is flushed; a CLOSED record follows. */
int np_conn_close(np_conn *c, int abort)
{
    int pending = 0, drained = 0;       /* no DRAINED: the transport closes */
    pthread_mutex_lock(&c->lock);
    if (!atomic_load(&c->closed)) {
        if (!abort && (c->armed || np_lb_len(&c->out)) && !flush_now(c, &drained)) {
            c->close_req = 1;
            np_conn_update_interest(c);
            pending = 1;
        } else {
            np_conn_poller_close(c);
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (!pending)
        c->loop_closed = 1;
    return pending;
}

void np_conn_release(np_conn *c)
{
    c->loop_closed = 1;
    pthread_mutex_lock(&c->lock);
    np_conn_poller_close(c);
    if (c->reactor->inline_ && c->fd >= 0) {
        /* Inline mode: no other thread ever uses the fd, so close it now, as
         * asyncio closes its socket in _call_connection_lost (a peer waiting
         * for EOF must not wait for the loop's next round). */
        close(c->fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->lock);
    np_poller_release(c->poller, &c->obj);
}
