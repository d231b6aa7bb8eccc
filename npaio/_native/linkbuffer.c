/* linkbuffer.c -- netpoll's no-copy LinkBuffer: a chain of refcounted nodes.
 *
 * Owns: the node chain of one buffer, and the three kinds of node:
 *   - data nodes: memory of their own (data[], from mcache.c's size classes);
 *   - reference nodes (slice, write_direct's split): point into another
 *     node's memory and hold a reference on that node (`origin`);
 *   - foreign nodes (write_bytes/write_direct of a large Python buffer): point
 *     at memory Python owns; `pin` names the Python object keeping it alive,
 *     handed back through pins.c when the node is freed.
 * Reference and foreign nodes are `readonly`: nothing is ever malloc'ed into
 * them. Node memory is reused without zeroing.
 *
 * Threads: one PRODUCER appends (malloc, malloc_ack, flush, put, link) and one
 * CONSUMER reads (copy_out, iov, skip, span, index, slice_into); they may run
 * at the same time. The hand-over is the atomic `len` (committed bytes) plus
 * each node's atomic `end` and `next`: the producer fills bytes, stores
 * `end`/`next` with release order, then adds to `len`; the consumer loads
 * `len` with acquire order and never reads past it. Who the producer and the
 * consumer are is the caller's business (conn.c says it per buffer). The
 * editing verbs of the Python API (malloc_keep, write_direct, append_lb) walk
 * and rewrite the unflushed part of the chain: they are for a buffer whose
 * producer and consumer are the same thread (npaio.LinkBuffer).
 *
 * A readable node holds bytes [off, end); the producer's region is [.., malloc).
 * A node's `end` may run ahead of `len` (it is set when the next node is
 * linked); `len` alone says what is committed. The consumer frees a node once
 * it has read past its end and the producer has moved on (`next` set), so the
 * tail node is never freed under the producer's feet. A view handed to Python
 * (np_lb_span) takes a reference on the node that owns the memory, so no view
 * ever points at freed or reused memory.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include "internal.h"

#define NP_NODE_MIN 4096

static void node_counted(void)
{
    NP_COUNT(NP_CNT_NODES, 1);
    NP_COUNT(NP_CNT_NODE_ALLOCS, 1);
}

static np_node *node_init(np_node *n, size_t alloc)
{
    atomic_init(&n->next, NULL);
    atomic_init(&n->refs, 1);
    n->alloc = alloc;
    n->off = 0;
    atomic_init(&n->end, 0);
    n->malloc = 0;
    n->readonly = 0;
    n->origin = NULL;
    n->pin = 0;
    node_counted();
    return n;
}

static np_node *node_new(size_t want)
{
    size_t alloc;
    if (want < NP_NODE_MIN - sizeof(np_node))
        want = NP_NODE_MIN - sizeof(np_node);
    if (want > UINT32_MAX - sizeof(np_node))
        return NULL;
    np_node *n = np_mcache_alloc(sizeof(np_node) + want, &alloc);
    if (!n)
        return NULL;
    node_init(n, alloc);
    n->base = n->data;
    n->cap = (uint32_t)(alloc - sizeof(np_node) > UINT32_MAX ? UINT32_MAX
                                                              : alloc - sizeof(np_node));
    return n;
}

/* A header-only node over [p, p+len) that is already written (readonly). */
static np_node *node_over(char *p, size_t len)
{
    np_node *n = malloc(sizeof(np_node));
    if (!n)
        return NULL;
    node_init(n, 0);
    n->base = p;
    n->cap = n->malloc = (uint32_t)len;
    n->readonly = 1;
    return n;
}

/* The node whose memory n's bytes live in (held alive by n). */
static np_node *node_owner(np_node *n)
{
    return n->origin ? n->origin : n;
}

void np_node_unref(np_node *n)
{
    if (atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1)
        return;
    NP_COUNT(NP_CNT_NODES, -1);
    NP_COUNT(NP_CNT_NODE_FREES, 1);
    if (n->origin)
        np_node_unref(n->origin);
    if (n->pin)
        np_pin_release(n->pin);
    if (n->alloc)
        np_mcache_free(n, n->alloc);
    else
        free(n);
}

static void node_ref(np_node *n)
{
    atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
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
        np_node_unref(n);
        n = next;
    }
    b->head = b->tail = NULL;
    b->unflushed = 0;
    atomic_store(&b->len, 0);
}

np_linkbuffer *np_lb_new(void)
{
    np_linkbuffer *b = malloc(sizeof(*b));
    if (b)
        np_lb_init(b);
    return b;
}

void np_lb_free(np_linkbuffer *b)
{
    if (!b)
        return;
    np_lb_destroy(b);
    free(b);
}

