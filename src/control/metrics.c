/* metrics: see metrics.h. */
#include "metrics.h"

#include <stdatomic.h>

#include "fault.h"
#include "runtime.h"
#include "transparent.h"

static void metric_label(struct fl_sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fl_sbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            fl_sbuf_add(b, "\\n", 2);
        else
            fl_sbuf_add(b, s, 1);
    }
}

void fl_metrics_render(struct fl_sbuf *out)
{
    struct fl_policy *p = fl_runtime_policy();
    struct fl_runtime_counters rc;
    struct fl_sbuf b = {0};

    fl_runtime_counters(&rc);

    fl_sbuf_printf(&b,
                   "# HELP faultline_requests_total Requests the proxy decided on.\n"
                   "# TYPE faultline_requests_total counter\nfaultline_requests_total %llu\n",
                   rc.requests_total);
    /* Label values are the policies of the set (namespace/name for a
     * FaultPolicy), their rule names and the fault kinds: bounded by the
     * policies, never by traffic. */
    fl_sbuf_printf(&b, "# HELP faultline_faults_injected_total Faults injected, by policy, rule and kind.\n"
                       "# TYPE faultline_faults_injected_total counter\n");
    for (size_t i = 0; p && i < p->n_rules; i++) {
        struct fl_rule *r = &p->rules[i];
        for (enum fl_fault_kind k = FL_FAULT_DELAY; k < FL_FAULT_KINDS; k++) {
            unsigned long long v = atomic_load(&r->live.injected[k]);
            if (!fl_policy_rule_has_kind(r, k) && v == 0)
                continue;
            fl_sbuf_printf(&b, "faultline_faults_injected_total{policy=\"");
            metric_label(&b, r->policy_id ? r->policy_id : p->name);
            fl_sbuf_printf(&b, "\",rule=\"");
            metric_label(&b, r->name);
            fl_sbuf_printf(&b, "\",fault=\"%s\"} %llu\n", fl_fault_kind_name(k), v);
        }
    }
    fl_sbuf_printf(
        &b,
        "# HELP faultline_faults_overflow_total Faults not injected because "
        "max_active_faults was reached.\n"
        "# TYPE faultline_faults_overflow_total counter\nfaultline_faults_overflow_total "
        "%llu\n",
        rc.faults_overflow_total);
    fl_sbuf_printf(
        &b,
        "# HELP faultline_active_connections Client connections open through the proxy.\n"
        "# TYPE faultline_active_connections gauge\nfaultline_active_connections %llu\n",
        (unsigned long long)rc.active_connections);
    fl_sbuf_printf(&b,
                   "# HELP faultline_active_faults Faults in progress (held delays, pending "
                   "aborts).\n# TYPE faultline_active_faults gauge\nfaultline_active_faults %u\n",
                   rc.active_faults);
    fl_sbuf_printf(&b,
                   "# HELP faultline_halted 1 while injection is halted.\n"
                   "# TYPE faultline_halted gauge\nfaultline_halted %d\n",
                   rc.halted ? 1 : 0);
    fl_sbuf_printf(
        &b,
        "# HELP faultline_fault_log_dropped_total Fault lines dropped by a stalled log.\n"
        "# TYPE faultline_fault_log_dropped_total counter\n"
        "faultline_fault_log_dropped_total %llu\n",
        rc.fault_log_dropped);
    struct fl_transparent_stats tp;
    fl_transparent_stats(&tp);
    if (tp.active) {
        fl_sbuf_printf(
            &b,
            "# HELP faultline_transparent_redirected_total Connections the kernel steered "
            "to the proxy.\n# TYPE faultline_transparent_redirected_total counter\n"
            "faultline_transparent_redirected_total %llu\n"
            "# HELP faultline_transparent_skmsg_redirects_total Messages moved by sk_msg "
            "between app and proxy.\n# TYPE faultline_transparent_skmsg_redirects_total "
            "counter\nfaultline_transparent_skmsg_redirects_total %llu\n"
            "# HELP faultline_transparent_fail_open_total Fail-open events (watchdog, or "
            "no listener in the pod netns).\n# TYPE faultline_transparent_fail_open_total "
            "counter\nfaultline_transparent_fail_open_total{cause=\"watchdog\"} %llu\n"
            "faultline_transparent_fail_open_total{cause=\"no_listener\"} %llu\n"
            "faultline_transparent_fail_open_total{cause=\"ingress_no_listener\"} %llu\n"
            "# HELP faultline_transparent_pods Pod cgroups enrolled.\n"
            "# TYPE faultline_transparent_pods gauge\nfaultline_transparent_pods %u\n"
            "# HELP faultline_transparent_ingress_total Connections arriving at selected pods "
            "that sk_lookup handed to the proxy.\n"
            "# TYPE faultline_transparent_ingress_total counter\n"
            "faultline_transparent_ingress_total %llu\n"
            "# HELP faultline_transparent_ingress_netns Pod netns with the ingress program "
            "attached.\n# TYPE faultline_transparent_ingress_netns gauge\n"
            "faultline_transparent_ingress_netns %u\n"
            "# HELP faultline_transparent_existing_reset_total Established connections "
            "destroyed by existing: reset.\n"
            "# TYPE faultline_transparent_existing_reset_total counter\n"
            "faultline_transparent_existing_reset_total %llu\n",
            (unsigned long long)tp.redirected, (unsigned long long)tp.msg_redirects,
            (unsigned long long)tp.fail_open_events, (unsigned long long)tp.no_listener,
            (unsigned long long)tp.ingress_no_listener, tp.pods, (unsigned long long)tp.ingress,
            tp.ingress_netns, (unsigned long long)tp.existing_reset);
    }
    fl_sbuf_printf(&b,
                   "# HELP faultline_build_info Build information.\n"
                   "# TYPE faultline_build_info gauge\nfaultline_build_info{version=\"" FL_VERSION
                   "\"} 1\n");
    *out = b;
}
