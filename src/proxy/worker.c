#include "worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>


static void hold_fire(uv_poll_t *p, int status, int events);

int fl_worker_init(struct fl_worker *w, uv_loop_t *loop, int index)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    w->index = index;
    fl_faultlog_buf_init(&w->log, loop);
    fl_rng_seed(&w->rng, ((uint64_t)uv_hrtime() << 8) ^ (uint64_t)index);
    /* uv_hrtime() reads CLOCK_MONOTONIC, so deadlines from it arm this directly. */
    w->hold_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->hold_fd < 0)
        return -errno;
    int e = uv_poll_init(loop, &w->hold_poll, w->hold_fd);
    if (e < 0) {
        close(w->hold_fd);
        w->hold_fd = -1;
        return e;
    }
    w->hold_poll.data = w;
    /* Watched for the worker's whole life (starting and stopping it would cost
     * epoll_ctl calls per delay) but unreferenced: it keeps no loop alive. */
    uv_poll_start(&w->hold_poll, UV_READABLE, hold_fire);
    uv_unref((uv_handle_t *)&w->hold_poll);
    return 0;
}

void fl_worker_close_handles(struct fl_worker *w)
{
    if (w->hold_fd >= 0 && !uv_is_closing((uv_handle_t *)&w->hold_poll))
        uv_close((uv_handle_t *)&w->hold_poll, NULL);
}

/* ---- held requests: a binary min-heap by due_ns; idx is the 1-based slot ---- */

static void heap_set(struct fl_worker *w, unsigned i, struct fl_hold *hd)
{
    w->holds[i] = hd;
    hd->idx = i + 1;
}

static void heap_up(struct fl_worker *w, unsigned i)
{
    struct fl_hold *hd = w->holds[i];
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (w->holds[parent]->due_ns <= hd->due_ns)
            break;
        heap_set(w, i, w->holds[parent]);
        i = parent;
    }
    heap_set(w, i, hd);
}

static void heap_down(struct fl_worker *w, unsigned i)
{
    struct fl_hold *hd = w->holds[i];
    for (;;) {
        unsigned l = 2 * i + 1, m = i;
        uint64_t best = hd->due_ns;
        if (l < w->n_holds && w->holds[l]->due_ns < best)
            m = l, best = w->holds[l]->due_ns;
        if (l + 1 < w->n_holds && w->holds[l + 1]->due_ns < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(w, i, w->holds[m]);
        i = m;
    }
    heap_set(w, i, hd);
}

/* Arms the timerfd at the earliest deadline, unless it is armed for that or
 * earlier already: a deadline that went away early leaves the timer as it
 * was, and the spurious wake-up costs less than re-arming each time. */
static void hold_arm(struct fl_worker *w)
{
    if (!w->n_holds)
        return;
    uint64_t due = w->holds[0]->due_ns;
    if (w->hold_armed_ns && w->hold_armed_ns <= due)
        return;
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(due / 1000000000u),
                                          .tv_nsec = (long)(due % 1000000000u)}};
    if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
        its.it_value.tv_nsec = 1; /* zero would disarm */
    timerfd_settime(w->hold_fd, TFD_TIMER_ABSTIME, &its, NULL);
    w->hold_armed_ns = due;
}

int fl_worker_hold(struct fl_worker *w, struct fl_hold *hd, uint64_t due_ns,
                   void (*cb)(struct fl_hold *hd))
{
    if (w->n_holds == w->cap_holds) {
        unsigned ncap = w->cap_holds ? w->cap_holds * 2 : 64;
        struct fl_hold **n = realloc(w->holds, ncap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        w->holds = n;
        w->cap_holds = ncap;
    }
    hd->due_ns = due_ns;
    hd->cb = cb;
    w->holds[w->n_holds++] = hd;
    heap_up(w, w->n_holds - 1);
    if (hd->idx == 1)
        hold_arm(w);
    return 0;
}

void fl_worker_unhold(struct fl_worker *w, struct fl_hold *hd)
{
    if (!hd->idx)
        return;
    unsigned i = hd->idx - 1;
    hd->idx = 0;
    struct fl_hold *last = w->holds[--w->n_holds];
    if (i == w->n_holds)
        return;
    w->holds[i] = last;
    if (i > 0 && w->holds[(i - 1) / 2]->due_ns > last->due_ns)
        heap_up(w, i);
    else
        heap_down(w, i);
}

static void hold_fire(uv_poll_t *p, int status, int events)
{
    struct fl_worker *w = p->data;
    uint64_t expirations;
    (void)status;
    (void)events;
    if (read(w->hold_fd, &expirations, sizeof(expirations)) < 0)
        return; /* EAGAIN: not expired after all */
    w->hold_armed_ns = 0; /* it fired: disarmed */
    uint64_t now = uv_hrtime();
    while (w->n_holds && w->holds[0]->due_ns <= now) {
        struct fl_hold *hd = w->holds[0];
        fl_worker_unhold(w, hd);
        hd->cb(hd); /* may queue or take out holds */
    }
    hold_arm(w);
}

struct fl_policy *fl_worker_set_policy(struct fl_worker *w, struct fl_policy *p)
{
    struct fl_policy *old = w->policy;
    w->policy = fl_policy_ref(p);
    if (p->has_seed)
        fl_rng_seed(&w->rng, p->seed + (uint64_t)w->index * 0x9e3779b97f4a7c15ull);
    return old;
}

void fl_worker_fini(struct fl_worker *w)
{
    if (w->hold_fd >= 0)
        close(w->hold_fd);
    w->hold_fd = -1;
    free(w->holds);
    w->holds = NULL;
    w->n_holds = w->cap_holds = 0;
    fl_chunk_pool_drain(&w->pool);
    fl_slab_drain(&w->slab);
    fl_faultlog_buf_fini(&w->log);
    fl_policy_unref(w->policy);
    w->policy = NULL;
}
