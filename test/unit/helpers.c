#include "helpers.h"

#include <errno.h>
#include <string.h>

#include "unit.h"

struct fl_policy *unit_load(const char *yaml)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    int rc = fl_policy_load_buf("unit.yaml", yaml, strlen(yaml), &p, &errs);
    if (rc != 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "# %s\n", errs.msgs[i]);
        UNIT_FAIL("policy did not load (rc %d):\n%s", rc, yaml);
    }
    ASSERT_UEQ(errs.n, 0);
    ASSERT_NOT_NULL(p);
    return p;
}

struct fl_policy_errors unit_load_fail(const char *yaml)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    int rc = fl_policy_load_buf("unit.yaml", yaml, strlen(yaml), &p, &errs);
    if (rc == 0)
        UNIT_FAIL("policy loaded but should not have:\n%s", yaml);
    ASSERT_EQ(rc, -EINVAL);
    ASSERT_NULL(p);
    ASSERT_UGE(errs.n, 1);
    return errs;
}

int unit_errors_contain(const struct fl_policy_errors *errs, const char *needle)
{
    for (size_t i = 0; i < errs->n; i++)
        if (strstr(errs->msgs[i], needle))
            return 1;
    return 0;
}
