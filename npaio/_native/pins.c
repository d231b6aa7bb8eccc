/* pins.c -- hand-back of Python objects whose memory a foreign node used.
 *
 * Owns: the process-wide list of released pin ids.
 *
 * LinkBuffer.write_bytes()/write_direct() link a large Python buffer into a
 * node chain without copying it (a foreign node, see linkbuffer.c). Python
 * keeps the object alive in a dict under a pin id; the node carries the id.
 * Whatever thread frees the node (the loop, or a poller that sent the bytes)
 * calls np_pin_release(), which never touches Python: it appends the id here.
 * The loop thread takes the ids back with np_pins_collect() and drops the
 * objects. An object is thus kept alive at least as long as any node or view
 * uses its memory, and at most until the next collect.
 *
 * Threads: np_pin_release from any thread; np_pins_collect from the Python
 * thread (any thread is safe; one mutex guards the list).
 */
#include <stdlib.h>
#include <pthread.h>
#include "internal.h"

static pthread_mutex_t pins_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *pins;
static size_t npins, pins_cap;
static _Atomic size_t pins_pending;

void np_pin_release(uint64_t pin)
{
    pthread_mutex_lock(&pins_lock);
    if (npins == pins_cap) {
        size_t cap = pins_cap ? pins_cap * 2 : 64;
        uint64_t *p = realloc(pins, cap * sizeof(*p));
        if (!p) {
            /* Out of memory: the object stays pinned (a leak, never a
             * dangling pointer). */
            pthread_mutex_unlock(&pins_lock);
            return;
        }
        pins = p;
        pins_cap = cap;
    }
    pins[npins++] = pin;
    atomic_store_explicit(&pins_pending, npins, memory_order_relaxed);
    pthread_mutex_unlock(&pins_lock);
}

size_t np_pins_pending(void)
{
    return atomic_load_explicit(&pins_pending, memory_order_relaxed);
}

/* Move up to `max` released ids to out; returns how many. */
int np_pins_collect(uint64_t *out, int max)
{
    int k = 0;
    pthread_mutex_lock(&pins_lock);
    while (npins && k < max)
        out[k++] = pins[--npins];
    atomic_store_explicit(&pins_pending, npins, memory_order_relaxed);
    pthread_mutex_unlock(&pins_lock);
    return k;
}

static void atfork_prepare(void) { pthread_mutex_lock(&pins_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&pins_lock); }
static void atfork_child(void) { pthread_mutex_init(&pins_lock, NULL); }

__attribute__((constructor)) static void pins_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
