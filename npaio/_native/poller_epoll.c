/* poller_epoll.c -- one poller: epoll_wait, read, write.
 *
 * A poller is a thread of its own, or (inline mode, pollers=0) a round run
 * by the loop thread inside its drain: the same code either way.
 *
 * Some facts about epoll this file relies on:
 *  - epoll_ctl may be called from any thread while another thread sits in
 *    epoll_wait on the same epoll fd; the change takes effect at once. So the
 *    loop thread arms EPOLLOUT or pauses reading itself (under c->lock) and
 *    never has to send the poller a command for it.
 *  - Level-triggered EPOLLIN fires again while unread data remains, so a read
 *    budget per event is safe: what is left comes back on the next wait.
 *  - EPOLLHUP and EPOLLERR are always reported and cannot be masked. A socket
 *    we neither read nor write must leave epoll (conn.c update_interest).
 *  - An event batch may hold an event for a connection that an earlier event
 *    of the same batch closed. Connections are therefore freed only between
 *    batches (the release list), and a closed one is skipped.
 *
 * What does this mean for us: the poller never calls Python and never takes
 * the GIL; all signals are blocked in it; what it learns goes to the loop as
 * np_post() bits. The input buffer's producer is this thread.
 *
 * Writes: while the loop runs it queues the bytes and puts the connection on
 * this poller's flush list (conn.c np_conn_write), sent at the start of the
 * poller's next round (process_lists), all of a connection's writes in one
 * sendmsg. In inline mode the round is the loop's own next poll, or the end
 * of a dispatch (np_reactor_kick).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include "internal.h"

#define NP_EVENTS 256
#define NP_READ_MIN 4096u
#define NP_READ_MAX (64u * 1024u)
#define NP_READ_BUDGET (256u * 1024u)

/* The poller a poller thread runs (NULL on the loop thread): np_post leaves
 * the loop's wake-up to the end of that poller's event batch. */
__thread np_poller *np_current_poller;

void np_poller_wake(np_poller *p)
{
    uint64_t one = 1;
    ssize_t w = write(p->efd, &one, sizeof(one));
    (void)w;
}

void np_poller_release(np_poller *p, np_obj *o)
{
    pthread_mutex_lock(&p->rlock);
    int was_empty = p->release == NULL;
    o->release_next = p->release;
    p->release = o;
    pthread_mutex_unlock(&p->rlock);
    if (was_empty)
        np_poller_wake(p);
}

static void on_writable(np_conn *c);
static void process_lists(np_poller *p);

/* Loop thread: c's output waits for this poller's next round to send it
 * (np_conn_write set c->armed; in inline mode the round is the loop's). The
 * list holds a reference. The poller is woken only if it sleeps (Dekker, as
 * the loop's own `sleeping` in reactor.c:
 * it sets `sleeping` and then looks at the list under rlock; we append under
 * rlock and later exchange `sleeping`; so either it sees c or we see it
 * asleep). A busy poller picks c up before its next epoll_wait.
 * Measured (echo 1 KiB, c10, loop and one poller pinned to one core): a kick
 * at the first write of an iteration woke the poller, which preempted the
 * loop, sent that one write and slept again: ~0.3 kicks per request. */
void np_poller_flush_later(np_poller *p, np_conn *c)
{
    mlock(p->reactor, &p->rlock);
    if (c->wqueued) {
        /* Still listed: an EPOLLOUT (armed by a pause or a close while c was
         * listed) sent its output and cleared `armed` before the poller got
         * to the list. Listing it twice would loop the list on itself. */
        munlock(p->reactor, &p->rlock);
        return;
    }
    c->wqueued = 1;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    c->wnext = NULL;
    if (p->wtail)
        p->wtail->wnext = c;
    else
        p->whead = c;
    p->wtail = c;
    munlock(p->reactor, &p->rlock);
    np_reactor *r = c->reactor;
    if (r->running) {
        /* The loop kicks once per iteration (np_reactor_kick): all the
         * writes of one iteration go out in one poller round. */
        p->kick_owed = r->kick_owed = 1;
    } else {
        np_poller_kick(p);
    }
}

/* Loop thread, inline mode: send the listed writes now (np_reactor_kick). */
void np_poller_flush_now(np_poller *p)
{
    process_lists(p);
}

/* Loop thread: wake p if it sleeps (the other half of its Dekker check). */
void np_poller_kick(np_poller *p)
{
    if (atomic_load(&p->sleeping) && atomic_exchange(&p->sleeping, 0)) {
        NP_STAT(p->reactor->stats, NP_RS_POLLER_KICKS, 1);
        np_poller_wake(p);
    }
}

