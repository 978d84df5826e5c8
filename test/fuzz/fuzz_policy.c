/* libFuzzer target: the policy loader must reject any input with errors, never
 * crash or leak. Build and run with test/fuzz/run.sh. */
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fl_policy *p = NULL;
    struct fl_policy_errors errs = {0};
    if (fl_policy_load_buf("fuzz.yaml", (const char *)data, size, &p, &errs) == 0)
        fl_policy_unref(p);
    fl_policy_errors_free(&errs);
    return 0;
}