size_t np_lb_len(np_linkbuffer *b)
{
    return atomic_load_explicit(&b->len, memory_order_acquire);
}

size_t np_lb_malloc_len(np_linkbuffer *b)
{
    return b->unflushed;
}

/* Producer: make nn the new tail (closing the old tail's end). */
static void link_tail(np_linkbuffer *b, np_node *nn)
{
    np_node *t = b->tail;
    if (t) {
        /* Close the old tail: its end may run ahead of len until flush. */
        atomic_store_explicit(&t->end, t->malloc, memory_order_release);
        atomic_store_explicit(&t->next, nn, memory_order_release);
    } else {
        b->head = nn;   /* empty buffer: consumer sees head only after len > 0 */
    }
    b->tail = nn;
}

/* Producer: reserve n writable bytes at the tail; NULL when out of memory. */
char *np_lb_malloc(np_linkbuffer *b, size_t n)
{
    np_node *t = b->tail;
    if (t && !t->readonly && t->cap - t->malloc >= n) {
        char *p = t->base + t->malloc;
        t->malloc += (uint32_t)n;
        b->unflushed += n;
        return p;
    }
    np_node *nn = node_new(n);
    if (!nn)
        return NULL;
    nn->malloc = (uint32_t)n;
    b->unflushed += n;
    link_tail(b, nn);
    return nn->base;
}

/* Producer: malloc(n) for Python: the writable bytes as a span holding a
 * reference on their node. Returns 1, or 0 when out of memory. */
int np_lb_malloc_span(np_linkbuffer *b, size_t n, np_span *out)
{
    if (n > UINT32_MAX - sizeof(np_node))
        return 0;
    char *p = np_lb_malloc(b, n);
    if (!p)
        return 0;
    out->ptr = p;
    out->len = n;
    out->owner = b->tail;
    node_ref(out->owner);
    return 1;
}

/* Producer: of the last malloc(n) give back the last `unused` bytes (the
 * poller's read path: it malloc'ed read_size and the read returned less). */
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

/* Producer: copy n bytes in, unflushed. Returns bytes copied (n, or less when
 * memory ran out). */
size_t np_lb_put(np_linkbuffer *b, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done;
        np_node *t = b->tail;
        size_t room = t && !t->readonly ? t->cap - t->malloc : 0;
        if (room == 0)
            room = chunk > (1u << 20) ? (1u << 20) : chunk;
        if (chunk > room)
            chunk = room;
        char *dst = np_lb_malloc(b, chunk);
        if (!dst)
            break;
        memcpy(dst, p + done, chunk);
        done += chunk;
    }
    return done;
}

/* Producer: copy n bytes in and publish them. */
size_t np_lb_write(np_linkbuffer *b, const char *p, size_t n)
{
    size_t done = np_lb_put(b, p, n);
    np_lb_flush(b);
    return done;
}

/* Producer: link n bytes of foreign memory (kept alive by Python's `pin`)
 * without copying, unflushed. Returns 0 or -1 (out of memory). */
int np_lb_link(np_linkbuffer *b, const char *p, size_t n, uint64_t pin)
{
    if (!n)
        return 0;
    if (n > UINT32_MAX)
        return -1;
    np_node *nn = node_over((char *)p, n);
    if (!nn)
        return -1;
    nn->pin = pin;
    b->unflushed += n;
    link_tail(b, nn);
    return 0;
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
        np_node_unref(h);
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
        np_node_unref(h);
        b->head = next;
    }
}

/* Consumer: copy up to n committed bytes out without consuming them. */
size_t np_lb_peek_copy(np_linkbuffer *b, char *dst, size_t n)
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
        memcpy(dst + done, h->base + off, take);
        done += take;
        off += (uint32_t)take;
    }
    return n;
}

size_t np_lb_copy_out(np_linkbuffer *b, char *dst, size_t n)
{
    n = np_lb_peek_copy(b, dst, n);
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
            iov[k].iov_base = h->base + h->off;
            iov[k].iov_len = take;
            k++;
            sum += take;
        }
        h = atomic_load_explicit(&h->next, memory_order_acquire);
    }
    *total = sum;
    return k;
}

/* Consumer: if the first n (> 0, <= len) committed bytes are contiguous,
 * describe them in *out with a reference on the node owning the memory (the
 * caller drops it with np_node_unref) and return 1; else return 0. */
int np_lb_span(np_linkbuffer *b, size_t n, np_span *out)
{
    if (!n || n > np_lb_len(b))
        return 0;
    np_node *h = front(b);
    uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
    if (end - h->off < n)
        return 0;
    out->ptr = h->base + h->off;
    out->len = n;
    out->owner = node_owner(h);
    node_ref(out->owner);
    return 1;
}