/* Between batches: send what the loop handed over, then drop the owner
 * references it gave back. */
static void process_lists(np_poller *p)
{
    if (p->reactor->inline_ && !p->release && !p->whead)   /* one thread: no race */
        return;
    mlock(p->reactor, &p->rlock);
    np_obj *o = p->release;
    np_conn *w = p->whead;
    p->release = NULL;
    p->whead = p->wtail = NULL;
    for (np_conn *c = w; c; c = c->wnext) {
        c->wtaken = c->wnext;           /* wnext is the loop's again below */
        c->wqueued = 0;                 /* it may list c again at once */
    }
    munlock(p->reactor, &p->rlock);
    while (w) {
        np_conn *next = w->wtaken;
        on_writable(w);
        np_conn_unref(w);
        w = next;
    }
    while (o) {
        np_obj *next = o->release_next;
        np_conn_unref((np_conn *)o);
        o = next;
    }
}

/* After a batch (and before sleeping): the loop learns of this thread's
 * completions (np_post leaves the wake-up to us). */
static void wake_loop_if_owed(np_poller *p)
{
    if (p->wake_owed) {
        p->wake_owed = 0;
        np_reactor_wake_loop(p->reactor);
    }
}

/* Before epoll_wait(-1): 1 if the loop handed something over meanwhile. */
static int lists_pending(np_poller *p)
{
    pthread_mutex_lock(&p->rlock);
    int any = p->release != NULL || p->whead != NULL;
    pthread_mutex_unlock(&p->rlock);
    return any;
}

/* The errno is stored before `closed`, both under the lock: a writer that
 * finds the connection closed also finds why (np_conn_write returns it). */
static void on_error(np_conn *c, int err, uint32_t extra)
{
    pthread_mutex_lock(&c->lock);
    int was = atomic_load(&c->closed);
    if (!was)
        atomic_store(&c->err, err);
    np_conn_poller_close(c);
    pthread_mutex_unlock(&c->lock);
    if (!was)
        np_post(c, NP_EV_ERROR | NP_EV_CLOSED | extra, 0);
}

static void on_readable(np_poller *p, np_conn *c)
{
    size_t got = 0;
    int eof = 0, err = 0, first = 1;
    while (got < NP_READ_BUDGET) {
        uint32_t want = c->read_size;
        char *dst = np_lb_malloc(&c->in, want);
        if (!dst) {
            err = ENOMEM;
            break;
        }
        ssize_t n = read(c->fd, dst, want);
        NP_STAT(p->stats, NP_PS_READS, 1);
        if (n > 0) {
            np_lb_malloc_ack(&c->in, want - (size_t)n);
            np_lb_flush(&c->in);
            got += (size_t)n;
            /* netpoll's adaptive size: grow when a read fills the space,
             * shrink when the first read of an event used under a quarter.
             * (Shrinking after the short second read of a grown size too
             * took 2 reads for every 10 KiB message: 8 K then 2 K.) */
            if ((uint32_t)n == want) {
                if (c->read_size < NP_READ_MAX)
                    c->read_size <<= 1;
                first = 0;
                continue;
            }
            if (first && (uint32_t)n < want / 4 && c->read_size > NP_READ_MIN)
                c->read_size >>= 1;
            break;
        }
        np_lb_malloc_ack(&c->in, want);
        if (n == 0) {
            eof = 1;
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            err = errno;
        break;
    }
    if (got) {
        NP_STAT(p->stats, NP_PS_BYTES_READ, got);
        if (np_lb_len(&c->in) >= atomic_load_explicit(&c->in_hwm, memory_order_relaxed)) {
            /* Re-check under the lock: the loop's drain takes input and then
             * un-throttles under the same lock, so one of us sees the other. */
            pthread_mutex_lock(&c->lock);
            if (np_lb_len(&c->in) >= atomic_load_explicit(&c->in_hwm, memory_order_relaxed)) {
                c->throttled = 1;
                np_conn_update_interest(c);
                NP_STAT(c->reactor->stats, NP_RS_THROTTLES, 1);
            }
            pthread_mutex_unlock(&c->lock);
        }
    }
    if (err) {
        if (got)
            np_post(c, NP_EV_READ, 0);
        on_error(c, err, 0);
        return;
    }
    if (eof) {
        pthread_mutex_lock(&c->lock);
        c->eof = 1;
        np_conn_update_interest(c);
        pthread_mutex_unlock(&c->lock);
        np_post(c, (got ? NP_EV_READ : 0) | NP_EV_EOF, 0);
    } else if (got) {
        np_post(c, NP_EV_READ, 0);
    }
}

static void on_writable(np_conn *c)
{
    uint32_t post = 0;
    int err;
    mlock(c->reactor, &c->lock);
    if (atomic_load(&c->closed) || !c->armed) {
        munlock(c->reactor, &c->lock);
        return;
    }
    err = np_conn_flush_locked(c);
    if (!err && np_lb_len(&c->out) == 0) {
        c->armed = 0;
        if (c->shut_req) {
            c->shut_req = 0;
            shutdown(c->fd, SHUT_WR);
        }
        if (c->close_req) {
            np_conn_poller_close(c);
            post |= NP_EV_CLOSED;
        } else {
            np_conn_update_interest(c);
        }
    } else if (!err) {
        np_conn_update_interest(c);     /* a handed write: wait for EPOLLOUT */
    }
    if (!err && c->notify && np_lb_len(&c->out) <= c->notify_low) {
        c->notify = 0;
        post |= NP_EV_DRAINED;
    }
    munlock(c->reactor, &c->lock);
    if (err)
        on_error(c, err, NP_EV_WRITE_ERROR);
    else if (post)
        np_post(c, post, 0);
}

static void on_conn_event(np_poller *p, np_conn *c, uint32_t ev)
{
    if (atomic_load_explicit(&c->closed, memory_order_acquire))
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        int reading;
        mlock(p->reactor, &c->lock);
        reading = (c->events & EPOLLIN) != 0;
        munlock(p->reactor, &c->lock);
        if (reading)
            on_readable(p, c);
        else if ((ev & (EPOLLHUP | EPOLLERR)) && !(ev & EPOLLOUT)) {
            /* Not reading, nothing to write: the error shows on the next
             * write; leave epoll so the hang-up does not spin us. */
            int soerr = 0;
            socklen_t len = sizeof(soerr);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            if (soerr)
                on_error(c, soerr, 0);
        }
    }
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && !atomic_load(&c->closed))
        on_writable(c);
}

