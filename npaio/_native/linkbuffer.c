/* linkbuffer.c -- netpoll's no-copy LinkBuffer: a chain of refcounted nodes.
 *
 * Owns: the node chain of one buffer. One PRODUCER thread appends (malloc,
 * malloc_ack, flush, write) and one CONSUMER thread reads (copy_out, iov, skip);
 * they may run at the same time. The hand-over is the atomic `len` (committed
 * bytes) plus each node's atomic `end` and `next`: the producer fills bytes,
 * stores `end`/`next` with release order, then adds to `len`; the consumer
 * loads `len` with acquire order and never reads past it. Who the producer and
 * the consumer are is the caller's business (conn.c says it per buffer).
 *
 * Nodes come from mcache.c's size classes: a malloc(n) that does not fit in the
 * tail node links a new node of at least max(n, 4 KiB). The consumer frees a
 * node once it has read past its end and the producer has moved on (`next` set),
 * so the tail node is never freed under the producer's feet. Nodes are
 * refcounted so that a later Python view can keep one alive past release.
 */
#include <string.h>
#include <sys/uio.h>
#include "internal.h"

#define NP_NODE_MIN 4096

static np_node *node_new(size_t want)
{
    size_t alloc;
    if (want < NP_NODE_MIN - sizeof(np_node))
        want = NP_NODE_MIN - sizeof(np_node);
    np_node *n = np_mcache_alloc(sizeof(np_node) + want, &alloc);
    if (!n)
        return NULL;
    atomic_init(&n->next, NULL);
    atomic_init(&n->refs, 1);
    n->alloc = alloc;
    n->cap = (uint32_t)(alloc - sizeof(np_node));
    n->off = 0;
    atomic_init(&n->end, 0);
    n->malloc = 0;
    return n;
}

static void node_unref(np_node *n)
{
    if (atomic_fetch_sub(&n->refs, 1) == 1)
        np_mcache_free(n, n->alloc);
}

void np_lb_init(np_linkbuffer *b)
{
    b->head = b->tail = NULL;
    b->unflushed = 0;
    atomic_init(&b->len, 0);
}

void np_lb_destroy(np_linkbuffer *b)
{
    np_node *n = b->head;
    while (n) {
        np_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
        node_unref(n);
        n = next;
    }
    b->head = b->tail = NULL;
    b->unflushed = 0;
    atomic_store(&b->len, 0);
}

size_t np_lb_len(np_linkbuffer *b)
{
    return atomic_load_explicit(&b->len, memory_order_acquire);
}

/* Producer: reserve n writable bytes at the tail; NULL when out of memory. */
char *np_lb_malloc(np_linkbuffer *b, size_t n)
{
    np_node *t = b->tail;
    if (t && t->cap - t->malloc >= n) {
        char *p = t->data + t->malloc;
        t->malloc += (uint32_t)n;
        b->unflushed += n;
        return p;
    }
    np_node *nn = node_new(n);
    if (!nn)
        return NULL;
    nn->malloc = (uint32_t)n;
    b->unflushed += n;
    if (t) {
        /* Close the old tail: its end may run ahead of len until flush. */
        atomic_store_explicit(&t->end, t->malloc, memory_order_release);
        atomic_store_explicit(&t->next, nn, memory_order_release);
    } else {
        b->head = nn;   /* empty buffer: consumer sees head only after len > 0 */
    }
    b->tail = nn;
    return nn->data;
}

/* Producer: of the last malloc(n) keep only `keep` bytes (netpoll MallocAck
 * counts from the start of the unflushed region; ours trims the last call). */
void np_lb_malloc_ack(np_linkbuffer *b, size_t unused)
{
    NP_ASSERT(b->tail && b->tail->malloc >= unused && b->unflushed >= unused);
    b->tail->malloc -= (uint32_t)unused;
    b->unflushed -= unused;
}

