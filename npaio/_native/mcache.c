/* mcache.c -- power-of-two size classes for LinkBuffer nodes (netpoll's mcache).
 *
 * Owns: the per-class free lists and the process-wide live counters.
 * Any thread may call np_mcache_alloc/np_mcache_free; each class has its own
 * mutex (uncontended in the common case: one thread allocates a class at a time).
 * Memory is reused without zeroing. A class keeps at most NP_MC_KEEP blocks;
 * beyond that blocks go back to malloc, so an idle process does not hold a
 * burst's peak forever. Blocks above the largest class go straight to malloc.
 */
#include <stdlib.h>
#include "internal.h"

#define NP_MC_MIN_SHIFT 10          /* 1 KiB */
#define NP_MC_MAX_SHIFT 22          /* 4 MiB */
#define NP_MC_CLASSES (NP_MC_MAX_SHIFT - NP_MC_MIN_SHIFT + 1)
#define NP_MC_KEEP 64

_Atomic int64_t np_counters[NP_GLOBAL_COUNTERS];

typedef struct np_mc_block { struct np_mc_block *next; } np_mc_block;

static struct {
    pthread_mutex_t lock;
    np_mc_block *free;
    int count;
} classes[NP_MC_CLASSES] = {
#define C0 { PTHREAD_MUTEX_INITIALIZER, NULL, 0 }
    C0, C0, C0, C0, C0, C0, C0, C0, C0, C0, C0, C0, C0
#undef C0
};

static int class_of(size_t size)
{
    int shift = NP_MC_MIN_SHIFT;
    while (((size_t)1 << shift) < size)
        shift++;
    return shift - NP_MC_MIN_SHIFT;
}

void *np_mcache_alloc(size_t size, size_t *cap)
{
    void *p;
    if (size > ((size_t)1 << NP_MC_MAX_SHIFT)) {
        *cap = size;
        p = malloc(size);
    } else {
        int k = class_of(size);
        *cap = (size_t)1 << (k + NP_MC_MIN_SHIFT);
        pthread_mutex_lock(&classes[k].lock);
        p = classes[k].free;
        if (p) {
            classes[k].free = classes[k].free->next;
            classes[k].count--;
        }
        pthread_mutex_unlock(&classes[k].lock);
        if (!p)
            p = malloc(*cap);
    }
    if (p) {
        NP_COUNT(NP_CNT_NODE_BYTES, (int64_t)*cap);
    }
    return p;
}

void np_mcache_free(void *p, size_t cap)
{
    NP_COUNT(NP_CNT_NODE_BYTES, -(int64_t)cap);
    if (cap <= ((size_t)1 << NP_MC_MAX_SHIFT)) {
        int k = class_of(cap);
        NP_ASSERT(((size_t)1 << (k + NP_MC_MIN_SHIFT)) == cap);
        pthread_mutex_lock(&classes[k].lock);
        if (classes[k].count < NP_MC_KEEP) {
            np_mc_block *b = p;
            b->next = classes[k].free;
            classes[k].free = b;
            classes[k].count++;
            p = NULL;
        }
        pthread_mutex_unlock(&classes[k].lock);
    }
    free(p);
}

void np_native_counters(uint64_t *out)
{
    for (int i = 0; i < NP_GLOBAL_COUNTERS; i++)
        out[i] = (uint64_t)atomic_load(&np_counters[i]);
}

static void atfork_prepare(void)
{
    for (int k = 0; k < NP_MC_CLASSES; k++)
        pthread_mutex_lock(&classes[k].lock);
}

static void atfork_parent(void)
{
    for (int k = NP_MC_CLASSES - 1; k >= 0; k--)
        pthread_mutex_unlock(&classes[k].lock);
}

static void atfork_child(void)
{
    for (int k = 0; k < NP_MC_CLASSES; k++)
        pthread_mutex_init(&classes[k].lock, NULL);
}

__attribute__((constructor)) static void mcache_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
