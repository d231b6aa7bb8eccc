/* echo_client: epoll load generator for echo servers.
 *
 *   echo_client -h HOST -p PORT -c CONNS -s SIZE -d DEPTH -t SECONDS [-w WARMUP]
 *   echo_client ... -n COUNT      (exactly COUNT messages per connection, no time
 *                                  limit: for instruction counts per request)
 *
 * Each connection keeps DEPTH messages of SIZE bytes in flight and checks every
 * echoed byte against a per-connection pattern.  Latency of a message is the time
 * from when it was queued for sending to when its last byte came back.
 * Prints one JSON object on stdout.  Only messages completed after WARMUP
 * seconds count towards the rates and latencies; total_msgs counts all.
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

#define PERIOD 251
#define CHUNK (256 * 1024)
#define SALT(c) (((c)->id * 7) % PERIOD)

typedef struct {
    int fd;
    int id;
    uint64_t issued;    /* messages queued for sending */
    uint64_t done;      /* messages fully echoed */
    uint64_t sent_off;  /* bytes written */
    uint64_t recv_off;  /* bytes read and checked */
    uint64_t *t_sent;   /* ring of DEPTH send timestamps (ns) */
    int want_out;       /* EPOLLOUT currently registered */
} conn_t;

static unsigned char pattern[PERIOD + CHUNK];
static unsigned char rbuf[CHUNK];
static uint64_t *lat;
static size_t nlat, caplat;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void add_lat(uint64_t ns) {
    if (nlat == caplat) {
        caplat = caplat ? caplat * 2 : 1 << 20;
        lat = realloc(lat, caplat * sizeof *lat);
        if (!lat) { perror("realloc"); exit(2); }
    }
    lat[nlat++] = ns;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(double p) {
    if (!nlat) return 0.0;
    size_t i = (size_t)(p * (nlat - 1) + 0.5);
    return lat[i] / 1000.0;
}

static int ep, depth = 1;
static uint64_t per_conn;  /* -n: messages per connection, 0 = until t_end */
static long size = 1024;
static uint64_t t_end;

/* Queue up to DEPTH messages in flight and write what the socket takes. */
static int pump(conn_t *c, uint64_t now) {
    while (now < t_end && c->issued - c->done < (uint64_t)depth
           && (!per_conn || c->issued < per_conn)) {
        c->t_sent[c->issued % depth] = now;
        c->issued++;
    }
    uint64_t goal = c->issued * (uint64_t)size;
    while (c->sent_off < goal) {
        uint64_t n = goal - c->sent_off;
        if (n > CHUNK) n = CHUNK;
        ssize_t w = send(c->fd, pattern + (c->sent_off + SALT(c)) % PERIOD, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        c->sent_off += w;
    }
    int need = c->sent_off < goal;
    if (need != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (need ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = need;
    }
    return 0;
}

static int connect_one(const char *host, int port) {
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return -1; }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 25000, nconn = 10;
    double seconds = 5.0, warmup = 0.0;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:c:s:d:t:w:n:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 's': size = atol(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'n': per_conn = strtoull(optarg, NULL, 10); seconds = 1e6; break;
        default:
            fprintf(stderr, "usage: %s -h host -p port -c conns -s size -d depth -t secs [-w warmup] [-n count]\n", argv[0]);
            return 2;
        }
    }
    if (nconn < 1 || size < 1 || depth < 1) { fprintf(stderr, "bad arguments\n"); return 2; }
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (unsigned char)(i % PERIOD);

    ep = epoll_create1(0);
    conn_t *conns = calloc(nconn, sizeof *conns);
    long errors = 0, connected = 0, mismatches = 0, eofs = 0;
    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->t_sent = calloc(depth, sizeof(uint64_t));
        c->fd = connect_one(host, port);
        if (c->fd < 0) { errors++; continue; }
        connected++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    uint64_t t0 = now_ns();
    uint64_t t_warm = t0 + (uint64_t)(warmup * 1e9);
    t_end = t_warm + (uint64_t)(seconds * 1e9);
    uint64_t counted = 0, total = 0;
    int live = (int)connected;

    for (int i = 0; i < nconn; i++) {
        conn_t *c = &conns[i];
        if (c->fd < 0) continue;
        if (pump(c, t0) < 0) { errors++; close(c->fd); c->fd = -1; live--; }
    }

    struct epoll_event evs[512];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= t_end || live == 0) break;
        int ms = (int)((t_end - now) / 1000000) + 1;
        int n = epoll_wait(ep, evs, 512, ms);
        if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); break; }
        now = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if (c->fd < 0) continue;
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                for (;;) {
                    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
                    if (r < 0) {
                        if (errno == EAGAIN) break;
                        errors++; goto dead2;
                    }
                    if (r == 0) { eofs++; errors++; goto dead2; }
                    if ((uint64_t)r > c->sent_off - c->recv_off ||
                        memcmp(rbuf, pattern + (c->recv_off + SALT(c)) % PERIOD, r) != 0) {
                        mismatches++; errors++; goto dead2;
                    }
                    c->recv_off += r;
                    while (c->done < c->issued && c->recv_off >= (c->done + 1) * (uint64_t)size) {
                        total++;
                        if (now >= t_warm) {
                            counted++;
                            add_lat(now - c->t_sent[c->done % depth]);
                        }
                        c->done++;
                    }
                    if (r < (ssize_t)sizeof rbuf) break;
                }
            }
            if (per_conn && c->done >= per_conn) goto dead2;   /* finished */
            if (pump(c, now) == 0) continue;
            errors++;
        dead2:
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd); c->fd = -1; live--;
        }
    }
    double elapsed = (now_ns() - t_warm) / 1e9;
    if (elapsed <= 0) elapsed = 1e-9;
    for (int i = 0; i < nconn; i++) if (conns[i].fd >= 0) close(conns[i].fd);

    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("{\"conns\": %d, \"connected\": %ld, \"size\": %ld, \"depth\": %d, "
           "\"seconds\": %.3f, \"msgs\": %llu, \"total_msgs\": %llu, "
           "\"msgs_per_s\": %.1f, \"mib_per_s\": %.3f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"max_us\": %.1f, "
           "\"errors\": %ld, \"mismatches\": %ld, \"eofs\": %ld}\n",
           nconn, connected, size, depth, elapsed,
           (unsigned long long)counted, (unsigned long long)total,
           counted / elapsed, counted * (double)size / elapsed / (1024.0 * 1024.0),
           pct_us(0.50), pct_us(0.99), nlat ? lat[nlat - 1] / 1000.0 : 0.0,
           errors, mismatches, eofs);
    return 0;
}