/* Consumer: does the delimiter start at byte `off` of node h? (It may run
 * on into the following nodes; the caller checked it ends within len.) */
static int match_at(np_node *h, uint32_t off, const char *delim, size_t dlen)
{
    size_t i = 0;
    while (i < dlen) {
        uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
        if (off == end) {
            h = atomic_load_explicit(&h->next, memory_order_acquire);
            off = h->off;
            continue;
        }
        if (h->base[off] != delim[i])
            return 0;
        off++;
        i++;
    }
    return 1;
}

/* Consumer: offset of the first occurrence of delim (dlen >= 1) at or after
 * `start` in the committed bytes, or -1. Inside a node memmem finds it; a
 * delimiter that straddles two nodes is checked byte by byte at each of the
 * last dlen-1 positions of a node. */
int64_t np_lb_index(np_linkbuffer *b, const char *delim, size_t dlen, size_t start)
{
    size_t avail = np_lb_len(b);
    if (!dlen || avail < dlen || start > avail - dlen)
        return -1;
    size_t last = avail - dlen;     /* the last position a match may start at */
    np_node *h = front(b);
    uint32_t off = h->off;
    size_t pos = 0;                 /* position of h->base[off] */
    while (pos <= last) {
        uint32_t end = atomic_load_explicit(&h->end, memory_order_acquire);
        if (off == end) {
            h = atomic_load_explicit(&h->next, memory_order_acquire);
            off = h->off;
            continue;
        }
        size_t take = end - off;
        if (take > avail - pos)
            take = avail - pos;
        if (pos + take > start) {
            size_t from = start > pos ? start - pos : 0;
            const char *p = h->base + off;
            const char *q = memmem(p + from, take - from, delim, dlen);
            if (q)
                return (int64_t)(pos + (size_t)(q - p));
            /* Straddling candidates: the last dlen-1 start positions. */
            size_t s = take >= dlen ? take - dlen + 1 : 0;
            if (s < from)
                s = from;
            for (; s < take && pos + s <= last; s++)
                if (match_at(h, off + (uint32_t)s, delim, dlen))
                    return (int64_t)(pos + s);
        }
        pos += take;
        off += (uint32_t)take;
    }
    return -1;
}

/* Consumer of src, producer of dst: move the first n committed bytes of src
 * to dst's tail, committed, without copying (reference nodes), then skip them
 * in src. Returns 0, or -1 when out of memory (nothing moved). */
int np_lb_slice_into(np_linkbuffer *src, np_linkbuffer *dst, size_t n)
{
    if (n > np_lb_len(src))
        return -1;
    if (!n)
        return 0;
    /* Build the chain aside first so that a failure leaves both untouched. */
    np_node *first = NULL, *last = NULL;
    np_node *h = front(src);
    uint32_t off = h->off;
    size_t done = 0;
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
        np_node *r = node_over(h->base + off, take);
        if (!r) {
            while (first) {
                np_node *next = atomic_load_explicit(&first->next, memory_order_relaxed);
                np_node_unref(first);
                first = next;
            }
            return -1;
        }
        r->origin = node_owner(h);
        node_ref(r->origin);
        atomic_store_explicit(&r->end, r->malloc, memory_order_relaxed);
        if (last)
            atomic_store_explicit(&last->next, r, memory_order_relaxed);
        else
            first = r;
        last = r;
        done += take;
        off += (uint32_t)take;
    }
    /* Splice first..last after dst's tail as unflushed bytes, then publish. */
    np_node *t = dst->tail;
    if (t) {
        atomic_store_explicit(&t->end, t->malloc, memory_order_release);
        atomic_store_explicit(&t->next, first, memory_order_release);
    } else {
        dst->head = first;
    }
    dst->tail = last;
    dst->unflushed += n;
    np_lb_flush(dst);
    np_lb_skip(src, n);
    return 0;
}

/* ---- editing the unflushed region (producer == consumer) ---------------- */

/* The node and offset where the unflushed region starts: walk past the `len`
 * committed bytes from the head. NULL when the buffer has no node. */
static np_node *flush_point(np_linkbuffer *b, uint32_t *at)
{
    np_node *h = b->head;
    size_t left = np_lb_len(b);
    if (!h)
        return NULL;
    uint32_t off = h->off;
    for (;;) {
        size_t here = h->malloc - off;
        np_node *next = atomic_load_explicit(&h->next, memory_order_relaxed);
        if (left < here || (left == here && !next)) {
            *at = off + (uint32_t)left;
            return h;
        }
        left -= here;
        if (!next) {                /* cannot happen: len counts malloc'ed bytes */
            *at = h->malloc;
            return h;
        }
        h = next;
        off = h->off;
    }
}

/* Locate unflushed byte k (0 <= k <= unflushed): the node and offset at
 * which it is (or, for k == unflushed, just after the last one). */