/* Inline mode over an epoll selector: the loop selector's epoll fd sits in
 * this poller's set with this marker as its data, so one epoll_wait serves
 * both (np_reactor_poll). Its event is only reported, never consumed: the
 * loop then runs its selector with timeout 0. */
static np_obj selector_mark = { .kind = NP_KIND_SELECTOR };

int np_poller_watch_selector(np_poller *p, int fd)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &selector_mark };
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? errno : 0;
}

/* Inline mode, before a wait that would sleep: poll without sleeping for up
 * to reactor->spin_us. Returns epoll_wait's result, or -2 when nothing came
 * (the caller then sleeps as it would have).
 *
 * Why: on this 2-core VM a sleep and its wake-up cost more than the request
 * itself. Ping-pong (1 connection, 64 B; benchmarks/ATTEMPTS.md 39): the
 * server spent 26 us of CPU per request, most of it in the kernel putting
 * the thread to sleep and waking it, and a round trip took 57 us. Polling
 * for up to 50 us while the next request is on its way: 20 us round trips
 * (2.7x the requests per second), 21 us of CPU per request. Go's scheduler
 * spins before parking for the same reason.
 * The price is a core busy while it polls, so it backs off: after a spin
 * that found nothing, the next 2^k - 1 waits (k spins in a row that found
 * nothing, at most 63) sleep at once. An idle loop spins once and sleeps;
 * traffic that arrives just too slowly costs under 1 us per wait. It yields
 * between polls, so a peer sharing the core still runs. A timer due during
 * a spin that found nothing fires up to spin_us late (a blocking wait still
 * follows, with the whole timeout).
 * Only while one connection sets the pace: the last two rounds that served
 * connections each served the same single one (ping-pong, a client's
 * request/response). With several connections a spin catches their inputs
 * one at a time, where a sleep lets them gather into one round: httptools
 * HTTP with 10 connections, spinning, took 1.2-1.3 completions per drain,
 * 0.94-1.01x uvloop and more CPU per request than uvloop; sleeping, 1.6-1.8
 * per drain and 1.07x (ATTEMPTS.md 51). */
static int spin_wait(np_poller *p, struct epoll_event *evs)
{
    if (p->spin_skip > 0) {
        p->spin_skip--;
        return -2;
    }
    NP_STAT(p->stats, NP_PS_SPINS, 1);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long limit = (long)p->reactor->spin_us * 1000L;
    for (;;) {
        int n = epoll_wait(p->epfd, evs, NP_EVENTS, 0);
        if (n != 0) {
            if (n > 0) {
                NP_STAT(p->stats, NP_PS_SPIN_HITS, 1);
                p->spin_fails = 0;
            }
            return n;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) >= limit)
            break;
        sched_yield();
    }
    if (p->spin_fails < 6)
        p->spin_fails++;
    p->spin_skip = (1 << p->spin_fails) - 1;
    return -2;
}

