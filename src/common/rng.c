#include "rng.h"

/* xoshiro256** seeded through splitmix64 (Vigna's recommendation): fast,
 * 256 bits of state, and a per-worker instance needs no lock. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fl_rng_seed(struct fl_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t fl_rng_next(struct fl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t fl_rng_below(struct fl_rng *r, uint64_t n)
{
    /* n == 0 stands for 2^64 (what jitter_ms + 1 wraps to): the full range. */
    if (n == 0)
        return fl_rng_next(r);
    /* Rejection sampling keeps every value equally likely (no modulo bias). */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = fl_rng_next(r);
    } while (x >= limit);
    return x % n;
}
