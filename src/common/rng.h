/* rng: the random numbers that decide which requests are faulted. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stdint.h>

/* Per-worker random state (xoshiro256**). Seeded from the policy seed and the
 * worker index so a seeded run with one worker is reproducible. */
struct fl_rng {
    uint64_t s[4];
};

void fl_rng_seed(struct fl_rng *r, uint64_t seed);
uint64_t fl_rng_next(struct fl_rng *r);
/* Uniform in [0, n), without modulo bias; n == 0 means the full 64-bit range. */
uint64_t fl_rng_below(struct fl_rng *r, uint64_t n);

#endif
