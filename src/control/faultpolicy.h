/* faultpolicy: the cluster's FaultPolicy resources in the daemon's set.
 *
 * Every view of the watch carries the FaultPolicies of every namespace.
 * Each new spec (a resource, or a new metadata.generation) is loaded with
 * the loader's resource rules; a valid one replaces the policy of that
 * resource at once, an invalid one changes nothing and sets Invalid with
 * the loader's message. A deleted resource leaves the set at once. The set
 * (oldest first) goes to the runtime, which composes it with the file's
 * policy. TTLs count from each resource's creationTimestamp.
 *
 * Status: this node's entry of status.nodes[] (pods it selects for the
 * policy, faults injected per rule, when), observedGeneration, the
 * conditions and the totals, by server-side apply on the status subresource
 * with fieldManager faultline-NODE (forced: every node writes the same
 * conditions, and the totals are the sum over the entries it sees). At most
 * one write per 5 s per policy, none when nothing changed; writes run on the
 * thread pool. Main loop's thread.
 */
#ifndef FL_FAULTPOLICY_H
#define FL_FAULTPOLICY_H

#include <jansson.h>
#include <uv.h>

#include "compiler.h"
#include "config.h"
#include "view.h"

#define FL_FP_STATUS_INTERVAL_MS 5000

/* Starts the status timer; cfg is borrowed until fl_faultpolicies_stop. */
int fl_faultpolicies_start(uv_loop_t *loop, const struct fl_kube_config *cfg,
                           const char *node) FL_WUR;

/* A new view: the resources it lists become the set. */
void fl_faultpolicies_view(const struct fl_kube_view *v);

/* The cluster halt as known (for the Halted condition). */
void fl_faultpolicies_halt(int halted, const char *reason);

/* [{namespace, name, generation, applied_generation, state, message}] for
 * /v1/status. */
json_t *fl_faultpolicies_json(void);

/* Stops the timer; a write in flight finishes on the thread pool (the loop
 * runs once more), after which cfg is no longer used. */
void fl_faultpolicies_stop(void);

#endif