/* Producer: publish everything malloc'ed so far. */
void np_lb_flush(np_linkbuffer *b)
{
    if (!b->unflushed)
        return;
    atomic_store_explicit(&b->tail->end, b->tail->malloc, memory_order_release);
    atomic_fetch_add_explicit(&b->len, b->unflushed, memory_order_release);
    b->unflushed = 0;
}

/* Producer: copy n bytes in and publish them. Returns bytes written (n, or
 * less when memory ran out). */
size_t np_lb_write(np_linkbuffer *b, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done;
        np_node *t = b->tail;
        size_t room = t ? t->cap - t->malloc : 0;
        if (room == 0)
            room = chunk > (1u << 20) ? (1u << 20) : chunk;
        if (chunk > room)
            chunk = room;
        char *dst = np_lb_malloc(b, chunk);
        if (!dst)
            break;
        memcpy(dst, p + done, chunk);
        np_lb_flush(b);
        done += chunk;
    }
    return done;
}

/* Consumer: true if node h is fully read AND the producer has moved past it.
 * Order matters: `next` first. The producer stores a node's final `end`
 * before linking `next` (release), so once `next` is seen the `end` loaded
 * after it is final. Loading `end` first could see an old end, then a new
 * `next`, and free a node that still holds unread bytes. */
static np_node *spent_next(np_node *h)
{
    np_node *next = atomic_load_explicit(&h->next, memory_order_acquire);
    if (next && h->off == atomic_load_explicit(&h->end, memory_order_acquire))
        return next;
    return NULL;
}

/* Consumer: the first node with unread committed bytes, releasing the ones
 * fully read. Only called while len > 0. */
static np_node *front(np_linkbuffer *b)
{
    np_node *h = b->head, *next;
    while ((next = spent_next(h)) != NULL) {
        node_unref(h);
        b->head = h = next;
    }
    NP_ASSERT(h->off < atomic_load(&h->end));
    return h;
}

void np_lb_skip(np_linkbuffer *b, size_t n)
{
    NP_ASSERT(n <= np_lb_len(b));
    size_t left = n;
    while (left) {
        np_node *h = front(b);
        uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
        size_t take = end - h->off;
        if (take > left)
            take = left;
        h->off += (uint32_t)take;
        left -= take;
    }
    atomic_fetch_sub_explicit(&b->len, n, memory_order_release);
    /* Free the head now if it is spent and the producer has moved on. */
    np_node *h = b->head, *next;
    if (h && (next = spent_next(h)) != NULL) {
        node_unref(h);
        b->head = next;
    }
}

size_t np_lb_copy_out(np_linkbuffer *b, char *dst, size_t n)
{
    size_t avail = np_lb_len(b);
    if (n > avail)
        n = avail;
    size_t done = 0;
    np_node *h = n ? front(b) : NULL;
    uint32_t off = h ? h->off : 0;
    while (done < n) {
        uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
        if (off == end) {
            h = atomic_load_explicit(&h->next, memory_order_acquire);
            off = h->off;
            continue;
        }
        size_t take = end - off;
        if (take > n - done)
            take = n - done;
        memcpy(dst + done, h->data + off, take);
        done += take;
        off += (uint32_t)take;
    }
    if (n)
        np_lb_skip(b, n);
    return n;
}

int np_lb_iov(np_linkbuffer *b, struct iovec *iov, int max, size_t *total)
{
    size_t avail = np_lb_len(b), sum = 0;
    int k = 0;
    np_node *h = avail ? front(b) : NULL;
    while (h && k < max && sum < avail) {
        uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
        size_t take = end - h->off;
        if (take > avail - sum)
            take = avail - sum;
        if (take) {
            iov[k].iov_base = h->data + h->off;
            iov[k].iov_len = take;
            k++;
            sum += take;
        }
        h = atomic_load_explicit(&h->next, memory_order_acquire);
    }
    *total = sum;
    return k;
}