/* One round: free what the loop released, wait up to `timeout` ms, handle
 * the batch; *sel_ready (if given) is set when the selector mark fired. Run
 * by the poller thread, or by the loop thread itself in inline mode
 * (pollers=0). */
int np_poller_run_inline(np_poller *p, int timeout, int *sel_ready)
{
    struct epoll_event evs[NP_EVENTS];
    int threaded = !p->reactor->inline_;
    process_lists(p);
    wake_loop_if_owed(p);           /* the last batch's, and the lists' */
    if (!threaded && atomic_load_explicit(&p->reactor->qcount, memory_order_relaxed) > 0)
        timeout = 0;    /* inline: only this thread queues, so no sleep handshake:
                         * just do not block while completions wait (also
                         * those the writes just sent posted: DRAINED, CLOSED) */
    if (threaded && timeout) {
        atomic_store(&p->sleeping, 1);
        if (lists_pending(p)) {
            atomic_store(&p->sleeping, 0);
            timeout = 0;
        }
    }
    int n = -2;
    if (!threaded && timeout != 0 && p->reactor->spin_us > 0 && p->spin_ok)
        n = spin_wait(p, evs);
    if (n == -2) {
        n = epoll_wait(p->epfd, evs, NP_EVENTS, timeout);
        NP_STAT(p->stats, NP_PS_POLLS, 1);
    }
    if (threaded)
        atomic_store_explicit(&p->sleeping, 0, memory_order_relaxed);
    if (n <= 0)
        return n;
    NP_STAT(p->stats, NP_PS_WAKEUPS, 1);
    NP_STAT(p->stats, NP_PS_EVENTS, n);
    uint64_t only = 0;              /* the one connection served, if one */
    int several = 0;
    for (int i = 0; i < n; i++) {
        np_obj *o = evs[i].data.ptr;
        if (NP_LIKELY(o->kind == NP_KIND_CONN)) {
            uint64_t id = ((np_conn *)o)->id;
            if (!only)
                only = id;
            else if (id != only)
                several = 1;
            on_conn_event(p, (np_conn *)o, evs[i].events);
        } else if (o->kind == NP_KIND_WAKE) {
            uint64_t v;
            ssize_t rd = read(p->efd, &v, sizeof(v));
            (void)rd;
        } else if (sel_ready) {
            *sel_ready = 1;
        }
    }
    if (!threaded && only) {        /* spin_wait's condition */
        p->spin_ok = !several && only == p->spin_last;
        p->spin_last = several ? 0 : only;
    }
    return n;       /* the next round's start wakes the loop, if owed */
}

int np_poller_run(np_poller *p, int timeout)
{
    return np_poller_run_inline(p, timeout, NULL);
}

static void *poller_main(void *arg)
{
    np_poller *p = arg;
    np_current_poller = p;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    while (!atomic_load(&p->stop))
        if (np_poller_run(p, -1) < 0 && errno != EINTR)
            break;
    return NULL;
}

int np_poller_start(np_poller *p, np_reactor *r, int index, int thread)
{
    p->wake.kind = NP_KIND_WAKE;
    p->index = index;
    p->reactor = r;
    pthread_mutex_init(&p->rlock, NULL);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->epfd < 0 || p->efd < 0)
        return errno;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &p->wake };
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ev) < 0)
        return errno;
    if (!thread)
        return 0;
    /* Block every signal while creating the thread so it inherits the mask
     * from its first instruction (the loop thread handles signals). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&p->thread, NULL, poller_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e)
        return e;
    p->started = 1;
    NP_COUNT(NP_CNT_THREADS, 1);
    return 0;
}

void np_poller_stop(np_poller *p)
{
    if (p->started) {
        atomic_store(&p->stop, 1);
        np_poller_wake(p);
        pthread_join(p->thread, NULL);
        p->started = 0;
        NP_COUNT(NP_CNT_THREADS, -1);
    }
    process_lists(p);       /* the thread is gone: send the handed writes here */
}

void np_poller_destroy(np_poller *p)
{
    if (p->epfd > 0)
        close(p->epfd);
    if (p->efd > 0)
        close(p->efd);
    pthread_mutex_destroy(&p->rlock);
}
