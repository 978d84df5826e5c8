/* metrics: the Prometheus text exposition (version 0.0.4) of the runtime's
 * counters, the policy's per-rule fault counts and transparent mode's
 * figures, served at /metrics. Label values are rule names of the policy in
 * force and the fault kinds: bounded by the policy, never by traffic. */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include "sbuf.h"

/* Fills *out (zeroed by this call) with the exposition; out->oom says it
 * could not be built. The caller frees it with fl_sbuf_free. */
void fl_metrics_render(struct fl_sbuf *out);

#endif
