/* unit: a tiny test framework for fl_unit.
 *
 * TEST(name) { ... } defines and registers a case (a constructor adds it to the
 * runner's list, so a new test needs no list to edit). main.c runs each case in
 * a forked child: a failed ASSERT prints file:line with both sides and exits the
 * child with status 1, a crash is caught as a signal, and one case's globals
 * never leak into the next.
 */
#ifndef FL_UNIT_H
#define FL_UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*fl_unit_fn)(void);

void fl_unit_register(const char *name, const char *file, fl_unit_fn fn);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                                 \
    {                                                                                              \
        fl_unit_register(#name, __FILE__, test_##name);                                            \
    }                                                                                              \
    static void test_##name(void)

#define UNIT_FAIL(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        fflush(NULL);                                                                              \
        exit(1);                                                                                   \
    } while (0)

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            UNIT_FAIL("assertion failed: %s", #cond);                                              \
    } while (0)

/* Signed and unsigned comparisons print both sides with their expressions. */
#define UNIT_CMP_I(a, op, b)                                                                       \
    do {                                                                                           \
        intmax_t ua_ = (intmax_t)(a), ub_ = (intmax_t)(b);                                         \
        if (!(ua_ op ub_))                                                                         \
            UNIT_FAIL("%s %s %s: %jd vs %jd", #a, #op, #b, ua_, ub_);                              \
    } while (0)
#define UNIT_CMP_U(a, op, b)                                                                       \
    do {                                                                                           \
        uintmax_t ua_ = (uintmax_t)(a), ub_ = (uintmax_t)(b);                                      \
        if (!(ua_ op ub_))                                                                         \
            UNIT_FAIL("%s %s %s: %ju vs %ju", #a, #op, #b, ua_, ub_);                              \
    } while (0)

#define ASSERT_EQ(a, b) UNIT_CMP_I(a, ==, b)
#define ASSERT_NE(a, b) UNIT_CMP_I(a, !=, b)
#define ASSERT_LT(a, b) UNIT_CMP_I(a, <, b)
#define ASSERT_LE(a, b) UNIT_CMP_I(a, <=, b)
#define ASSERT_GT(a, b) UNIT_CMP_I(a, >, b)
#define ASSERT_GE(a, b) UNIT_CMP_I(a, >=, b)
#define ASSERT_UEQ(a, b) UNIT_CMP_U(a, ==, b)
#define ASSERT_ULE(a, b) UNIT_CMP_U(a, <=, b)
#define ASSERT_ULT(a, b) UNIT_CMP_U(a, <, b)
#define ASSERT_UGE(a, b) UNIT_CMP_U(a, >=, b)

#define ASSERT_NULL(p)                                                                             \
    do {                                                                                           \
        const void *up_ = (const void *)(p);                                                       \
        if (up_)                                                                                   \
            UNIT_FAIL("%s is %p, expected NULL", #p, up_);                                         \
    } while (0)
#define ASSERT_NOT_NULL(p)                                                                         \
    do {                                                                                           \
        if (!(p))                                                                                  \
            UNIT_FAIL("%s is NULL", #p);                                                           \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *sa_ = (a), *sb_ = (b);                                                         \
        if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                                                 \
            UNIT_FAIL("%s == %s: \"%s\" vs \"%s\"", #a, #b, sa_ ? sa_ : "(null)",                  \
                      sb_ ? sb_ : "(null)");                                                       \
    } while (0)

#define ASSERT_CONTAINS(hay, needle)                                                               \
    do {                                                                                           \
        const char *sh_ = (hay), *sn_ = (needle);                                                  \
        if (!sh_ || !strstr(sh_, sn_))                                                             \
            UNIT_FAIL("%s does not contain \"%s\": \"%s\"", #hay, sn_, sh_ ? sh_ : "(null)");      \
    } while (0)

#endif
