/* slab: the slab's size classes, alignment, reuse, the bound on cached blocks
 * and realloc keeping the bytes. */
#include <stdint.h>
#include <string.h>

#include "slab.h"
#include "unit.h"

TEST(slab_classes_alignment_and_reuse)
{
    struct fl_slab s = {0};
    size_t sizes[] = {0, 1, 32, 33, 200, 2048, 2049, 100000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        unsigned char *p = fl_slab_alloc(&s, sizes[i]);
        ASSERT(p != NULL);
        ASSERT_UEQ((uintptr_t)p % 16, 0);
        memset(p, 0xab, sizes[i]); /* ASan: the whole request is usable */
        fl_slab_free(&s, p);
        /* A block of the same class comes back; a large one is not kept. */
        void *q = fl_slab_alloc(&s, sizes[i]);
        if (sizes[i] <= 2048)
            ASSERT(q == p);
        fl_slab_free(&s, q);
    }
    fl_slab_free(&s, NULL);
    fl_slab_drain(&s);
    for (unsigned k = 0; k < FL_SLAB_CLASSES; k++)
        ASSERT(s.free[k] == NULL && s.n_free[k] == 0);
}

TEST(slab_free_lists_are_bounded)
{
    struct fl_slab s = {0};
    enum { N = 5000 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        ASSERT((p[i] = fl_slab_alloc(&s, 24)) != NULL);
    for (int i = 0; i < N; i++)
        fl_slab_free(&s, p[i]);
    ASSERT_UEQ(s.n_free[0], FL_SLAB_CLASS_BYTES / 32);
    fl_slab_drain(&s);
}

TEST(slab_realloc_keeps_bytes)
{
    struct fl_slab s = {0};
    char *p = fl_slab_realloc(&s, NULL, 10);
    memcpy(p, "0123456789", 10);
    ASSERT(fl_slab_realloc(&s, p, 20) == p); /* still fits its 32-byte class */
    p = fl_slab_realloc(&s, p, 5000);
    ASSERT(memcmp(p, "0123456789", 10) == 0);
    memset(p, 0, 5000);
    fl_slab_free(&s, p);
    fl_slab_drain(&s);
}
