/* Counts the heap allocations of a process: LD_PRELOAD'd by bench/proxy.py into the agent (no
 * rebuild, nothing of it in the agent's code). malloc, calloc, realloc and the aligned
 * allocators are counted and passed to glibc; a thread writes the count to $MALLOC_COUNT_FILE
 * every 50 ms. Build: cc -O2 -shared -fPIC -o malloc_count.so malloc_count.c -lpthread */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_ulong allocations;

static inline void count(void) { atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed); }

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { count(); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

static void *report(void *path) {
    struct timespec tick = {0, 50 * 1000 * 1000};
    for (;;) {
        FILE *f = fopen((const char *)path, "w");
        if (f) {
            fprintf(f, "%lu\n", atomic_load(&allocations));
            fclose(f);
        }
        nanosleep(&tick, NULL);
    }
    return NULL;
}

__attribute__((constructor)) static void start(void) {
    const char *path = getenv("MALLOC_COUNT_FILE");
    pthread_t t;
    if (path) pthread_create(&t, NULL, report, (void *)path);
}
