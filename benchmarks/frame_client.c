/* frame_client.c -- load generator for the length-prefixed frame servers.
 *
 * N connections; each sends one frame (4-byte big-endian length + S bytes of
 * payload), reads the echoed frame back, checks every byte, and repeats.
 * Prints one JSON line: frames/s, MiB/s (payload, one direction), p50/p99
 * latency in us, errors, total frames.
 *
 *   frame_client -h host -p port -c conns -s payload_size -t secs [-w warmup]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXLAT (1 << 22)

typedef struct {
    int fd;
    size_t sent, got;       /* bytes of the current frame (with header) */
    unsigned salt;
    double t0;
} conn_t;

static unsigned char *frame_buf, *rbuf;
static size_t frame_len, payload;
static double lat[MAXLAT];
static size_t nlat;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The payload of frame k of a connection: a byte pattern shifted by salt. */
static unsigned char pat(size_t i, unsigned salt) { return (unsigned char)((i * 31 + salt) & 0xff); }

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, nconn = 1, opt;
    double seconds = 5, warmup = 1;
    payload = 1024;
    while ((opt = getopt(argc, argv, "h:p:c:s:t:w:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 's': payload = (size_t)atol(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s -h host -p port -c conns -s size -t secs [-w warmup]\n", argv[0]);
            return 2;
        }
    }
    frame_len = payload + 4;
    frame_buf = malloc(frame_len * 256);       /* 256 salts, precomputed */
    rbuf = malloc(frame_len);
    for (unsigned s = 0; s < 256; s++) {
        unsigned char *f = frame_buf + s * frame_len;
        uint32_t be = htonl((uint32_t)payload);
        memcpy(f, &be, 4);
        for (size_t i = 0; i < payload; i++)
            f[4 + i] = pat(i, s);
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, host, &sa.sin_addr);
    int ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)nconn, sizeof(conn_t));
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            perror("connect");
            return 1;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        cs[i].fd = fd;
        cs[i].salt = (unsigned)i * 7;
        cs[i].t0 = now();
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = &cs[i] };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double start = now(), measure_from = start + warmup, end = measure_from + seconds;
    unsigned long long frames = 0, total = 0, errors = 0;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            const unsigned char *f = frame_buf + (c->salt & 0xff) * frame_len;
            if ((evs[k].events & EPOLLOUT) && c->sent < frame_len) {
                ssize_t w = send(c->fd, f + c->sent, frame_len - c->sent, MSG_NOSIGNAL);
                if (w > 0) {
                    c->sent += (size_t)w;
                    if (c->sent == frame_len) {
                        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    }
                } else if (w < 0 && errno != EAGAIN) {
                    errors++;
                    goto done;
                }
            }
            if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    size_t want = frame_len - c->got;
                    if (!want)
                        break;
                    ssize_t r = recv(c->fd, rbuf, want, 0);
                    if (r <= 0) {
                        if (r < 0 && errno == EAGAIN)
                            break;
                        fprintf(stderr, "connection closed by server\n");
                        errors++;
                        goto done;
                    }
                    if (memcmp(rbuf, f + c->got, (size_t)r) != 0) {
                        fprintf(stderr, "mismatch\n");
                        errors++;
                        goto done;
                    }
                    c->got += (size_t)r;
                }
                if (c->got == frame_len) {
                    double t = now();
                    total++;
                    if (t >= measure_from) {
                        frames++;
                        if (nlat < MAXLAT)
                            lat[nlat++] = t - c->t0;
                    }
                    c->sent = c->got = 0;
                    c->salt++;
                    c->t0 = t;
                    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
        }
    }
done:;
    double dur = now() - measure_from;
    if (dur > seconds)
        dur = seconds;
    qsort(lat, nlat, sizeof(double), cmp);
    double p50 = nlat ? lat[nlat / 2] * 1e6 : 0, p99 = nlat ? lat[nlat * 99 / 100] * 1e6 : 0;
    printf("{\"frames_per_s\": %.1f, \"mib_per_s\": %.2f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
           "\"errors\": %llu, \"total_frames\": %llu}\n",
           frames / dur, frames * (double)payload / dur / 1048576.0, p50, p99, errors, total);
    return errors ? 1 : 0;
}