static np_node *unflushed_at(np_linkbuffer *b, size_t k, uint32_t *at)
{
    uint32_t off;
    np_node *h = flush_point(b, &off);
    if (!h)
        return NULL;
    for (;;) {
        size_t here = h->malloc - off;
        np_node *next = atomic_load_explicit(&h->next, memory_order_relaxed);
        if (k < here || !next) {
            *at = off + (uint32_t)(k < here ? k : here);
            return h;
        }
        k -= here;
        h = next;
        off = h->off;
    }
}

/* netpoll MallocAck(n): keep the first n unflushed bytes, discard the rest. */
int np_lb_malloc_keep(np_linkbuffer *b, size_t n)
{
    if (n > b->unflushed)
        return -1;
    if (n == b->unflushed)
        return 0;
    uint32_t at;
    np_node *x = unflushed_at(b, n, &at);
    NP_ASSERT(x);
    np_node *rest = atomic_load_explicit(&x->next, memory_order_relaxed);
    x->malloc = at;
    if (atomic_load(&x->end) > at)
        atomic_store(&x->end, at);
    atomic_store(&x->next, NULL);
    if (x->readonly)
        x->cap = at;
    b->tail = x;
    while (rest) {
        np_node *next = atomic_load_explicit(&rest->next, memory_order_relaxed);
        np_node_unref(rest);
        rest = next;
    }
    b->unflushed = n;
    return 0;
}

/* netpoll WriteDirect(p, remain): insert p before the last `remain` unflushed
 * bytes. pin != 0 links p (foreign memory); pin == 0 copies it into a node of
 * its own. Returns 0, or -1 (remain > unflushed, or out of memory). */
int np_lb_write_direct(np_linkbuffer *b, const char *p, size_t n, uint64_t pin,
                       size_t remain)
{
    if (remain > b->unflushed || n > UINT32_MAX)
        return -1;
    if (!n)
        return 0;
    np_node *d;
    if (pin) {
        d = node_over((char *)p, n);
        if (d)
            d->pin = pin;
    } else {
        d = node_new(n);
        if (d) {
            memcpy(d->base, p, n);
            d->malloc = (uint32_t)n;
            d->readonly = 1;
        }
    }
    if (!d)
        return -1;
    if (remain == 0) {
        b->unflushed += n;
        link_tail(b, d);
        return 0;
    }
    uint32_t at;
    np_node *x = unflushed_at(b, b->unflushed - remain, &at);
    NP_ASSERT(x);
    np_node *after = atomic_load_explicit(&x->next, memory_order_relaxed);
    np_node *first_after_d = after;
    np_node *split = NULL;
    if (at < x->malloc) {
        /* Split x at `at`: its tail bytes move to a reference node after d. */
        split = node_over(x->base + at, x->malloc - at);
        if (!split) {
            np_node_unref(d);
            return -1;
        }
        split->origin = node_owner(x);
        node_ref(split->origin);
        atomic_store_explicit(&split->next, after, memory_order_relaxed);
        first_after_d = split;
        x->malloc = at;
        x->cap = at;            /* its memory past `at` belongs to split now */
    }
    /* Nodes in the middle of a chain carry their final end (the invariant
     * link_tail keeps); a new tail gets its end at flush. */
    atomic_store_explicit(&d->end, d->malloc, memory_order_relaxed);
    if (split)
        atomic_store_explicit(&split->end, split->malloc, memory_order_relaxed);
    atomic_store_explicit(&d->next, first_after_d, memory_order_relaxed);
    atomic_store_explicit(&x->end, x->malloc, memory_order_release);
    atomic_store_explicit(&x->next, d, memory_order_release);
    if (!first_after_d)
        b->tail = d;
    else if (b->tail == x)
        b->tail = split;
    b->unflushed += n;
    return 0;
}

/* netpoll Append(w): move all of w's bytes, committed and malloc'ed, to b's
 * tail as unflushed bytes, without copying. w is left empty. */
void np_lb_append_lb(np_linkbuffer *b, np_linkbuffer *w)
{
    np_lb_flush(w);
    size_t n = np_lb_len(w);
    if (!n) {
        np_lb_destroy(w);
        return;
    }
    np_node *first = front(w);
    /* Free the spent nodes before `first` (front() released them already). */
    np_node *t = b->tail;
    if (t) {
        atomic_store_explicit(&t->end, t->malloc, memory_order_release);
        atomic_store_explicit(&t->next, first, memory_order_release);
    } else {
        b->head = first;
    }
    b->tail = w->tail;
    b->unflushed += n;
    w->head = w->tail = NULL;
    w->unflushed = 0;
    atomic_store(&w->len, 0);
}
