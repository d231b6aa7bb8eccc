/* listener.c -- a listening socket owned by one poller: accept in batches.
 *
 * Owns: struct np_listener. Python keeps owning the listening socket (asyncio's
 * Server closes it); C only accepts on its fd.
 *
 * Threads: the owning poller runs np_listener_accept() holding l->lock. The
 * loop's np_listener_close() takes the same lock, marks the listener closed and
 * removes it from epoll, so once it returns no poller touches the fd and Python
 * may close the socket. The struct is freed later by the poller (release list).
 *
 * EMFILE/ENFILE/ENOBUFS/ENOMEM: stop accepting (leave epoll) and retry after
 * NP_ACCEPT_BACKOFF_MS; the poller's epoll_wait timeout brings it back. Never
 * spin, never crash.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include "internal.h"

#define NP_ACCEPT_BACKOFF_MS 50

static void track(np_reactor *r, np_listener *l, int add)
{
    pthread_mutex_lock(&r->alock);
    if (add) {
        l->all_prev = NULL;
        l->all_next = r->all_listeners;
        if (r->all_listeners)
            r->all_listeners->all_prev = l;
        r->all_listeners = l;
    } else {
        if (l->all_prev)
            l->all_prev->all_next = l->all_next;
        else
            r->all_listeners = l->all_next;
        if (l->all_next)
            l->all_next->all_prev = l->all_prev;
    }
    pthread_mutex_unlock(&r->alock);
}

np_listener *np_listen(np_reactor *r, int fd, uint64_t lid, int nodelay,
                       int batch, int *err)
{
    np_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        *err = ENOMEM;
        return NULL;
    }
    l->obj.kind = NP_KIND_LISTENER;
    l->fd = fd;
    l->lid = lid;
    l->nodelay = nodelay;
    l->batch = batch < 1 ? 1 : batch > 1024 ? 1024 : batch;
    l->reactor = r;
    l->poller = np_balance(r);
    pthread_mutex_init(&l->lock, NULL);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };
    if (epoll_ctl(l->poller->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        *err = errno;
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
    }
    NP_COUNT(NP_CNT_LISTENERS, 1);
    track(r, l, 1);
    *err = 0;
    return l;
}

void np_listener_free(np_listener *l)
{
    track(l->reactor, l, 0);
    pthread_mutex_destroy(&l->lock);
    NP_COUNT(NP_CNT_LISTENERS, -1);
    free(l);
}

void np_listener_close(np_listener *l)
{
    pthread_mutex_lock(&l->lock);
    if (!l->closed) {
        struct epoll_event ev = { 0 };
        epoll_ctl(l->poller->epfd, EPOLL_CTL_DEL, l->fd, &ev);
        l->closed = 1;
    }
    pthread_mutex_unlock(&l->lock);
    np_poller_release(l->poller, &l->obj);
}

static void accepted(np_listener *l, int fd)
{
    if (l->nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    np_conn *c = np_conn_new(l->reactor, fd);
    if (!c) {
        close(fd);
        return;
    }
    c->lid = l->lid;
    c->poller = np_balance(l->reactor);
    /* ACCEPTED goes out before the fd is in any epoll, so no record about
     * this connection can reach the loop ahead of it. */
    np_post(c, NP_EV_ACCEPTED, 0);
    np_conn_register(c, c->poller);
}

/* Owning poller: accept up to l->batch connections. */
void np_listener_accept(np_listener *l)
{
    np_poller *p = l->poller;
    pthread_mutex_lock(&l->lock);
    for (int i = 0; i < l->batch && !l->closed; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            NP_STAT(p->stats, NP_PS_ACCEPTS, 1);
            accepted(l, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            struct epoll_event ev = { 0 };
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, l->fd, &ev);
            l->retry_at_ms = np_now_ms() + NP_ACCEPT_BACKOFF_MS;
            p->has_retry = 1;
        }
        break;   /* EAGAIN, or an error the next readiness will show again */
    }
    pthread_mutex_unlock(&l->lock);
}

/* Owning poller: re-arm listeners whose backoff ran out. Returns the epoll
 * timeout to use (ms, -1 for none left). */
int np_listener_retry(np_poller *p)
{
    np_reactor *r = p->reactor;
    int64_t now = np_now_ms(), next = -1;
    pthread_mutex_lock(&r->alock);
    for (np_listener *l = r->all_listeners; l; l = l->all_next) {
        if (l->poller != p)
            continue;
        pthread_mutex_lock(&l->lock);
        if (!l->closed && l->retry_at_ms) {
            if (l->retry_at_ms <= now) {
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };
                epoll_ctl(p->epfd, EPOLL_CTL_ADD, l->fd, &ev);
                l->retry_at_ms = 0;
            } else if (next < 0 || l->retry_at_ms - now < next) {
                next = l->retry_at_ms - now;
            }
        }
        pthread_mutex_unlock(&l->lock);
    }
    pthread_mutex_unlock(&r->alock);
    p->has_retry = next >= 0;
    return (int)next;
}
