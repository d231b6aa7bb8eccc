/* echo_server_c: plain single-threaded epoll echo server, the ceiling.
 *
 *   echo_server_c PORT
 *
 * Prints READY when listening; exits on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024)

typedef struct {
    int fd;
    char *pend;      /* bytes read but not yet written back */
    size_t plen, pcap;
} conn_t;

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }
static char buf[BUF];

static void drop(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Write pending bytes; returns -1 on error, else 1 if some remain. */
static int flush(conn_t *c) {
    size_t off = 0;
    while (off < c->plen) {
        ssize_t w = send(c->fd, c->pend + off, c->plen - off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        off += w;
    }
    memmove(c->pend, c->pend + off, c->plen - off);
    c->plen -= off;
    return c->plen > 0;
}

static void set_events(int ep, conn_t *c, unsigned ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 25000;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    printf("READY\n");
    fflush(stdout);

    struct epoll_event evs[512];
    while (!stop) {
        int n = epoll_wait(ep, evs, 512, 200);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (c->plen) {  /* waiting for EPOLLOUT: finish the backlog first */
                int r = flush(c);
                if (r < 0) { drop(ep, c); continue; }
                if (r == 0) set_events(ep, c, EPOLLIN);
                continue;
            }
            ssize_t r = recv(c->fd, buf, BUF, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                drop(ep, c);
                continue;
            }
            ssize_t w = send(c->fd, buf, r, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno != EAGAIN) { drop(ep, c); continue; }
                w = 0;
            }
            if (w < r) {  /* keep the rest, stop reading until it is written */
                size_t rest = r - w;
                if (c->pcap < rest) { c->pcap = BUF; c->pend = realloc(c->pend, c->pcap); }
                memcpy(c->pend, buf + w, rest);
                c->plen = rest;
                set_events(ep, c, EPOLLOUT);
            }
        }
    }
    return 0;
}
